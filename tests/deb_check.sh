#!/bin/sh
# SPDX-License-Identifier: MIT
# The Debian packages, end to end (a step of .ci/run; it installs into /usr, so it needs root and a machine
# where nothing else owns these package names):
#   1. configure a scratch build for /usr, build, `cpack -G DEB`: libforklog0, libforklog-dev, forklog-tools;
#   2. check what each holds (Debian's layout: /usr/lib/<multiarch>) and its Depends;
#   3. `dpkg -i` all three; build a program with `pkg-config forklog` against the installed files, run it with no
#      library path (the loader's cache must know libforklog.so.0), build it fully static too, build the CMake
#      consumer with find_package(forklog) and nothing else, run forklog(1); pkg-config and find_package must find
#      the package's files, not another install's (/usr/local, or a prefix in the environment);
#   4. `dpkg -P` them and check that nothing is left.
# Installs dpkg-dev (dpkg-shlibdeps) when missing. Usage: tests/deb_check.sh   (BUILD_DIR: kept, default temporary)
set -eu
cd "$(dirname "$0")/.."
src=$(pwd)
work=$(mktemp -d /tmp/forklog-deb-XXXXXX)
build=${BUILD_DIR:-$work/build}
pkgs="forklog-tools libforklog-dev libforklog0"
installed=""
cleanup() {
  # shellcheck disable=SC2086
  [ -z "$installed" ] || $sudo dpkg -P $pkgs >/dev/null 2>&1 || true
  rm -rf "$work"
}
fail() { echo "deb_check: FAIL: $*" >&2; exit 1; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
trap cleanup EXIT

for p in dpkg-dev cmake gcc pkg-config; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" && continue
  $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$p"
done
for p in $pkgs; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "installed"; then
    fail "$p is already installed: this check installs and removes it, remove it first (dpkg -P $p)"
  fi
done

# 1. The packages.
cmake -S "$src" -B "$build" -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_BUILD_TYPE=Release -DFORKLOG_WERROR=ON \
      -DFORKLOG_BUILD_TESTS=OFF -DFORKLOG_BUILD_EXAMPLES=OFF -DFORKLOG_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" >/dev/null
(cd "$build" && rm -f ./*.deb && cpack -G DEB >/dev/null)
version=$(sed -n 's/^project(forklog VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
soname_file=$(cd "$build" && ls libforklog.so.*.*.*)
for p in $pkgs; do
  test -f "$build/${p}_${version}_$arch.deb" || fail "no $build/${p}_${version}_$arch.deb"
done
deb() { echo "$build/${1}_${version}_$arch.deb"; }

# 2. What each package holds, and its dependencies.
contents() { dpkg-deb -c "$(deb "$1")" | awk '{print $6}' | sed 's|^\./|/|'; }
has() { contents "$1" | grep -qx "$2" || fail "$1 does not hold $2"; }
lacks() { if contents "$1" | grep -q "$2"; then fail "$1 holds $2"; fi; }
has libforklog0 "/usr/lib/$multiarch/libforklog.so.0"
has libforklog0 "/usr/lib/$multiarch/$soname_file"
lacks libforklog0 '\.a$'
lacks libforklog0 '/include/'
# Nothing at a path without the soname, which libforklog1 would want too (only its copyright file).
lacks libforklog0 '^/usr/share/doc/forklog/'
has libforklog-dev /usr/include/forklog.h
has libforklog-dev /usr/include/forklog_single.h
has libforklog-dev "/usr/lib/$multiarch/libforklog.so"
has libforklog-dev "/usr/lib/$multiarch/libforklog.a"
has libforklog-dev "/usr/lib/$multiarch/pkgconfig/forklog.pc"
has libforklog-dev "/usr/lib/$multiarch/cmake/forklog/forklogConfig.cmake"
has libforklog-dev /usr/share/man/man3/forklog_open.3
lacks libforklog-dev 'libforklog\.so\.0'
has forklog-tools /usr/bin/forklog
has forklog-tools /usr/share/man/man1/forklog.1
# Debian's policy: each package carries its license as /usr/share/doc/PACKAGE/copyright.
for p in $pkgs; do
  has "$p" "/usr/share/doc/$p/copyright"
  dpkg-deb --fsys-tarfile "$(deb "$p")" | tar -xOf - "./usr/share/doc/$p/copyright" | cmp -s - "$src/LICENSE" ||
    fail "$p: /usr/share/doc/$p/copyright is not LICENSE"
done
dpkg-deb -f "$(deb libforklog0)" Depends | grep -q 'libc6' || fail "libforklog0 does not depend on libc6"
dpkg-deb -f "$(deb libforklog-dev)" Depends | grep -qF "libforklog0 (= $version)" ||
  fail "libforklog-dev does not depend on libforklog0 (= $version)"
dpkg-deb -f "$(deb forklog-tools)" Depends | grep -qF "libforklog0 (= $version)" ||
  fail "forklog-tools does not depend on libforklog0 (= $version)"
for p in $pkgs; do echo "deb_check: $p: $(dpkg-deb -f "$(deb "$p")" Depends)"; done
# Description: a synopsis of each package's own, then an extended description in Debian's syntax: every line
# indented by exactly one space (two would make it a verbatim line), " ." between paragraphs, at most 80 columns.
synopses=$(for p in $pkgs; do dpkg-deb -f "$(deb "$p")" Description | head -n 1; done)
[ "$(echo "$synopses" | sort -u | wc -l)" -eq 3 ] || fail "the packages do not have a synopsis each: $synopses"
for p in $pkgs; do
  dpkg-deb -f "$(deb "$p")" Description >"$work/description"
  sed -n 1p "$work/description" | grep -q '^[^ ]' || fail "$p: no synopsis: $(sed -n 1p "$work/description")"
  [ "$(wc -l <"$work/description")" -ge 3 ] || fail "$p: no extended description"
  if sed 1d "$work/description" | grep -qv '^ [^ ]'; then
    fail "$p: description lines that are not indented by one space: $(sed 1d "$work/description" | grep -v '^ [^ ]')"
  fi
  if awk 'length($0) > 80' "$work/description" | grep -q .; then fail "$p: description lines over 80 columns"; fi
done

# 3. Install, use.
installed=yes
# shellcheck disable=SC2046
$sudo dpkg -i $(for p in $pkgs; do deb "$p"; done) >/dev/null
ldconfig -p | grep -q "libforklog.so.0 " || fail "the loader's cache does not know libforklog.so.0"
# The package's files, not those of another install that pkg-config, CMake or the shell would find first: one in
# /usr/local, or a private prefix in PKG_CONFIG_PATH, CMAKE_PREFIX_PATH or PATH.
unset PKG_CONFIG_PATH CMAKE_PREFIX_PATH
pcdir=$(pkg-config --variable=pcfiledir forklog)
[ "$pcdir" = "/usr/lib/$multiarch/pkgconfig" ] ||
  fail "pkg-config finds forklog.pc in $pcdir, not in /usr/lib/$multiarch/pkgconfig: another install is in the way"
mkdir "$work/pc"
cp "$src/tests/consumer/prog.c" "$work/pc/"
cd "$work/pc"
# shellcheck disable=SC2046
cc -Wall -Werror prog.c $(pkg-config --cflags --libs forklog) -o prog
readelf -d prog | grep -q 'NEEDED.*libforklog\.so\.0' || fail "prog does not need libforklog.so.0"
env -u LD_LIBRARY_PATH ./prog "$work/pc/out.log"
# shellcheck disable=SC2046
cc -static prog.c $(pkg-config --static --cflags --libs forklog) -o prog-static
./prog-static "$work/pc/static.log"
cmake -S "$src/tests/consumer" -B "$work/fp" >/dev/null
cmake --build "$work/fp" >/dev/null
grep -qx "forklog_DIR:PATH=/usr/lib/$multiarch/cmake/forklog" "$work/fp/CMakeCache.txt" ||
  fail "find_package(forklog) found $(sed -n 's/^forklog_DIR:PATH=//p' "$work/fp/CMakeCache.txt"), not the package's"
env -u LD_LIBRARY_PATH "$work/fp/consumer" "$work/fp/out.log"
"$work/fp/consumer_static" "$work/fp/static.log"
/usr/bin/forklog --version
/usr/bin/forklog append "$work/pc/cli.log" "installed from the Debian package"
grep -q 'installed from the Debian package' "$work/pc/cli.log" || fail "forklog(1) wrote nothing"
cd "$src"

# 4. Remove.
# shellcheck disable=SC2086
$sudo dpkg -P $pkgs >/dev/null
installed=""
for f in /usr/include/forklog.h "/usr/lib/$multiarch/libforklog.so.0" "/usr/lib/$multiarch/libforklog.a" \
         /usr/bin/forklog; do
  test ! -e "$f" || fail "$f is still there after dpkg -P"
done
for p in $pkgs; do
  ! dpkg-query -W "$p" >/dev/null 2>&1 || fail "dpkg still lists $p after dpkg -P"
done
echo "deb_check OK: $pkgs built, installed, used and removed"
