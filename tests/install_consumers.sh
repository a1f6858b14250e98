#!/bin/sh
# Installs the build into a temporary prefix, then builds and runs a program outside the tree twice: with only
# `cc prog.c $(pkg-config --cflags --libs forklog)`, and through CMake's find_package(forklog).
# Usage: install_consumers.sh BUILD_DIR TESTS_SOURCE_DIR CC
set -eu
build=$1 src=$2 cc=$3
work=$(mktemp -d /tmp/forklog-install-XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
libdir=$(ls -d "$work"/prefix/lib*/pkgconfig | head -n 1)
libdir=${libdir%/pkgconfig}

# pkg-config, from an empty folder outside the tree.
mkdir "$work/pc"
cp "$src/consumer/prog.c" "$work/pc/"
cd "$work/pc"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shellcheck disable=SC2046
"$cc" prog.c $(pkg-config --cflags --libs forklog) -Wl,-rpath,"$libdir" -o prog
./prog "$work/pc/out.log"
grep -q 'parent done' "$work/pc/out.log"

# find_package(forklog).
cmake -S "$src/consumer" -B "$work/fp" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_C_COMPILER="$cc" \
      -DCMAKE_BUILD_RPATH="$libdir" >/dev/null
cmake --build "$work/fp" >/dev/null
"$work/fp/consumer" "$work/fp/out.log"

# The single header is installed next to forklog.h.
test -f "$work/prefix/include/forklog_single.h"
echo "install consumers OK"
