#!/bin/sh
# SPDX-License-Identifier: MIT
# The library, the tool, the examples and the benchmarks compiled with the project's warnings as errors under
# settings that the default build does not use but users' builds do: CMake's MinSizeRel (-Os) and gcc's debugging
# level -Og, each of which makes gcc look at other paths for uninitialised variables; _FORTIFY_SOURCE (on by
# default in Ubuntu's gcc, and in Debian's and Fedora's package builds), under which glibc marks more functions
# warn_unused_result; a 32-bit build (-m32, when the compiler can link one: Debian's gcc-multilib), where time_t,
# long and size_t have other ranges, and where off_t has 32 bits unless the sources ask for large files; and
# musl-gcc, whose pthread types are shaped otherwise than glibc's; and, at run time, tests/musl_check.c built with
# musl-gcc and with CC.
# Usage: build_matrix.sh SOURCE_DIR CC WARNING_FLAGS
set -eu
src=$1 cc=$2 warnings=$3
fail=0

# build FLAGS...: every source compiled on its own, as CMake does (with the feature macro it gives each), with the
# warnings as errors; CC may be overridden for one call.
build() {
  for f in "$src"/lib/*.c "$src"/tools/forklog.c "$src"/examples/*.c "$src"/bench/*.c; do
    # The library's sources also with -fexceptions, as CMake compiles them (FORKLOG_LIB_OPTIONS).
    case $f in
      */lib/*) feature="-D_DEFAULT_SOURCE -fexceptions" ;;
      */examples/*) feature=-D_DEFAULT_SOURCE ;;
      *) feature=-D_GNU_SOURCE ;;
    esac
    # shellcheck disable=SC2086
    out=$(${with_cc:-$cc} "$@" $warnings -Werror -std=c11 $feature -I"$src/include" -c "$f" -o /dev/null 2>&1) || {
      echo "FAIL: ${with_cc:-$cc} $* ${f#"$src"/}:"
      echo "$out" | sed 's/^/  /'
      fail=1
    }
  done
}

for opt in -Os -Og; do
  build "$opt"
done
build -O2 -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2
work=$(mktemp -d /tmp/forklog-matrix-XXXXXX)
trap 'rm -rf "$work"' EXIT
printf 'int main(void) { return 0; }\n' >"$work/m32.c"
m32="-m32"
if "$cc" -m32 "$work/m32.c" -o "$work/m32" >/dev/null 2>&1; then
  build -m32 -O2
  # The 32-bit forklog(1), built as the README builds the demo (every source at once), appends to a log past
  # 2 GiB (a sparse file), as the 64-bit one does.
  # shellcheck disable=SC2086
  "$cc" -m32 -O2 $warnings -Werror -I"$src/include" "$src"/lib/*.c "$src/tools/forklog.c" -pthread -o "$work/forklog32" \
    >"$work/m32.out" 2>&1 || { cat "$work/m32.out"; echo "FAIL: the 32-bit forklog(1) does not build"; exit 1; }
  truncate -s 3G "$work/big.log"
  "$work/forklog32" append "$work/big.log" "past 2 GiB" ||
    { echo "FAIL: the 32-bit forklog(1) cannot append to a log of 3 GiB"; fail=1; }
  [ "$(tail -c 11 "$work/big.log")" = "past 2 GiB" ] || { echo "FAIL: no record at the end of the 3 GiB log"; fail=1; }
  # At run time, which the Criterion suite cannot do there: a caller with a 32-bit time_t and one with
  # _TIME_BITS=64, each built (as the single header is) with the library's sources and their crash points
  # (tests/abi32_check.c says what each check holds), the clock moved past January 2038 by tests/y2038_shim.c.
  # shellcheck disable=SC2086
  "$cc" -m32 -O2 -shared -fPIC "$src/tests/y2038_shim.c" -o "$work/y2038_shim.so" >"$work/m32.out" 2>&1 ||
    { cat "$work/m32.out"; echo "FAIL: tests/y2038_shim.c does not build"; exit 1; }
  for bits in "" "-D_FILE_OFFSET_BITS=64 -D_TIME_BITS=64"; do
    # shellcheck disable=SC2086
    "$cc" -m32 -O2 $bits $warnings -Werror -D_DEFAULT_SOURCE -DFL__CRASH_POINTS -I"$src/include" -I"$src/lib" \
      "$src"/lib/*.c "$src/tests/abi32_check.c" -pthread -o "$work/abi32" >"$work/m32.out" 2>&1 ||
      { cat "$work/m32.out"; echo "FAIL: tests/abi32_check.c does not build with -m32 $bits"; exit 1; }
    mkdir -p "$work/abi32.d"
    for check in time wait bound; do
      "$work/abi32" "$check" "$work/abi32.d" || { echo "FAIL: -m32 $bits: abi32_check $check"; fail=1; }
    done
    LD_PRELOAD="$work/y2038_shim.so" "$work/abi32" clock "$work/abi32.d" ||
      { echo "FAIL: -m32 $bits: abi32_check clock"; fail=1; }
  done
else
  m32="no -m32 (this compiler cannot link a 32-bit program: Debian's gcc-multilib)"
fi
# musl (tests/run installs musl-tools).
musl="musl-gcc"
if command -v musl-gcc >/dev/null 2>&1; then
  with_cc=musl-gcc
  build -O2
  with_cc=
  # musl's getopt leaves optind otherwise than glibc's after an error: forklog(1)'s usage errors, built with it.
  # shellcheck disable=SC2086
  musl-gcc -O2 $warnings -Werror -D_GNU_SOURCE -I"$src/include" "$src"/lib/*.c "$src/tools/forklog.c" -pthread \
    -o "$work/forklog-musl" >"$work/musl.out" 2>&1 || { cat "$work/musl.out"; echo "FAIL: the musl forklog(1) does not build"; exit 1; }
  sh "$src/tests/test_cli.sh" "$work/forklog-musl" usage || fail=1
  checkers="musl-gcc $cc"
else
  musl="no musl-gcc"
  checkers=$cc
fi
# The central promise at run time, which the Criterion suite cannot check with musl: forked writers, a writer
# killed at every crash point, the pool and rotation (tests/musl_check.c says what each check holds), built with
# the library's sources and their crash points by musl-gcc and by CC, so that a failure with musl alone is told
# from one of the library everywhere. CC builds it with -fexceptions, as CMake builds the library; Debian's
# musl-gcc cannot link that.
for with in $checkers; do
  exceptions=-fexceptions
  [ "$with" = musl-gcc ] && exceptions=
  # shellcheck disable=SC2086
  "$with" -O2 $warnings -Werror -std=c11 -D_DEFAULT_SOURCE $exceptions -DFL__CRASH_POINTS -I"$src/include" \
    -I"$src/lib" "$src"/lib/*.c "$src/tests/musl_check.c" -pthread -o "$work/musl_check" >"$work/check.out" 2>&1 ||
    { cat "$work/check.out"; echo "FAIL: tests/musl_check.c does not build with $with"; exit 1; }
  mkdir -p "$work/musl_check.d"
  "$work/musl_check" all "$work/musl_check.d" || { echo "FAIL: musl_check built with $with"; fail=1; }
done
[ "$fail" -eq 0 ] || exit 1
echo "build matrix OK: $cc with -Os, -Og, -D_FORTIFY_SOURCE=2, $m32; $musl; musl_check with $checkers"
