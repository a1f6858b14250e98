#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the Python package's tests (python/tests) on a built libforklog.so. Called by tests/run after ctest.
#   python/tests/run.sh BUILD_DIR [pytest arguments]
# The interpreter: $PYTHON when set, else python3 when it has pytest, else Debian's /usr/bin/python3 with
# Debian's python3-pytest (and python3-pip, for the install test), installed through apt-get when missing.
# Fails when any test fails, and when no test ran (pytest's exit status 5).
set -eu
cd "$(dirname "$0")/../.."
build=${1:?usage: python/tests/run.sh BUILD_DIR [pytest arguments]}
shift
case $build in /*) ;; *) build=$PWD/$build ;; esac
lib=$build/libforklog.so
if [ ! -e "$lib" ]; then
  echo "python/tests/run.sh: $lib is missing: build the shared library first" >&2
  exit 1
fi
if grep -q '^FORKLOG_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  # An instrumented library cannot be loaded into a plain interpreter (the sanitizer runtime must come first).
  echo "python/tests/run.sh: $build is a sanitizer build: the Python tests run on the plain builds"
  exit 0
fi

has_pytest() { "$1" -c 'import pytest' 2>/dev/null; }
py=${PYTHON:-}
if [ -z "$py" ]; then
  if command -v python3 >/dev/null && has_pytest python3; then py=python3; else py=/usr/bin/python3; fi
fi
if ! has_pytest "$py"; then
  if [ "$py" != /usr/bin/python3 ] || ! command -v apt-get >/dev/null; then
    echo "python/tests/run.sh: $py has no pytest; install it for that interpreter, or unset PYTHON" >&2
    exit 1
  fi
  echo "python/tests/run.sh: installing python3-pytest python3-pip"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q python3 python3-pytest python3-pip
fi
echo "python/tests/run.sh: $("$py" -c 'import sys; print(sys.executable, sys.version.split()[0])'), FORKLOG_LIBRARY=$lib"
rc=0
FORKLOG_LIBRARY=$lib PYTHONDONTWRITEBYTECODE=1 "$py" -m pytest -q -p no:cacheprovider python/tests "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "python/tests/run.sh: FAILED: pytest collected no test" >&2
  exit 1
elif [ "$rc" -ne 0 ]; then
  echo "python/tests/run.sh: FAILED: pytest exited with $rc" >&2
  exit "$rc"
fi
