#!/bin/sh
# SPDX-License-Identifier: MIT
# Copies the generated single header alone into an empty folder and builds a forking program against it with no
# library: `cc prog.c -pthread`. Also checks that the header compiles as C++ and under -std=c11 with
# _DEFAULT_SOURCE, and that two translation units may include it (one with the implementation).
# Usage: single_header.sh SINGLE_HEADER TESTS_SOURCE_DIR CC
set -eu
single=$1 src=$2 cc=$3
work=$(mktemp -d /tmp/forklog-single-XXXXXX)
trap 'rm -rf "$work"' EXIT
# The license line comes first, once.
head -n 1 "$single" | grep -qx '/\* SPDX-License-Identifier: MIT \*/' || { echo "FAIL: no SPDX line first"; exit 1; }
test "$(grep -c SPDX-License-Identifier "$single")" -eq 1 || { echo "FAIL: more than one SPDX line"; exit 1; }
# The header is copied alone into other projects: it carries the license's whole text (the MIT License asks for its
# notice in every copy), in its first comment, as ` * LINE`.
sed -n '/^ \* MIT License$/,/^ \*\/$/{/^ \*\/$/d;s/^ \* \{0,1\}//;p}' "$single" >"$work/license"
cmp -s "$work/license" "$src/../LICENSE" || { echo "FAIL: the header does not carry the text of LICENSE"; exit 1; }
cp "$single" "$work/forklog.h"
cp "$src/consumer/prog.c" "$work/prog.c"
cd "$work"
"$cc" -DFORKLOG_SINGLE_HEADER -Wall -Wextra -Werror prog.c -pthread -o prog
./prog "$work/a.log"
# Strict C11 needs the feature macro the header asks for.
"$cc" -std=c11 -D_DEFAULT_SOURCE -DFORKLOG_SINGLE_HEADER -Wall -Wextra -Wpedantic -Werror prog.c -pthread -o prog11
./prog11 "$work/b.log"
# A second translation unit that only uses the declarations links with the first.
printf '#include "forklog.h"\nunsigned other(void);\nunsigned other(void) { return forklog_version(); }\n' > other.c
"$cc" -DFORKLOG_SINGLE_HEADER -Wall -Wextra -Werror prog.c other.c -pthread -o prog2
./prog2 "$work/c.log"
# FORKLOG_STATIC: the implementation's functions are static to the one file that includes it, which uses only
# some of them; the others must not fail a -Werror build as unused, and none is exported.
printf '#define FORKLOG_STATIC\n#define FORKLOG_IMPLEMENTATION\n#include "forklog.h"\nint main(void)\n{\n%s\n}\n' \
  '    forklog *l; if (forklog_open(&l, "s.log", 0) < 0) return 1; forklog_info(l, "static"); return forklog_close(l);' \
  >static.c
"$cc" -Wall -Wextra -Wpedantic -Werror static.c -pthread -o prog-static
./prog-static
grep -q ' INFO pid=[0-9]* static$' s.log || { echo "FAIL: FORKLOG_STATIC: no record"; exit 1; }
bad=$(nm -g --defined-only prog-static | awk '{print $3}' | grep '^forklog_' || true)
if [ -n "$bad" ]; then echo "FAIL: FORKLOG_STATIC exports: $bad"; exit 1; fi
# No library symbol but the public ones.
"$cc" -DFORKLOG_SINGLE_HEADER -c prog.c -o prog.o
bad=$(nm -g --defined-only prog.o | awk '{print $3}' | grep -v -e '^forklog_' -e '^main$' || true)
if [ -n "$bad" ]; then echo "single header exports: $bad"; exit 1; fi
# musl: the same program, static, against musl libc (tests/run installs musl-tools).
if command -v musl-gcc >/dev/null 2>&1; then
  musl-gcc -std=c11 -D_DEFAULT_SOURCE -DFORKLOG_SINGLE_HEADER -Wall -Wextra -Wpedantic -Werror -static prog.c \
    -pthread -o prog-musl
  ./prog-musl "$work/d.log"
else
  echo "musl-gcc not found: musl build not checked"
fi
# The implementation is compiled with the user's own flags: common strict warnings must not fail a -Werror build,
# on a 64-bit target nor on a 32-bit one (-m32, when the compiler can link one), where size_t and long are narrower
# than the 64-bit integers the library computes with.
strict="-Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow -Wcast-qual -Wstrict-prototypes"
strict="$strict -Wmissing-prototypes -Wundef -Wfloat-equal -Werror"
# shellcheck disable=SC2086
"$cc" -O2 $strict -DFORKLOG_SINGLE_HEADER -c prog.c -o strict.o ||
  { echo "FAIL: the implementation does not build with $strict"; exit 1; }
printf 'int main(void) { return 0; }\n' >m32.c
if "$cc" -m32 m32.c -o m32 >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  "$cc" -m32 -D_FILE_OFFSET_BITS=64 -O2 $strict -DFORKLOG_SINGLE_HEADER -c prog.c -o strict32.o ||
    { echo "FAIL: the implementation does not build for -m32 with $strict"; exit 1; }
else
  echo "no -m32 (Debian's gcc-multilib): the 32-bit build with strict warnings not checked"
fi
# The declarations compile as C++.
if command -v c++ >/dev/null 2>&1; then
  printf '#include "forklog.h"\nint main() { forklog *l = 0; return forklog_close(l); }\n' > cpp.cc
  c++ -Wall -Wextra -Werror cpp.cc -o cpp -pthread -c
fi
echo "single header OK"
