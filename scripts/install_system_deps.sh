#!/usr/bin/env bash
# Installs the Debian packages that `make demo` and `make test` need; only what is missing.
#
#   scripts/install_system_deps.sh demo    # build + run: python3 with venv/ensurepip and headers, g++, make
#   scripts/install_system_deps.sh netns   # ip and tc (iproute2): scripts/netcluster.py, network-namespace tests
#   scripts/install_system_deps.sh test    # demo + netns + offline Bazel (bazel-bootstrap pulls a JDK),
#                                          # bazel-platforms and googletest for the C++ tests
#   scripts/install_system_deps.sh         # same as test
#
# PYTHON (default python3) is the interpreter the venv is made from. Idempotent: every
# package is checked by what it provides (a command, a header, a module) and apt-get runs
# only when something is missing, so a second run does nothing.
set -euo pipefail
part="${1:-test}"
PYTHON="${PYTHON:-python3}"
need=()

want_demo() {
  command -v make >/dev/null 2>&1 || need+=(make)
  command -v g++ >/dev/null 2>&1 || need+=(g++)
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    need+=(python3 python3-venv python3-dev)
    return
  fi
  # venv + ensurepip: Debian's python3 needs python3-venv for them, a pyenv or
  # self-built CPython has them already (so test for them, not for the package).
  if ! { "$PYTHON" -m venv --help && "$PYTHON" -c "import ensurepip"; } >/dev/null 2>&1; then
    need+=(python3-venv)
  fi
  # Python.h for the pybind11 extension, in this interpreter's include directory.
  if ! "$PYTHON" -c "import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" >/dev/null 2>&1; then
    need+=(python3-dev)
  fi
}

want_netns() {
  # ip and tc: scripts/netcluster.py (hosts as network namespaces, links shaped with tbf)
  { command -v ip && command -v tc; } >/dev/null 2>&1 || need+=(iproute2)
}

want_bazel() {
  command -v bazel >/dev/null 2>&1 || need+=(bazel-bootstrap)
  [ -d /usr/share/bazel/tools/platforms ] || [ -d /usr/share/bazel/platforms ] || need+=(bazel-platforms)
  [ -f /usr/lib/x86_64-linux-gnu/libgtest.a ] || [ -f /usr/lib/aarch64-linux-gnu/libgtest.a ] || need+=(libgtest-dev)
}

case "$part" in
  demo) want_demo ;;
  netns) want_netns ;;
  test|all) want_demo; want_netns; want_bazel ;;
  *) echo "usage: $0 [demo|netns|test]" >&2; exit 2 ;;
esac

if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages ($part): ${need[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to apt-get install ${need[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
  # Debian's python3-dev/-venv do not help an interpreter that is not Debian's python3.
  if [ "$part" != netns ] && ! "$PYTHON" -c "import ensurepip" >/dev/null 2>&1; then
    echo "warning: $PYTHON still has no ensurepip (is it Debian's python3?); set PYTHON=/usr/bin/python3" >&2
  fi
fi
