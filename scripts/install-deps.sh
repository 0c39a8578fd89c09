#!/usr/bin/env bash
# The Debian packages grpc-kube's tests and benchmarks run against, installed in one place for both
# (scripts/test-all.sh and `npm run bench` call this). Only what is missing is installed, only as
# root with apt-get; otherwise it says what is missing and how to install it.
#
#   scripts/install-deps.sh          everything (tests and benchmarks)
#   scripts/install-deps.sh --check  install nothing; exit 1 listing what is missing
#
# What uses what:
#   chromium        the lab report test (headless, via playwright-core)
#   python3-grpcio  a Python gRPC client through the sidecar proxy
#   nghttp2-proxy   nghttpx: the proxy's native data plane, and a bench peer
#   nghttp2-client  h2load: the proxy bench's load generator
#   nghttp2-server  nghttpd: the proxy bench's backends
#   haproxy         a proxy bench peer
#   prometheus      the real-Prometheus metrics test (scrapes a proxy's /metrics, PromQL over its API)
set -euo pipefail

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
/usr/bin/python3 -c 'import grpc' 2>/dev/null || need+=(python3-grpcio)
[ -x /usr/sbin/nghttpx ] || need+=(nghttp2-proxy)
[ -x /usr/bin/h2load ] || need+=(nghttp2-client)
[ -x /usr/sbin/nghttpd ] || need+=(nghttp2-server)
[ -x /usr/sbin/haproxy ] || need+=(haproxy)
[ -x /usr/bin/prometheus ] || need+=(prometheus)

[ "${#need[@]}" -eq 0 ] && exit 0
if [ "${1:-}" = --check ]; then
  echo "install-deps: missing Debian packages: ${need[*]}" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "install-deps: installing Debian packages: ${need[*]}"
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null); then
    exit 0
  fi
  echo "install-deps: apt-get could not install ${need[*]}" >&2
  exit 1
fi
echo "install-deps: missing Debian packages: ${need[*]}; install them as root: apt-get install -y ${need[*]}" >&2
exit 1
