#!/usr/bin/env bash
# Every test, from a fresh clone: installs what the tests need that npm cannot (Debian's chromium for
# the report test), installs npm dependencies from the lock file, builds the real control plane when
# Go is present (cached outside the repo; a warm run is a no-op), then runs lint, typecheck and tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages the tests use: chromium (report tests, via playwright-core), python3-grpcio (a
# Python client through the sidecar proxy) and nghttp2-proxy (the proxy's nghttpx data plane). Installed only when missing, and only as root.
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
/usr/bin/python3 -c 'import grpc' 2>/dev/null || need+=(python3-grpcio)
[ -x /usr/sbin/nghttpx ] || need+=(nghttp2-proxy)
if [ "${#need[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "test-all: installing Debian packages: ${need[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null) ||
    echo "test-all: could not install ${need[*]}; the tests that need them will say so"
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

if command -v go >/dev/null && [ -x scripts/build-control-plane.sh ]; then
  start=$(date +%s)
  if nice -n 5 scripts/build-control-plane.sh; then
    export GRPC_KUBE_REAL=1
  else
    echo "test-all: the real control plane could not be built; its tests will fail" >&2
    export GRPC_KUBE_REAL=1
  fi
  echo "test-all: control plane ready in $(( $(date +%s) - start )) s"
fi

npm test
