#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs the build into a temporary prefix, then builds and runs a program outside the tree against it:
#   - `cc prog.c $(pkg-config --cflags --libs forklog)`: linked to libforklog.so.0, found through an rpath, then
#     through LD_LIBRARY_PATH (the README's two ways for a private prefix);
#   - `cc -static prog.c $(pkg-config --static --cflags --libs forklog)`: a fully static program;
#   - libforklog.a alone in an otherwise dynamic program (`$(pkg-config --variable=libdir forklog)/libforklog.a`);
#   - CMake's find_package(forklog), with forklog::forklog and with forklog::forklog_static.
# Every static program is checked with readelf to need no libforklog.so.
# Usage: install_consumers.sh BUILD_DIR TESTS_SOURCE_DIR CC
set -eu
build=$1 src=$2 cc=$3
work=$(mktemp -d /tmp/forklog-install-XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
libdir=$(ls -d "$work"/prefix/lib*/pkgconfig | head -n 1)
libdir=${libdir%/pkgconfig}
test -f "$libdir/libforklog.a"
test -L "$libdir/libforklog.so"

needs_forklog_so() { readelf -d "$1" 2>/dev/null | grep -q 'NEEDED.*libforklog\.so'; }

# pkg-config, from an empty folder outside the tree.
mkdir "$work/pc"
cp "$src/consumer/prog.c" "$work/pc/"
cd "$work/pc"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
pkg-config --validate forklog

# Dynamic, with an rpath; then the same program without one, through LD_LIBRARY_PATH.
# shellcheck disable=SC2046
"$cc" prog.c $(pkg-config --cflags --libs forklog) -Wl,-rpath,"$libdir" -o prog
needs_forklog_so prog || { echo "FAIL: prog does not need libforklog.so"; exit 1; }
./prog "$work/pc/out.log"
grep -q 'parent done' "$work/pc/out.log"
# shellcheck disable=SC2046
"$cc" prog.c $(pkg-config --cflags --libs forklog) -o prog-env
LD_LIBRARY_PATH="$libdir" ./prog-env "$work/pc/env.log"

# Fully static: pkg-config --static adds Libs.private (-pthread).
case " $(pkg-config --static --libs forklog) " in
  *" -lforklog -pthread "*) ;;
  *) echo "FAIL: pkg-config --static --libs forklog: $(pkg-config --static --libs forklog)"; exit 1 ;;
esac
# shellcheck disable=SC2046
"$cc" -static prog.c $(pkg-config --static --cflags --libs forklog) -o prog-static
if readelf -d prog-static 2>/dev/null | grep -q NEEDED; then
  echo "FAIL: prog-static needs shared libraries:"; readelf -d prog-static | grep NEEDED; exit 1
fi
./prog-static "$work/pc/static.log"

# Only forklog static, the C library shared.
# shellcheck disable=SC2046
"$cc" prog.c $(pkg-config --cflags forklog) "$(pkg-config --variable=libdir forklog)/libforklog.a" -pthread \
      -o prog-archive
if needs_forklog_so prog-archive; then echo "FAIL: prog-archive needs libforklog.so"; exit 1; fi
./prog-archive "$work/pc/archive.log"

# libforklog.a defines no global name but the public ones: a program is free to name its own functions as it
# likes (fl__pid here, a name of the library's internals), and links with the archive as it does with the shared
# library, whose version script keeps the internal names local.
cat >names.c <<'EOF'
#include <forklog.h>
#include <unistd.h>
int fl__pid(void);
int fl__pid(void) { return (int)getpid(); }
int main(int argc, char **argv)
{
    forklog *log;
    if (argc != 2 || forklog_open(&log, argv[1], NULL) < 0)
        return 1;
    return forklog_info(log, "own name %d", fl__pid()) != 0 || forklog_close(log) != 0;
}
EOF
for how in archive static; do
  case $how in
    # shellcheck disable=SC2046
    archive) "$cc" names.c $(pkg-config --cflags forklog) "$libdir/libforklog.a" -pthread -o names-$how ;;
    # shellcheck disable=SC2046
    static) "$cc" -static names.c $(pkg-config --static --cflags --libs forklog) -o names-$how ;;
  esac || { echo "FAIL: a program with a function named fl__pid does not link with libforklog.a ($how)"; exit 1; }
  ./names-$how "$work/pc/names-$how.log"
  grep -q ' own name [0-9]*$' "$work/pc/names-$how.log"
done
# DW.ref.__gcc_personality_v0 is no name of the library's: -fexceptions makes the compiler emit it, weak, hidden and
# in a COMDAT group, in every C object with cleanups, where a program's own copy is the same one.
bad=$(nm -g --defined-only "$libdir/libforklog.a" | awk 'NF == 3 {print $3}' |
      grep -v -e '^forklog_' -e '^FORKLOG_' -e '^DW\.ref\.__gcc_personality_v0$' | sort -u | tr '\n' ' ' || true)
if [ -n "$bad" ]; then echo "FAIL: libforklog.a defines names that are not public API: $bad"; exit 1; fi

# C++ (when there is a C++ compiler): the declarations and the _kv macros' template, also for a program that
# includes the header inside `extern "C" { }`, as C++ programs often do with a C header.
if command -v c++ >/dev/null 2>&1; then
  cat >prog.cc <<'EOF'
extern "C" {
#include <forklog.h>
}
int main(int argc, char **argv)
{
    forklog *log;
    if (argc != 2 || forklog_open(&log, argv[1], nullptr) < 0)
        return 1;
    int rc = forklog_info_kv(log, "from C++", FORKLOG_STR("lang", "c++"), FORKLOG_INT("std", __cplusplus));
    return rc != 0 || forklog_close(log) != 0;
}
EOF
  for std in c++11 c++20; do
    # shellcheck disable=SC2046
    c++ -std=$std -Wall -Wextra -Wpedantic -Werror prog.cc $(pkg-config --cflags --libs forklog) -Wl,-rpath,"$libdir" \
        -o prog-cxx || { echo "FAIL: a C++ program (-std=$std) does not build against the installed header"; exit 1; }
    ./prog-cxx "$work/pc/cxx-$std.log"
    grep -q ' from C++ lang=c++ std=[0-9]*$' "$work/pc/cxx-$std.log"
  done
else
  echo "c++ not found: C++ consumers not checked"
fi

# find_package(forklog): forklog::forklog and forklog::forklog_static.
cmake -S "$src/consumer" -B "$work/fp" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_C_COMPILER="$cc" \
      -DCMAKE_BUILD_RPATH="$libdir" >/dev/null
cmake --build "$work/fp" >/dev/null
needs_forklog_so "$work/fp/consumer" || { echo "FAIL: consumer does not need libforklog.so"; exit 1; }
if needs_forklog_so "$work/fp/consumer_static"; then echo "FAIL: consumer_static needs libforklog.so"; exit 1; fi
"$work/fp/consumer" "$work/fp/out.log"
"$work/fp/consumer_static" "$work/fp/static.log"

# The single header is installed next to forklog.h.
test -f "$work/prefix/include/forklog_single.h"
echo "install consumers OK: pkg-config (shared with rpath and LD_LIBRARY_PATH, fully static, libforklog.a, no" \
     "internal name in libforklog.a)," \
     "find_package (forklog::forklog, forklog::forklog_static)"
