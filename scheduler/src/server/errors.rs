//! How failures become gRPC statuses, so clients (and `sched`'s exit codes) can tell a rejected
//! request (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION: fix the request) from an
//! unreachable cluster (UNAVAILABLE: retry, maybe elsewhere) and from a write whose outcome is
//! unknown (ABORTED: it may have been applied).

use tonic::Status;

use crate::raft::ConsensusError;
use crate::spec::FieldError;
use crate::state::{Rejection, RejectionKind};

/// UNAVAILABLE when the request never reached the log (safe to retry anywhere); ABORTED when
/// it may have been applied (check before retrying a non-idempotent request).
pub fn consensus(e: ConsensusError) -> Status {
    match e {
        ConsensusError::OutcomeUnknown | ConsensusError::NotCommitted(_) => Status::aborted(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

pub fn rejection(r: Rejection) -> Status {
    match r.kind {
        RejectionKind::NotFound => Status::not_found(r.message),
        RejectionKind::Invalid => Status::invalid_argument(r.message),
        RejectionKind::Conflict => Status::failed_precondition(r.message),
    }
}

/// All of a spec's problems in one INVALID_ARGUMENT, one per line.
pub fn invalid_spec(errors: Vec<FieldError>) -> Status {
    let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
    Status::invalid_argument(format!("the service spec is not valid:\n{}", lines.join("\n")))
}

pub fn unexpected(what: &str) -> Status {
    Status::internal(format!("unexpected answer from the state machine to {what}"))
}
