#!/usr/bin/env bash
# Every test, from a fresh clone: installs what the tests need that npm cannot (Debian packages, by
# scripts/install-deps.sh), installs npm dependencies from the lock file, builds the real control plane when
# Go is present (cached outside the repo; a warm run is a no-op), then runs lint, typecheck and tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages the tests use (chromium, python3-grpcio, nghttpx, h2load...): one install step shared
# with the benchmarks. Without root the tests that need a missing one say so.
bash scripts/install-deps.sh || echo "test-all: some Debian packages are missing; the tests that need them will say so"

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
