#!/bin/sh
# SPDX-License-Identifier: MIT
# A real log shipper reads forklog's files without loss. Two private rsyslog daemons on 127.0.0.1, each with its
# own configuration, TCP port (chosen free), work directory and pid file, run in the foreground and are killed by
# this script: the first tails a JSON Lines log with imfile (inotify mode) and forwards every line over TCP
# (omfwd) to the second, the "central" one (imtcp), which writes each message, as it came, to a file. While
# shipper_writer's 8 processes write, the log is rotated by rename at least 20 times:
#   rotate  forklog's own size-based rotation (rotate_bytes 64 KiB, rotate_keep 1000: about 30 renames, a file
#           every ~0.1 s, each renaming the whole chain). The writers keep pace with the shipper: before each
#           record, a worker waits while the records written outnumber the lines in the central file by MAX_LAG
#           or more. imfile is then never more than MAX_LAG + WORKERS - 1 = 39 records behind the writers, fewer
#           than any 64 KiB file holds (a record has at most 1,603 bytes), so it has opened each file at the name
#           before the file is renamed, and read it to its end through that descriptor before it is renamed
#           again. imfile (8.2302, inotify) further behind, as on a loaded machine, loses records of the files it
#           had not reached or finished by then (whole files when it is stopped for 0.5 s every second and the
#           bound is 128). A worker that waited 30 s without a new line in the central file stops the waiting of
#           all of them, and the check names what is missing;
#   reopen  logrotate every ~0.1 s (22 times) with `nocreate`, `rotate 2` and forklog_reopen() on SIGHUP in
#           postrotate: the writers' next record creates the new file. The oldest kept file is copied aside for
#           the check before logrotate deletes it; the deleted files free inode numbers that new files then
#           reuse, as on a real host;
#   create  the same with logrotate's `create` instead of `nocreate`. Not a ctest entry: it loses records (one
#           in a hundred, more on a loaded machine), since imfile (8.2302, inotify) closes the renamed file as
#           soon as logrotate creates the new one, before the signal; the records written in between are never
#           read. The check names them.
# Then the central file must hold every record exactly once, whole, as valid JSON. Each worker ends with a
# `done` record that says how many it wrote; the source files must hold exactly those, once each.
# Usage: shipper_rsyslog.sh rotate|reopen|create SHIPPER_WRITER
# Exit 77 (skipped) only when rsyslogd is not installed or cannot run at all here.
set -eu
mode=$1 writer=$2
WORKERS=8 RECORDS=300 MAX_LAG=32
fail() { echo "FAIL shipper_$mode: $*" >&2; exit 1; }
case $mode in rotate | reopen | create) ;; *) fail "unknown mode" ;; esac
command -v rsyslogd >/dev/null || { echo "SKIP: rsyslogd is not installed (Debian: rsyslog)"; exit 77; }
command -v python3 >/dev/null || fail "python3 is needed to check the records"
[ "$mode" = rotate ] || command -v logrotate >/dev/null || fail "logrotate is needed for the $mode case"

work=$(mktemp -d /tmp/forklog-shipper-XXXXXX)
pids=""
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
mkdir -p "$work/log" "$work/spool1" "$work/spool2" "$work/old"
log=$work/log/app.log central=$work/central.log

# A free TCP port on 127.0.0.1.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# The central daemon: imtcp in, %msg% out. The forwarded line is `<PRI>TIMESTAMP HOST app: {json}`; rsyslog's
# parser keeps the space after the tag in the message, which %msg:2:$% leaves out. forklog's JSON has no control
# bytes (they are escaped), so rsyslog's escaping of control characters never changes a record.
cat >"$work/central.conf" <<CONF
global(workDirectory="$work/spool2" maxMessageSize="64k")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="$port" ruleset="store")
template(name="msgonly" type="string" string="%msg:2:\$%\n")
ruleset(name="store") {
  action(type="omfile" file="$central" template="msgonly" flushOnTXEnd="on" asyncWriting="off")
}
CONF

# The shipper on the host: imfile tails the log (inotify; a rotated file is read to its end through its open
# descriptor, and the new file at the name is picked up), omfwd forwards over TCP with a disk-assisted queue and
# retries for ever.
cat >"$work/shipper.conf" <<CONF
global(workDirectory="$work/spool1")
module(load="imfile" mode="inotify")
input(type="imfile" file="$log" tag="app:" severity="info" facility="local0"
      reopenOnTruncate="off" freshStartTail="off" ruleset="forward")
ruleset(name="forward") {
  action(type="omfwd" target="127.0.0.1" port="$port" protocol="tcp"
         queue.type="LinkedList" queue.size="100000" queue.filename="fwd" queue.saveOnShutdown="on"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}
CONF

for c in central shipper; do
  if ! rsyslogd -N1 -f "$work/$c.conf" >"$work/$c.check" 2>&1; then
    cat "$work/$c.check"
    grep -qi "could not load module\|not found" "$work/$c.check" && { echo "SKIP: rsyslog modules missing"; exit 77; }
    fail "rsyslogd rejects $c.conf"
  fi
done

rsyslogd -n -f "$work/central.conf" -i "$work/central.pid" >"$work/central.out" 2>&1 &
pids="$pids $!"
rsyslogd -n -f "$work/shipper.conf" -i "$work/shipper.pid" >"$work/shipper.out" 2>&1 &
pids="$pids $!"
# Both up: the central one listens, the shipper wrote its pid file.
i=0
until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null &&
      [ -s "$work/shipper.pid" ]; do
  i=$((i + 1))
  if [ "$i" -ge 100 ]; then
    cat "$work/central.out" "$work/shipper.out"
    echo "SKIP: rsyslogd did not start here"
    exit 77
  fi
  sleep 0.1
done

case $mode in
rotate)
  "$writer" rotate "$log" $WORKERS $RECORDS 10000 65536 "$central" $MAX_LAG || fail "the writer failed"
  ;;
reopen | create)
  if [ "$mode" = reopen ]; then newfile=nocreate; else newfile="create 0644"; fi
  cat >"$work/lr.conf" <<CONF
$log {
    rotate 2
    $newfile
    missingok
    nocompress
    postrotate
        kill -HUP \$(cat $work/writer.pid)
    endscript
}
CONF
  "$writer" reopen "$log" $WORKERS 15000 "$work/writer.pid" &
  wp=$!
  pids="$pids $wp"
  i=0
  while [ ! -s "$work/writer.pid" ]; do
    i=$((i + 1)); [ "$i" -lt 500 ] || fail "no writer pid file"
    sleep 0.01
  done
  for n in $(seq 1 22); do
    sleep 0.1
    # The log holds records again (with nocreate, the writers' first record after the signal created it).
    i=0
    until [ -s "$log" ]; do
      i=$((i + 1)); [ "$i" -lt 3000 ] || fail "rotation $n: no new $log after 30 s"
      sleep 0.01
    done
    # logrotate deletes log.2 now: nothing writes to it any more; keep its records for the check.
    [ ! -e "$log.2" ] || cp "$log.2" "$work/old/$n"
    logrotate -f -s "$work/lr.state" "$work/lr.conf" || fail "logrotate failed"
  done
  kill -TERM "$wp"
  wait "$wp" || fail "the writer failed"
  ;;
esac
files=$(ls "$log" "$log".* "$work"/old/* 2>/dev/null | wc -l)
[ "$files" -ge 21 ] || fail "only $files files: fewer than 20 rotations"
want=$(cat "$log" "$log".* "$work"/old/* 2>/dev/null | wc -l)
echo "shipper_$mode: $want records written into $files files"

# Delivery, bounded: until the central file holds every record, or has not grown for 10 s, at most 60 s.
i=0 last=-1 still=0
while :; do
  got=$(wc -l <"$central" 2>/dev/null || echo 0)
  [ "$got" -ge "$want" ] && break
  if [ "$got" -eq "$last" ]; then still=$((still + 1)); else still=0 last=$got; fi
  i=$((i + 1))
  if [ "$i" -ge 600 ] || [ "$still" -ge 100 ]; then
    echo "--- shipper"; cat "$work/shipper.out"; echo "--- central"; cat "$work/central.out"
    echo "shipper_$mode: $got of $want records delivered"
    break
  fi
  sleep 0.1
done
sleep 0.5 # a duplicate would come now

# With forklog's rotation, each worker writes RECORDS records; with logrotate, as many as it can until stopped.
expect=""
[ "$mode" != rotate ] || expect=$RECORDS
python3 - "$central" $WORKERS "$log" "$work/old" ${expect:+"$expect"} <<'PY' ||
import glob, json, os, sys
path, workers, log, old = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
records = int(sys.argv[5]) if len(sys.argv) > 5 else None
def key(r):
    if r["msg"] == "ship":
        assert r["level"] == "info" and set(r["pad"]) == {"x"}
        return (r["w"], r["seq"])
    assert r["msg"] == "done"
    return (r["w"], "done", r["n"])
def read(p):
    seen, bad = {}, 0
    with open(p, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        print("%s ends without a newline" % p); bad += 1
    for n, line in enumerate(data.splitlines(), 1):
        try:
            k = key(json.loads(line))
        except Exception as e:
            if bad < 5:
                print("%s line %d is not a whole record (%s): %r" % (p, n, e, line[:120]))
            bad += 1
            continue
        seen[k] = seen.get(k, 0) + 1
    return seen, bad
# The source files first: each worker's records 0 .. n-1 and its `done` record, once each, or the writer is at
# fault, not the shipper. `where` says which file holds a record, and how many records follow it there.
src, where, srcbad = {}, {}, []
for p in glob.glob(log) + glob.glob(log + ".*") + glob.glob(os.path.join(old, "*")):
    s, bad = read(p)
    if bad:
        srcbad.append("%s holds %d bad lines" % (p, bad))
    for k, v in s.items():
        src[k] = src.get(k, 0) + v
    lines = [key(json.loads(l)) for l in open(p, "rb").read().splitlines()]
    for i, k in enumerate(lines):
        where[k] = (os.path.relpath(p, os.path.dirname(os.path.dirname(log))), len(lines) - 1 - i)
done = {k[0]: k[2] for k in src if k[1] == "done"}
want = set((w, "done", done.get(w)) for w in range(workers))
want |= set((w, s) for w in range(workers) for s in range(done.get(w, 0)))
srcbad += ["%r %d times" % (k, v) for k, v in src.items() if v != 1]
srcbad += ["%r missing" % (k,) for k in want - set(src)] + ["%r unexpected" % (k,) for k in set(src) - want]
if records is not None:
    srcbad += ["worker %d wrote %r records, not %d" % (w, done.get(w), records)
               for w in range(workers) if done.get(w) != records]
seen, bad = read(path)
missing = sorted(want - set(seen), key=str)
extra = sorted(set(seen) - want, key=str)
dup = sorted((k for k, v in seen.items() if v > 1), key=str)
print("central: %d lines, %d distinct records of %d, %d missing, %d duplicated, %d unexpected, %d not whole JSON; "
      "source: %d problems" % (sum(seen.values()) + bad, len(seen), len(want), len(missing), len(dup), len(extra),
                               bad, len(srcbad)))
if srcbad:
    print("source, first problems: %r" % srcbad[:10])
if missing:
    print("missing, first ones (record, (file, records after it in that file)): %r"
          % [(k, where.get(k)) for k in missing[:10]])
if dup or extra:
    print("duplicated, first ones: %r; unexpected: %r" % (dup[:10], extra[:10]))
sys.exit(1 if missing or dup or extra or bad or srcbad else 0)
PY
  fail "the central file is not every record exactly once"
echo "shipper_$mode OK"
