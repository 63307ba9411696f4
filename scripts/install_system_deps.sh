#!/usr/bin/env bash
# Installs the Debian packages the build and the C++ tests need (offline Bazel, googletest,
# iproute2 for the namespace cluster).
# Idempotent: does nothing when they are already there.
set -euo pipefail
need=()
command -v bazel >/dev/null 2>&1 || need+=(bazel-bootstrap)
[ -d /usr/share/bazel/tools/platforms ] || [ -d /usr/share/bazel/platforms ] || need+=(bazel-platforms)
[ -f /usr/lib/x86_64-linux-gnu/libgtest.a ] || [ -f /usr/lib/aarch64-linux-gnu/libgtest.a ] || need+=(libgtest-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
# ip and tc: scripts/netcluster.py (hosts as network namespaces, links shaped with tbf)
{ command -v ip && command -v tc; } >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
