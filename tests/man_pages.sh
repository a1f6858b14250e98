#!/bin/sh
# SPDX-License-Identifier: MIT
# Every function the shared library exports has a man page in man/ (a page covers the names in its NAME section;
# a link page, `.so man3/PAGE.3`, covers its own name), every name in a NAME section has a file of its own (the
# page, or a link to it), and every page formats with no groff warning (groff -man -ww -z).
# Usage: man_pages.sh LIBFORKLOG_SO MAN_DIR
set -eu
lib=$1 man=$(cd "$2" && pwd)
work=$(mktemp -d /tmp/forklog-man-XXXXXX)
trap 'rm -rf "$work"' EXIT
command -v groff >/dev/null || { echo "FAIL: groff is missing (Debian: groff-base)"; exit 1; }
# `.so man3/x.3` is found through the include path, as man(1) finds it under a man folder.
ln -s "$man" "$work/man3"
fail=0

# The names the pages document.
for page in "$man"/*.3; do
  if head -n 5 "$page" | grep -q '^\.so '; then
    target=$(sed -n 's/^\.so man3\///p' "$page")
    [ -f "$man/$target" ] || { echo "FAIL: $page links to a missing page: $target"; fail=1; }
    basename "$page" .3
  else
    # NAME: the lines between `.SH NAME` and the next `.SH`, up to ` \-`.
    sed -n '/^\.SH NAME/,/^\.SH /{/^\.SH/d;p}' "$page" | tr '\n' ' ' | sed 's/ \\-.*//' | tr ',' '\n' |
      sed 's/\\f[BIRP]//g; s/^ *//; s/ *$//'
    echo
  fi
done | sort -u >"$work/documented"

# Every name in a page's NAME section has a file of its own in man/, the page or a link to it, so that `man NAME`
# finds what the page's NAME section (and so whatis and apropos) promises.
for page in "$man"/*.3; do
  head -n 5 "$page" | grep -q '^\.so ' && continue
  for name in $(sed -n '/^\.SH NAME/,/^\.SH /{/^\.SH/d;p}' "$page" | tr '\n' ' ' | sed 's/ \\-.*//' | tr ',' ' ' |
                sed 's/\\f[BIRP]//g'); do
    if [ ! -f "$man/$name.3" ]; then
      echo "FAIL: $(basename "$page") names $name, which has no page $name.3 (a link: .so man3/$(basename "$page"))"
      fail=1
    elif [ "$man/$name.3" != "$page" ] && ! grep -qx ".so man3/$(basename "$page")" "$man/$name.3"; then
      echo "FAIL: $name.3 is not a link to $(basename "$page"), whose NAME section has $name"
      fail=1
    fi
  done
done

# The functions the library exports.
nm -D --defined-only "$lib" | awk '$2 == "T" && $3 ~ /^forklog_/ {sub(/@.*/, "", $3); print $3}' | sort -u >"$work/exported"
[ -s "$work/exported" ] || { echo "FAIL: no exported function found in $lib"; exit 1; }
missing=$(comm -23 "$work/exported" "$work/documented")
if [ -n "$missing" ]; then
  echo "FAIL: exported functions without a man page in $man:"
  echo "$missing" | sed 's/^/  /'
  fail=1
fi

# Every page, section 1 too, formats without a warning.
for page in "$man"/*.[0-9]; do
  out=$(cd "$work" && groff -man -ww -z -I "$work" "$page" 2>&1) || { echo "FAIL: groff failed on $page"; fail=1; }
  if [ -n "$out" ]; then
    echo "FAIL: groff warnings in $page:"
    echo "$out" | sed 's/^/  /'
    fail=1
  fi
done
[ "$fail" -eq 0 ] || exit 1
echo "man pages OK: $(wc -l <"$work/exported") exported functions documented," \
     "$(ls "$man"/*.[0-9] | wc -l) pages without warnings"
