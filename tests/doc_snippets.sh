#!/bin/sh
# SPDX-License-Identifier: MIT
# The C code that the documentation shows a user: every ```c block of README.md and docs/*.md, and every C block of
# the EXAMPLES of man/*.3. A whole program (one with main) is built against the library with -Wall -Wextra -Werror
# and run in a folder of its own: it must exit 0, and the moment it returns its app.log must hold every record it
# will ever hold, each a whole line (five, where the page says "five whole lines"), so that a reader who runs it
# and then reads the log sees what the page promises. Its forked children start 0.2 s late (a preloaded
# pthread_atfork handler), as on a busy machine, where a parent that does not wait for them returns first. A
# fragment is compiled inside a function that has the variables the fragments use (log, items, nbytes, ...) with
# -Wall -Wextra -Werror but for unused names.
# Usage: doc_snippets.sh SRC_DIR LIBFORKLOG_SO [CC]
set -eu
src=$(cd "$1" && pwd) lib=$2 cc=${3:-cc}
libdir=$(cd "$(dirname "$lib")" && pwd)
work=$(mktemp -d /tmp/forklog-snippets-XXXXXX)
trap 'rm -rf "$work"' EXIT
fail=0
programs=0 fragments=0

# Blocks, one file each: $work/blocks/<doc>-<n>.c
mkdir "$work/blocks"
for doc in "$src/README.md" "$src"/docs/*.md; do
  awk -v out="$work/blocks/$(basename "$doc" .md)" '
    /^```c[ \t]*$/ { n++; f = out "-" n ".c"; inblock = 1; next }
    /^```/ { inblock = 0; next }
    inblock { print > f }' "$doc"
done
for page in "$src"/man/*.3; do
  head -n 5 "$page" | grep -q '^\.so ' && continue
  # The .EX/.EE blocks of EXAMPLES, roff escapes undone; a block with no C statement (a record, a shell line) is
  # left out.
  awk -v out="$work/blocks/$(basename "$page")" '
    /^\.SH / { examples = ($0 ~ /^\.SH EXAMPLES/) }
    examples && /^\.EX/ { n++; f = out "-" n ".c"; inblock = 1; next }
    /^\.EE/ { inblock = 0; next }
    inblock {
      gsub(/\\e/, "\001"); gsub(/\\-/, "-"); gsub(/\\\(dq/, "\""); gsub(/\\\(aq/, "\047")
      gsub(/\\&/, ""); gsub(/\\\|/, "")
      gsub(/\001/, "\\")
      print > f
    }' "$page"
done
for b in "$work"/blocks/*.c; do
  [ -e "$b" ] || continue
  grep -qE ';[[:space:]]*(/\*.*\*/)?[[:space:]]*$|^#include' "$b" || rm -f "$b"
done

# The late start of forked children.
cat >"$work/late_child.c" <<'EOF'
#define _DEFAULT_SOURCE
#include <pthread.h>
#include <unistd.h>
static void late(void) { usleep(200000); }
__attribute__((constructor)) static void install(void) { pthread_atfork(NULL, NULL, late); }
EOF
"$cc" -shared -fPIC -pthread "$work/late_child.c" -o "$work/late_child.so"

for b in "$work"/blocks/*.c; do
  name=$(basename "$b" .c)
  if grep -q 'main(' "$b"; then
    programs=$((programs + 1))
    dir="$work/run-$name"
    mkdir "$dir"
    if ! "$cc" -Wall -Wextra -Werror -I"$src/include" "$b" -L"$libdir" -lforklog -Wl,-rpath,"$libdir" \
         -o "$dir/prog" 2>"$dir/cc.err"; then
      echo "FAIL: $name does not build:"; sed 's/^/  /' "$dir/cc.err"; fail=1; continue
    fi
    # The page that shows the program says how many records its log holds.
    doc=${name%-*}
    want=""
    case $doc in
    *.3) grep -q 'holds five whole lines' "$src/man/$doc" && want=5 ;;
    *) grep -q 'holds five whole lines' "$src/$doc.md" "$src/docs/$doc.md" 2>/dev/null && want=5 ;;
    esac
    i=0
    while [ "$i" -lt 2 ]; do
      i=$((i + 1))
      rm -f "$dir/app.log"
      st=0; (cd "$dir" && LD_PRELOAD="$work/late_child.so" timeout 10 ./prog >"$dir/out" 2>&1) || st=$?
      [ "$st" -eq 0 ] || { echo "FAIL: $name: run $i: exit status $st: $(cat "$dir/out")"; fail=1; break; }
      [ -f "$dir/app.log" ] || continue
      at_return=$(wc -l <"$dir/app.log")
      sleep 0.5
      later=$(wc -l <"$dir/app.log")
      if [ "$at_return" -ne "$later" ]; then
        echo "FAIL: $name: run $i: app.log held $at_return records when the program returned, $later 0.5 s later"
        fail=1; break
      fi
      if [ -n "$want" ] && [ "$later" -ne "$want" ]; then
        echo "FAIL: $name: run $i: app.log holds $later records, the page says $want"; fail=1; break
      fi
      bad=$(grep -cvE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{15}Z (DEBUG|INFO|WARN|ERROR) pid=[0-9]+ ' "$dir/app.log" ||
            true)
      [ "$bad" -eq 0 ] || { echo "FAIL: $name: run $i: $bad lines of app.log are not whole records"; fail=1; break; }
    done
  else
    fragments=$((fragments + 1))
    f="$work/fragment-$name.c"
    {
      printf '#include <forklog.h>\n#include <signal.h>\n#include <stdio.h>\n#include <string.h>\n'
      printf '#include <unistd.h>\n#define N 3\nint do_request(const char *item);\n'
      printf '#line 1 "%s"\n' "$name"
      # File-scope lines: the fragment's static declarations and definitions (one line each); "..." is left out.
      awk '/^static / { print; next } { print "" }' "$b"
      printf 'void snippet(forklog *log, char **items, const char *item, double cost, int status, size_t nbytes,\n'
      printf '             const char *name, int admin, int n, const char *shard);\n'
      printf 'void snippet(forklog *log, char **items, const char *item, double cost, int status, size_t nbytes,\n'
      printf '             const char *name, int admin, int n, const char *shard)\n{\n'
      printf '    (void)log, (void)items, (void)item, (void)cost, (void)status, (void)nbytes, (void)name;\n'
      printf '    (void)admin, (void)n, (void)shard;\n    {\n'
      printf '#line 1 "%s"\n' "$name"
      awk '/^static / || /^[ \t]*\.\.\.[ \t]*$/ { print ""; next } { print }' "$b"
      printf '    }\n}\n'
    } >"$f"
    if ! "$cc" -Wall -Wextra -Werror -Wno-unused-variable -Wno-unused-but-set-variable -Wno-unused-function \
         -I"$src/include" -c "$f" -o "$work/fragment.o" 2>"$work/cc.err"; then
      echo "FAIL: $name does not compile:"; sed 's/^/  /' "$work/cc.err"; sed 's/^/  | /' "$b"; fail=1
    fi
  fi
done

[ "$programs" -ge 2 ] || { echo "FAIL: $programs whole programs found (README.md, forklog.3: one each)"; fail=1; }
[ "$fragments" -ge 10 ] || { echo "FAIL: only $fragments fragments found"; fail=1; }
[ "$fail" -eq 0 ] || exit 1
echo "doc snippets OK: $programs programs built and run, $fragments fragments compiled"
