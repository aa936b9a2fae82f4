#!/usr/bin/env bash
# Builds the quotes example image without docker and pushes it to a registry.
#
#   scripts/build-quotes-image.sh REGISTRY/REPO:TAG      e.g. 127.0.0.1:5000/quotes:1.0
#
# The image is busybox-static (every applet linked to /bin/busybox), examples/quotes/quote.cgi as
# /www/cgi-bin/index.cgi, quotes.txt, and a static /www/health. Its default command is
# `httpd -f -p 8080 -h /www`, and its working directory is /www, so the service file's shorter
# `/bin/httpd -f -p 8080` serves the same files. Built with umoci (layout, layer, config) and
# pushed with skopeo; needs root (umoci unpack/repack keep file owners) and the Debian packages
# umoci, skopeo and busybox-static. Loopback registries are spoken to over plain HTTP, others
# over HTTPS unless INSECURE=1.
set -euo pipefail
if [ $# -ne 1 ] || [[ "$1" != */*:* ]]; then
  echo "usage: $0 REGISTRY/REPO:TAG   (e.g. 127.0.0.1:5000/quotes:1.0)" >&2
  exit 1
fi
dest=$1
example="$(cd "$(dirname "$0")/.." && pwd)/examples/quotes"
for tool in umoci skopeo busybox; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is missing: apt-get install umoci skopeo busybox-static" >&2; exit 1; }
done
busybox=$(command -v busybox)
file -L "$busybox" 2>/dev/null | grep -q 'dynamically linked' && { echo "$0: $busybox is not static: apt-get install busybox-static" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/quotes-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
umoci init --layout oci
umoci new --image oci:quotes
umoci unpack --image oci:quotes bundle >/dev/null
rootfs=bundle/rootfs
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/www/cgi-bin"
chmod 1777 "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
echo 'root:x:0:' > "$rootfs/etc/group"
install -m 0755 "$example/quote.cgi" "$rootfs/www/cgi-bin/index.cgi"
install -m 0644 "$example/quotes.txt" "$rootfs/www/quotes.txt"
echo ok > "$rootfs/www/health"
umoci repack --image oci:quotes bundle
umoci config --image oci:quotes --os linux --architecture "$(dpkg --print-architecture 2>/dev/null || echo amd64)" \
  --config.env PATH=/bin --config.workingdir /www --config.exposedports 8080/tcp \
  --config.cmd /bin/httpd --config.cmd -f --config.cmd -p --config.cmd 8080 --config.cmd -h --config.cmd /www
umoci gc --layout oci

registry=${dest%%/*}
case "$registry" in
  127.*|localhost|localhost:*|\[::1\]*) tls=false ;;
  *) [ "${INSECURE:-0}" = 1 ] && tls=false || tls=true ;;
esac
skopeo copy -q --dest-tls-verify="$tls" oci:oci:quotes "docker://$dest"
echo "pushed $dest"
