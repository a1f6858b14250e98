#!/bin/sh
# SPDX-License-Identifier: MIT
# Programs that share nothing but the log's path, each built another way, write one log at once: one linked to
# libforklog.so, one to libforklog.a, one with the single header alone (-std=c11), and forklog(1). Each forks a
# child that writes through its handle, and two of them exec another build in the middle without closing the log,
# which then opens it again. Every one joins the same segment (the builds agree on its layout and ABI word), every
# record is there once, whole, in its writer's order, the JSON lines parse, and the last close removes the segment
# file. Meanwhile the single header built against musl, and with another layout number, are refused with -EPROTO
# and write nothing. Then a program with two copies of the library, libforklog.a and libforklog.so, uses one log
# through both.
# Usage: interop_builds.sh SINGLE_HEADER TESTS_SOURCE_DIR CC INCLUDE_DIR LIBFORKLOG_SO LIBFORKLOG_A FORKLOG_CLI
set -eu
single=$1 src=$2 cc=$3 inc=$4 so=$5 a=$6 cli=$7
work=$(mktemp -d /tmp/forklog-interop-XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
fail() { echo "FAIL: $*"; exit 1; }
N=3000
"$cc" -I"$inc" "$src/interop_writer.c" -o w_so "$so" -Wl,-rpath,"$(dirname "$so")" -pthread
"$cc" -I"$inc" "$src/interop_writer.c" -o w_a "$a" -pthread
mkdir single other
cp "$single" single/forklog.h
"$cc" -std=c11 -D_DEFAULT_SOURCE -DFORKLOG_SINGLE_HEADER -Isingle "$src/interop_writer.c" -o w_single -pthread
# Another layout number: the same code, as another forklog version that changed the segment would be.
awk '/^#define FL__LAYOUT [0-9]+u/ && !done { sub(/[0-9]+u/, ($3 + 1) "u"); done = 1 } { print }' single/forklog.h \
  >other/forklog.h
cmp -s single/forklog.h other/forklog.h && fail "no FL__LAYOUT line in the single header"
"$cc" -DFORKLOG_SINGLE_HEADER -Iother "$src/interop_writer.c" -o w_layout -pthread
if command -v musl-gcc >/dev/null 2>&1; then
  musl-gcc -static -std=c11 -D_DEFAULT_SOURCE -DFORKLOG_SINGLE_HEADER -Isingle "$src/interop_writer.c" -o w_musl \
    -pthread
else
  echo "musl-gcc not found: a musl program on a glibc log not checked"
fi

log=$work/a.log
./w_so "$log" 1 $N child ready="$work/ready" wait="$work/go" &
p1=$!
i=0
while [ ! -e "$work/ready" ]; do
  i=$((i + 1))
  [ $i -lt 1000 ] || fail "the first writer did not open the log"
  sleep 0.01
done
./w_a "$log" 2 $N json child exec=$((N / 2)):"$work/w_single" &
p2=$!
./w_single "$log" 3 $N raw child exec=$((N / 3)):"$work/w_so" &
p3=$!
awk -v n=$N 'BEGIN { for (s = 0; s < n; s++) { m = 40 + (50 * 7 + s) % 60; p = "";
  for (i = 0; i < m; i++) p = p sprintf("%c", 97 + (50 + s + i) % 26); printf "I id=50 seq=%d |%s\n", s, p } }' |
  "$cli" append --json "$log" &
p4=$!
# The first writer holds the log: these find its segment, and must refuse it.
set +e
./w_layout "$log" 8 10 2>layout.err
rc=$?
set -e
[ $rc -eq 4 ] || fail "a program of another layout got status $rc, not -EPROTO: $(cat layout.err)"
if [ -x w_musl ]; then
  set +e
  ./w_musl "$log" 9 10 2>musl.err
  rc=$?
  set -e
  [ $rc -eq 4 ] || fail "a musl program got status $rc, not -EPROTO: $(cat musl.err)"
fi
for p in $p2 $p3 $p4; do wait $p || fail "writer $p failed"; done
touch "$work/go"
wait $p1 || fail "the first writer failed"
[ ! -e "$work/.a.log.forklog" ] || fail "the last close left the segment file"

# Every record once, whole, in its writer's order; nothing of the refused programs.
awk -v n=$N '
  { if (!match($0, /I id=[0-9]+ seq=[0-9]+ \|[a-z]+/)) { print "FAIL: a line that is no whole record: " $0; bad = 1; next }
    rec = substr($0, RSTART, RLENGTH); rest = substr($0, RSTART + RLENGTH)
    if (rest != "" && rest != "\"}") { print "FAIL: a record followed by " rest; bad = 1 }
    split(rec, f, /[ =|]+/); id = f[3] + 0; seq = f[5] + 0; pay = f[6]
    m = 40 + (id * 7 + seq) % 60; want = ""
    for (i = 0; i < m; i++) want = want sprintf("%c", 97 + (id + seq + i) % 26)
    if (pay != want) { print "FAIL: record " id "/" seq " torn"; bad = 1 }
    if (++count[id SUBSEP seq] > 1) { print "FAIL: record " id "/" seq " twice"; bad = 1 }
    if ((id in last) && seq <= last[id]) { print "FAIL: record " id "/" seq " after " last[id]; bad = 1 }
    last[id] = seq; total[id]++ }
  END { split("1 2 3 101 102 103 50", ids, " ")
    for (k in ids) if (total[ids[k]] != n) { print "FAIL: writer " ids[k] ": " total[ids[k]] + 0 " records of " n; bad = 1 }
    for (id in total) if (!(id == 1 || id == 2 || id == 3 || id == 101 || id == 102 || id == 103 || id == 50)) {
      print "FAIL: records of writer " id; bad = 1 }
    exit bad }' "$log"
if command -v python3 >/dev/null 2>&1; then
  python3 -c 'import json, sys
n = sum(1 for line in open(sys.argv[1], encoding="utf-8") if line.startswith("{") and json.loads(line))
sys.exit(0 if n == 3 * int(sys.argv[2]) else "%d JSON lines, not %d" % (n, 3 * int(sys.argv[2])))' "$log" $N
fi

# Two copies of the library in one process (libforklog.a linked, libforklog.so loaded with dlopen), both on one log,
# each thread writing through both in turn, direct and buffered: every record once, in order, and the segment file
# removed once both copies closed.
"$cc" -I"$inc" "$src/interop_two_copies.c" -o two "$a" -pthread -ldl
for mode in direct buffered; do
  ./two "$so" "$work/two-$mode.log" $mode || fail "two copies in one process, $mode: status $?"
  [ ! -e "$work/.two-$mode.log.forklog" ] || fail "two copies in one process, $mode: the segment file was left"
  awk '{ if (!match($0, /^I id=[0-9]+ seq=[0-9]+ \|[a-z]+$/)) { print "FAIL: " $0; bad = 1; next }
    split($0, f, /[ =|]+/); id = f[3] + 0; seq = f[5] + 0
    if ((id in last) && seq != last[id] + 1) { print "FAIL: record " id "/" seq " after " last[id]; bad = 1 }
    if (!(id in last) && seq != 0) { print "FAIL: writer " id " begins at " seq; bad = 1 }
    if (!(id in total)) ids++
    last[id] = seq; total[id]++ }
    END { if (total[1] != 2000 || total[2] != 2000 || total[11] != 2000 || total[12] != 2000 || ids != 4) {
      print "FAIL: records per writer: " total[1] + 0, total[2] + 0, total[11] + 0, total[12] + 0; bad = 1 }
      exit bad }' "$work/two-$mode.log" || fail "two copies in one process, $mode"
done
echo "interop builds OK: $(wc -l <"$log") records from 4 builds and forklog(1); two copies in one process"
