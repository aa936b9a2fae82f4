"""Lists a gRPC server's services through reflection v1alpha, as Python's grpcio-reflection does.

A third-party client for tests/tests/cluster_api.rs: grpcio-reflection speaks only v1alpha.
Usage: reflection_list.py HOST:PORT CREDENTIALS_TOML -- connects with mutual TLS as the
credentials file (a server's admin.toml) says, prints one service name a line; exits 1 on an
RPC error.
"""

import sys
import tomllib

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def main() -> int:
    address, credentials_file = sys.argv[1], sys.argv[2]
    with open(credentials_file, "rb") as f:
        credentials = tomllib.load(f)
    tls = grpc.ssl_channel_credentials(
        root_certificates=credentials["ca"].encode(),
        private_key=credentials["key"].encode(),
        certificate_chain=credentials["certificate"].encode(),
    )
    with grpc.secure_channel(address, tls) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        try:
            for answer in stub.ServerReflectionInfo(iter([request]), timeout=10):
                for service in answer.list_services_response.service:
                    print(service.name)
        except grpc.RpcError as e:
            print(f"reflection v1alpha: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
