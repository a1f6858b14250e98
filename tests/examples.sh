#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs one program of examples/ and checks what it printed and the log it wrote. One ctest entry per case
# (example_<case>). Usage: examples.sh CASE PROGRAM_OR_DIR [BUILD_DIR]
#   prefork   PROGRAM   the pre-fork HTTP server: one whole record per request
#   pool      PROGRAM   the timing pool: one record per job, whatever the job did
#   stdout    PROGRAM   logging to stdout (forklog_open_fd): a pipe, a file, a stream and a datagram socket
#   logrotate PROGRAM   the real logrotate with its own state file and the example's configuration (nocreate),
#                       rotating 5 times under 4 writers: no record lost, duplicated or split, every file
#                       created by the program with its mode
#   cmake     SRC_DIR BUILD_DIR   examples/cmake-consumer built against a temporary install prefix
#   demo      PROGRAM BUILD_DIR   the README's demo, with its log in BUILD_DIR; a SIGTERM leaves none of its
#                                 processes behind
set -eu
case=$1 prog=$2
work=$(mktemp -d /tmp/forklog-example-XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL example_$case: $*" >&2; exit 1; }
# whole FILE...: every line is a whole text record.
whole() {
  bad=$(cat "$@" | grep -cvE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{15}Z (DEBUG|INFO|WARN|ERROR) pid=[0-9]+ ' || true)
  [ "$bad" -eq 0 ] || fail "$bad lines are not whole records"
}
# pid_file FILE: waits up to 5 s for the program to write its pid file.
pid_file() {
  i=0
  while [ ! -s "$1" ]; do
    i=$((i + 1)); [ "$i" -lt 500 ] || fail "no pid file $1"
    sleep 0.01
  done
}
# gone PID...: each process ends within 3 s; any left is killed, and the case fails.
gone() {
  i=0
  for p in "$@"; do
    while kill -0 "$p" 2>/dev/null; do
      i=$((i + 1)); [ "$i" -lt 300 ] || { kill -KILL "$@" 2>/dev/null || true; fail "process $p still runs"; }
      sleep 0.01
    done
  done
}

case $case in
prefork)
  st=0; "$prog" "$work/access.log" 4 300 >"$work/out" || st=$?
  cat "$work/out"
  [ "$st" -eq 0 ] || fail "exit status $st"
  grep -qx 'OK: 300 requests, 300 records' "$work/out" || fail "unexpected output"
  test "$(grep -c ' GET /item/' "$work/access.log")" -eq 300 || fail "not 300 request records"
  whole "$work/access.log"
  # A second run on the same log, which it appends to, checks its own records only.
  "$prog" "$work/access.log" 2 50 >"$work/out2" || { cat "$work/out2"; fail "second run on the same log"; }
  grep -qx 'OK: 50 requests, 50 records' "$work/out2" || fail "second run: $(cat "$work/out2")"
  test "$(grep -c ' GET /item/' "$work/access.log")" -eq 350 || fail "not 350 request records after two runs"
  # Two runs at once on one log: each counts its own records, not the other's.
  "$prog" "$work/both.log" 2 500 >"$work/both1" 2>&1 & other=$!
  st=0; "$prog" "$work/both.log" 2 500 >"$work/both2" 2>&1 || st=$?
  wait "$other" || fail "two runs at once: the first failed: $(tail -n 1 "$work/both1")"
  [ "$st" -eq 0 ] || fail "two runs at once: the second failed: $(tail -n 1 "$work/both2")"
  grep -qx 'OK: 500 requests, 500 records' "$work/both1" || fail "two runs at once: $(cat "$work/both1")"
  test "$(grep -c ' GET /item/' "$work/both.log")" -eq 1000 || fail "two runs at once: not 1000 request records"
  # Every record fails (/dev/full: ENOSPC): each request is answered 500, not 200, and the program fails.
  if [ -w /dev/full ]; then
    st=0; timeout -k 5 30 "$prog" /dev/full 2 5 >"$work/full.out" 2>"$work/full.err" || st=$?
    [ "$st" -eq 1 ] || fail "/dev/full: exit status $st"
    test "$(grep -c 'the record failed: No space left on device; answered 500' "$work/full.err")" -eq 5 ||
      fail "/dev/full: not 5 requests answered 500: $(cat "$work/full.err")"
  fi
  # SIGTERM to the parent alone, in the middle of its requests: it stops and reaps every worker (none is left
  # holding the port), and fails.
  "$prog" "$work/term.log" 3 100000000 >"$work/term.out" 2>&1 &
  app=$!
  i=0
  until [ "$(cat "$work/term.log" 2>/dev/null | grep -c ' GET /item/')" -ge 100 ]; do
    i=$((i + 1)); [ "$i" -lt 500 ] || fail "SIGTERM: no request served"
    sleep 0.01
  done
  kill -TERM "$app"
  st=0; wait "$app" || st=$?
  gone $(sed -n 's/.* pid=\([0-9]*\) GET .*/\1/p' "$work/term.log" | sort -u)
  [ "$st" -ne 0 ] || fail "SIGTERM: exit status 0"
  grep -q 'stopped by a signal after' "$work/term.out" || fail "SIGTERM: $(cat "$work/term.out")"
  ;;
pool)
  st=0; "$prog" "$work/jobs.log" >"$work/out" || st=$?
  cat "$work/out"
  [ "$st" -eq 0 ] || fail "exit status $st"
  grep -qx 'OK: 37 ok, 1 failed, 1 crashed, 1 timeout, 41 records' "$work/out" || fail "unexpected output"
  whole "$work/jobs.log"
  # A second run on the same log, which it appends to, checks its own records only.
  "$prog" "$work/jobs.log" >"$work/out2" || { cat "$work/out2"; fail "second run on the same log"; }
  grep -qx 'OK: 37 ok, 1 failed, 1 crashed, 1 timeout, 41 records' "$work/out2" || fail "second run: unexpected output"
  test "$(wc -l <"$work/jobs.log")" -eq 82 || fail "not 82 records after two runs"
  # Two runs at once on one log: each counts its own records, not the other's.
  "$prog" "$work/both.log" >"$work/both1" 2>&1 & other=$!
  st=0; "$prog" "$work/both.log" >"$work/both2" 2>&1 || st=$?
  wait "$other" || fail "two runs at once: the first failed: $(tail -n 1 "$work/both1")"
  [ "$st" -eq 0 ] || fail "two runs at once: the second failed: $(tail -n 1 "$work/both2")"
  grep -qx 'OK: 37 ok, 1 failed, 1 crashed, 1 timeout, 41 records' "$work/both2" || fail "two runs at once: $(cat "$work/both2")"
  test "$(wc -l <"$work/both.log")" -eq 82 || fail "two runs at once: not 82 records"
  ;;
stdout)
  # A pipe: 1 + 4 * 25 + 1 whole records, 25 per worker, each worker record 64 KiB (more than PIPE_BUF, so that
  # only the lock keeps it whole), and the program's exit status 0.
  { st=0; "$prog" 4 25 65536 || st=$?; echo "$st" >"$work/pipe.rc"; } | cat >"$work/pipe.out"
  [ "$(cat "$work/pipe.rc")" -eq 0 ] || fail "exit status $(cat "$work/pipe.rc") through a pipe"
  test "$(wc -l <"$work/pipe.out")" -eq 102 || fail "$(wc -l <"$work/pipe.out") lines through a pipe, 102 expected"
  whole "$work/pipe.out"
  for w in 0 1 2 3; do
    test "$(grep -c " worker $w record " "$work/pipe.out")" -eq 25 || fail "worker $w: not 25 records"
  done
  test "$(grep ' worker ' "$work/pipe.out" | sed 's/^.* pid=[0-9]* //' | awk 'length($0) != 65536' | wc -l)" -eq 0 ||
    fail "worker records through a pipe that are not 65536 bytes"
  # A reader that goes away: records fail with -EPIPE, the workers stop, and the program fails.
  { st=0; "$prog" 4 100000 2>"$work/epipe.err" || st=$?; echo "$st" >"$work/epipe.rc"; } | head -n 1 >/dev/null
  [ "$(cat "$work/epipe.rc")" -ne 0 ] || fail "exit status 0 after the reader went away"
  grep -q 'Broken pipe' "$work/epipe.err" || fail "no broken pipe reported: $(cat "$work/epipe.err")"
  # A regular file.
  "$prog" 2 10 >"$work/file.out"
  test "$(wc -l <"$work/file.out")" -eq 22 || fail "not 22 lines in a file"
  whole "$work/file.out"
  # A unix stream socket (systemd's journal, some runtimes) and a datagram socket: 2 + 2 * 50 whole records,
  # nothing on stderr.
  if command -v python3 >/dev/null; then
    python3 - "$prog" "$work" <<'PY'
import re, socket, subprocess, sys
prog, work = sys.argv[1], sys.argv[2]
record = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]{15}Z INFO pid=\d+ ")
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    a, b = socket.socketpair(socket.AF_UNIX, kind)
    p = subprocess.Popen([prog, "2", "50"], stdout=b, stderr=subprocess.PIPE)
    b.close()
    a.settimeout(30)
    data = b""
    while True:
        if kind == socket.SOCK_DGRAM and data.count(b"\n") == 102:
            break
        chunk = a.recv(65536)
        if not chunk:
            break
        if kind == socket.SOCK_DGRAM and (not chunk.endswith(b"\n") or chunk.count(b"\n") != 1):
            sys.exit("FAIL example_stdout: a datagram is not one record: %r" % chunk[:80])
        data += chunk
    err = p.communicate(timeout=30)[1].decode()
    lines = data.decode().splitlines()
    bad = [l for l in lines if not record.match(l)]
    if p.returncode != 0 or len(lines) != 102 or bad or err:
        sys.exit("FAIL example_stdout: %s: rc %d, %d lines, %d not records, stderr %r"
                 % (kind.name, p.returncode, len(lines), len(bad), err))
    for w in (0, 1):
        if sum(" worker %d record " % w in l for l in lines) != 50:
            sys.exit("FAIL example_stdout: %s: worker %d: not 50 records" % (kind.name, w))
PY
  fi
  head -n 3 "$work/pipe.out" | cut -c 1-100
  ;;
logrotate)
  # SIGHUP sent as fast as possible while the pid file exists, through the program's shutdown (a postrotate that
  # read the pid file just before it ends): the handler must never run on a handle being closed.
  for n in 1 2 3; do
    "$prog" "$work/h.log" "$work/h.pid" 0.3 1 >"$work/h.out" &
    app=$!
    pid_file "$work/h.pid"
    while [ -e "$work/h.pid" ] && kill -HUP "$app" 2>/dev/null; do :; done
    wait "$app" || fail "SIGHUP during shutdown: exit status $?"
  done
  # SIGTERM to the parent alone (a service stop): it ends within seconds, and so does every worker, each after
  # its `done` record; the pid file is gone.
  "$prog" "$work/t.log" "$work/t.pid" 60 3 >"$work/t.out" &
  app=$!
  ( sleep 10 && kill -KILL "$app" ) >/dev/null 2>&1 &
  dog=$!
  i=0
  until [ -s "$work/t.pid" ] && [ "$(grep -c ' seq ' "$work/t.log" 2>/dev/null)" -ge 30 ]; do
    i=$((i + 1)); [ "$i" -lt 500 ] || fail "no pid file or no records"
    sleep 0.01
  done
  kill -TERM "$app"
  st=0; wait "$app" || st=$?
  kill "$dog" 2>/dev/null || true
  gone $(sed -n 's/.* pid=\([0-9]*\) worker .*/\1/p' "$work/t.log" | sort -u)
  [ "$st" -eq 0 ] || fail "SIGTERM: exit status $st: $(cat "$work/t.out")"
  [ ! -e "$work/t.pid" ] || fail "SIGTERM: the pid file is left"
  grep -qx '3 workers done, stopped by a signal' "$work/t.out" || fail "SIGTERM: $(cat "$work/t.out")"
  test "$(grep -c ' worker [0-2] done after ' "$work/t.log")" -eq 3 || fail "SIGTERM: not 3 done records"
  # Started with SIGCHLD ignored (waitpid() then has no status to give): it still ends, and ends well.
  if env --ignore-signal=CHLD true 2>/dev/null; then
    timeout 20 env --ignore-signal=CHLD "$prog" "$work/c.log" "$work/c.pid" 0.2 2 >"$work/c.out" ||
      fail "SIGCHLD ignored: exit status $?"
  fi
  command -v logrotate >/dev/null || { echo "SKIP: logrotate is not installed"; exit 77; }
  src=$3
  log=$work/app.log pid=$work/app.pid
  # The example's configuration, with this folder's paths, forced rotations and no compression.
  sed -e "s|/var/log/app/app.log|$log|" -e "s|/run/app.pid|$pid|g" \
      -e '/^ *daily$/d' -e '/compress$/d' -e 's|rotate 14|rotate 20|' "$src/examples/logrotate.conf" >"$work/lr.conf"
  grep -q '^ *nocreate$' "$work/lr.conf" || fail "the example's configuration has no nocreate"
  chmod 0644 "$work/lr.conf"
  # 8 s of writing: the 5 rotations must all happen while the program runs, since with nocreate only the
  # program makes the next app.log; they take about 2.5 s, more on a loaded machine.
  "$prog" "$log" "$pid" 8 4 >"$work/out" &
  app=$!
  pid_file "$pid"
  for n in 1 2 3 4 5; do
    sleep 0.4
    # The program's first record after the last signal created the new app.log.
    i=0
    until [ -s "$log" ]; do
      i=$((i + 1)); [ "$i" -lt 1000 ] || fail "no new app.log 10 s after rotation $((n - 1))"
      sleep 0.01
    done
    kill -0 "$app" 2>/dev/null || fail "the program ended before rotation $n: $(cat "$work/out")"
    logrotate -f -s "$work/state" "$work/lr.conf" || fail "logrotate failed"
  done
  wait "$app" || fail "the example failed: $(cat "$work/out")"
  cat "$work/out"
  files=$(ls "$log" "$log".* | wc -l)
  [ "$files" -ge 6 ] || fail "only $files files: logrotate did not rotate 5 times"
  whole "$log" "$log".*
  # Every file was created by the program (nocreate), with the mode of its forklog_options.
  for f in "$log" "$log".*; do
    [ "$(stat -c %a "$f")" = 640 ] || fail "$f has mode $(stat -c %a "$f"), not 640"
  done
  # Per worker: seq 0 .. N-1 each exactly once, and one `done after N records`.
  cat "$log" "$log".* | awk '
    / worker [0-9]+ seq [0-9]+$/ { seen[$(NF-2) ":" $NF]++; next }
    / worker [0-9]+ done after [0-9]+ records$/ { done[$(NF-4)] = $(NF-1); next }
    { print "unexpected record: " $0; bad = 1 }
    END {
      n = 0
      for (w in done) {
        n++
        for (s = 0; s < done[w]; s++)
          if (seen[w ":" s] != 1) { print "worker " w " seq " s ": " seen[w ":" s] + 0 " times"; bad = 1 }
        total += done[w]
      }
      if (n != 4) { print n " workers done, 4 expected"; bad = 1 }
      printf "%d records in %s files, every one once\n", total, ARGV_FILES
      exit bad
    }' ARGV_FILES="$files" || fail "records lost or duplicated"
  ;;
demo)
  # The README's demo, its log in the build folder (replaced at each run): its exit status, and its own check.
  log=$3/example_demo.log
  rm -f "$log"
  st=0; "$prog" -w 4 -n 50 -o "$log" >"$work/out" || st=$?
  cat "$work/out"
  [ "$st" -eq 0 ] || fail "exit status $st"
  grep -qx 'log check: OK (101 records)' "$work/out" || fail "unexpected output"
  # Two runs at once on one log: each checks and shows its own records, not the other's.
  "$prog" -w 4 -n 2000 -o "$work/both.log" >"$work/both1" 2>&1 & other=$!
  st=0; "$prog" -w 4 -n 2000 -o "$work/both.log" >"$work/both2" 2>&1 || st=$?
  wait "$other" || fail "two runs at once: the first failed: $(head -n 3 "$work/both1")"
  [ "$st" -eq 0 ] || fail "two runs at once: the second failed: $(head -n 3 "$work/both2")"
  for f in "$work/both1" "$work/both2"; do
    grep -qx 'log check: OK (4001 records)' "$f" || fail "two runs at once: $(head -n 8 "$f")"
    # The records shown are lines of the log, and this run's: the summary is the demo's own.
    grep '^    ' "$f" | sed 's/^    //' | while IFS= read -r line; do
      grep -qxF "$line" "$work/both.log" || { echo "not a line of the log: $line"; exit 1; }
    done || fail "two runs at once: a record shown is not in the log"
    [ "$(grep -c "^    .* pid=$(sed -n 's/^    .* pid=\([0-9]*\) pool summary .*/\1/p' "$f") " "$f")" -eq 3 ] ||
      fail "two runs at once: the task and summary records shown are not all this run's: $(cat "$f")"
  done
  test "$(wc -l <"$work/both.log")" -eq 8002 || fail "two runs at once: not 8002 records"
  # SIGTERM to the demo in the middle of its requests: its server child and its pool's workers end with it.
  "$prog" -w 4 -n 1000000 -o "$work/term.log" >"$work/term.out" 2>&1 &
  app=$!
  i=0
  until [ "$(cat "$work/term.log" 2>/dev/null | grep -c ' request data')" -ge 100 ]; do
    i=$((i + 1)); [ "$i" -lt 1000 ] || { kill -KILL "$app"; fail "SIGTERM: no request made: $(cat "$work/term.out")"; }
    sleep 0.01
  done
  kids=$(cat /proc/"$app"/task/*/children 2>/dev/null || true)
  [ -n "$kids" ] || fail "SIGTERM: no child process of the demo seen"
  kill -TERM "$app"
  wait "$app" || true
  gone $kids
  ;;
cmake)
  src=$2 build=$3
  cmake --install "$build" --prefix "$work/prefix" >/dev/null
  cmake -S "$src/examples/cmake-consumer" -B "$work/b" -DCMAKE_PREFIX_PATH="$work/prefix" >"$work/cfg" 2>&1 ||
    { cat "$work/cfg"; fail "configure"; }
  cmake --build "$work/b" >"$work/bld" 2>&1 || { cat "$work/bld"; fail "build"; }
  st=0; "$work/b/hello_forklog" "$work/hello.log" >"$work/out" || st=$?
  cat "$work/out"
  [ "$st" -eq 0 ] || fail "exit status $st"
  grep -q 'forklog_LICENSE: MIT' "$work/cfg" || { cat "$work/cfg"; fail "find_package did not set forklog_LICENSE"; }
  test "$(wc -l <"$work/hello.log")" -eq 3 || fail "not 3 records"
  whole "$work/hello.log"
  # Records that fail (/dev/full: ENOSPC) are not counted, and fail the program.
  if [ -w /dev/full ]; then
    ! "$work/b/hello_forklog" /dev/full >"$work/full.out" 2>/dev/null || fail "/dev/full: exit status 0"
    grep -q '^hello_forklog: 0 records in /dev/full ' "$work/full.out" || fail "/dev/full: $(cat "$work/full.out")"
  fi
  ;;
*)
  fail "unknown case"
  ;;
esac
echo "example_$case OK"
