#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds and installs the project the way a user without Criterion does: configure, build and install in a
# scratch folder need only a C compiler, CMake and pthreads, and configuring says, in one line, that the tests
# are skipped. Criterion is hidden from pkg-config with PKG_CONFIG_LIBDIR (an empty search path), and pkg-config
# itself with CMAKE_DISABLE_FIND_PACKAGE_PkgConfig; FORKLOG_BUILD_TESTS=ON must then fail to configure.
# Usage: build_without_tests.sh SOURCE_DIR CC
set -eu
src=$1 cc=$2
work=$(mktemp -d /tmp/forklog-notests-XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/empty"
fail() { echo "FAIL: $*"; exit 1; }

# 1. pkg-config present, Criterion not found: the whole default build (library, tool, examples, benchmarks).
PKG_CONFIG_LIBDIR="$work/empty" PKG_CONFIG_PATH="" \
  cmake -S "$src" -B "$work/b1" -DCMAKE_C_COMPILER="$cc" -DFORKLOG_WERROR=ON >"$work/c1.out" 2>&1 ||
  { cat "$work/c1.out"; fail "configure without Criterion"; }
grep -qx -- '-- forklog: Criterion not found through pkg-config: tests skipped' "$work/c1.out" ||
  { cat "$work/c1.out"; fail "no 'tests skipped' line"; }
test "$(grep -c 'tests skipped' "$work/c1.out")" -eq 1 || fail "more than one 'tests skipped' line"
cmake --build "$work/b1" -j 2 >"$work/b1.out" 2>&1 || { cat "$work/b1.out"; fail "build without Criterion"; }
test ! -e "$work/b1/tests" || fail "tests/ was configured"
cmake --install "$work/b1" --prefix "$work/prefix" >/dev/null
ls "$work"/prefix/lib*/libforklog.so.0 "$work"/prefix/lib*/libforklog.a "$work/prefix/include/forklog.h" \
   "$work/prefix/bin/forklog" >/dev/null
"$work/prefix/bin/forklog" --version

# 2. No pkg-config at all: configures, says the same.
cmake -S "$src" -B "$work/b2" -DCMAKE_C_COMPILER="$cc" -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON \
  >"$work/c2.out" 2>&1 || { cat "$work/c2.out"; fail "configure without pkg-config"; }
grep -q 'tests skipped' "$work/c2.out" || { cat "$work/c2.out"; fail "no 'tests skipped' line without pkg-config"; }

# 3. FORKLOG_BUILD_TESTS=ON without Criterion: configuring fails and says why.
if PKG_CONFIG_LIBDIR="$work/empty" PKG_CONFIG_PATH="" cmake -S "$src" -B "$work/b3" -DCMAKE_C_COMPILER="$cc" \
     -DFORKLOG_BUILD_TESTS=ON >"$work/c3.out" 2>&1; then
  fail "FORKLOG_BUILD_TESTS=ON configured without Criterion"
fi
grep -q 'Criterion was not found' "$work/c3.out" || { cat "$work/c3.out"; fail "no reason given"; }

# 4. FORKLOG_BUILD_TESTS=OFF: no tests, no message.
cmake -S "$src" -B "$work/b4" -DCMAKE_C_COMPILER="$cc" -DFORKLOG_BUILD_TESTS=OFF >"$work/c4.out" 2>&1 ||
  { cat "$work/c4.out"; fail "configure with FORKLOG_BUILD_TESTS=OFF"; }
test ! -e "$work/b4/tests" || fail "tests/ configured with FORKLOG_BUILD_TESTS=OFF"
# 5. CMake 3.16 to 3.20 (the README says 3.16 or later), which does not set PROJECT_IS_TOP_LEVEL (3.21): simulated
# by unsetting it right after project(). With Criterion found (this test runs only then), configuring must still
# build the tests and the examples, not skip them without a word.
printf 'unset(PROJECT_IS_TOP_LEVEL)\n' >"$work/old-cmake.cmake"
cmake -S "$src" -B "$work/b5" -DCMAKE_C_COMPILER="$cc" -DCMAKE_PROJECT_INCLUDE="$work/old-cmake.cmake" \
  >"$work/c5.out" 2>&1 || { cat "$work/c5.out"; fail "configure as CMake before 3.21"; }
test -e "$work/b5/tests" || { cat "$work/c5.out"; fail "CMake before 3.21: tests/ was not configured"; }
test -e "$work/b5/examples" || fail "CMake before 3.21: examples/ was not configured"
# 6. Another compiler than the one Criterion was built for (musl-gcc, which does not look in /usr/include, when
# installed): Criterion is found through pkg-config but cannot be used, so the tests are skipped, in one line, and
# the rest builds.
if command -v musl-gcc >/dev/null 2>&1; then
  cmake -S "$src" -B "$work/b6" -DCMAKE_C_COMPILER=musl-gcc -DFORKLOG_WERROR=ON >"$work/c6.out" 2>&1 ||
    { cat "$work/c6.out"; fail "configure with musl-gcc"; }
  test "$(grep -c 'tests skipped' "$work/c6.out")" -eq 1 ||
    { cat "$work/c6.out"; fail "musl-gcc: no 'tests skipped' line"; }
  test ! -e "$work/b6/tests" || fail "musl-gcc: tests/ was configured"
  cmake --build "$work/b6" -j 2 >"$work/b6.out" 2>&1 || { cat "$work/b6.out"; fail "build with musl-gcc"; }
  "$work/b6/tools/forklog" --version
fi
echo "build without tests OK"
