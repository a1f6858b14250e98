#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs with an absolute CMAKE_INSTALL_LIBDIR, as GNUInstallDirs allows and as distribution build macros pass it
# (Fedora's %cmake: -DCMAKE_INSTALL_LIBDIR=/usr/lib64, the include folder left relative; Nix: every folder
# absolute), here under a private prefix: a program builds with `pkg-config forklog` and runs, and the installed
# forklog(1) finds its library.
# Usage: install_layouts.sh SOURCE_DIR TESTS_SOURCE_DIR CC
set -eu
src=$1 tests=$2 cc=$3
work=$(mktemp -d /tmp/forklog-layouts-XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL ($layout): $*"; exit 1; }

for layout in fedora nix; do
  prefix=$work/$layout/prefix
  case $layout in
  fedora) includedir=include inc=$prefix/include ;;
  nix) includedir=$work/$layout/dev/include inc=$includedir ;;
  esac
  cmake -S "$src" -B "$work/$layout/b" -DCMAKE_C_COMPILER="$cc" -DCMAKE_INSTALL_PREFIX="$prefix" \
        -DCMAKE_INSTALL_LIBDIR="$prefix/lib64" -DCMAKE_INSTALL_INCLUDEDIR="$includedir" \
        -DFORKLOG_BUILD_TESTS=OFF -DFORKLOG_BUILD_EXAMPLES=OFF -DFORKLOG_BUILD_BENCH=OFF >"$work/c.out" 2>&1 ||
    { cat "$work/c.out"; fail "configure"; }
  cmake --build "$work/$layout/b" -j 2 >"$work/b.out" 2>&1 || { cat "$work/b.out"; fail "build"; }
  cmake --install "$work/$layout/b" >/dev/null
  test -f "$inc/forklog.h" || fail "no $inc/forklog.h"

  export PKG_CONFIG_PATH="$prefix/lib64/pkgconfig"
  pkg-config --validate forklog
  got=$(pkg-config --variable=includedir forklog)
  test -f "$got/forklog.h" || fail "pkg-config --variable=includedir forklog is $got, without forklog.h"
  got=$(pkg-config --variable=libdir forklog)
  test -f "$got/libforklog.so" || fail "pkg-config --variable=libdir forklog is $got, without libforklog.so"
  mkdir "$work/$layout/pc"
  cp "$tests/consumer/prog.c" "$work/$layout/pc/"
  # shellcheck disable=SC2046
  (cd "$work/$layout/pc" &&
   "$cc" prog.c $(pkg-config --cflags --libs forklog) -Wl,-rpath,"$prefix/lib64" -o prog &&
   ./prog out.log) || fail "a program built with pkg-config: $(pkg-config --cflags --libs forklog)"
  "$prefix/bin/forklog" --version >/dev/null || fail "the installed forklog(1) does not run"
done
echo "install layouts OK: absolute CMAKE_INSTALL_LIBDIR, with a relative and an absolute CMAKE_INSTALL_INCLUDEDIR"
