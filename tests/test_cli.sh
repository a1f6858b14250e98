#!/bin/sh
# SPDX-License-Identifier: MIT
# forklog(1), the command-line tool, end to end. Each case is one ctest entry, cli_<case>; every failure case
# checks the exit status, the exact message on stderr, and that nothing reached the file.
# Usage: test_cli.sh FORKLOG_PROGRAM CASE       exit 0: passed, 77: skipped (said why), anything else: failed
set -u
bin=$1 case=$2
unset FORKLOG_LEVEL # the default minimum level (info) unless a case sets it
work=$(mktemp -d /tmp/forklog-cli-XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1

fail() {
    echo "FAIL cli_$case: $*" >&2
    exit 1
}
skip() {
    echo "SKIP cli_$case: $*"
    exit 77
}

# run STATUS COMMAND...: runs COMMAND (stdout to $work/out, stderr to $work/err) and checks its exit status.
run() {
    want=$1
    shift
    "$@" >"$work/out" 2>"$work/err"
    got=$?
    [ "$got" -eq "$want" ] || fail "'$*' exited $got, not $want; stderr: $(cat "$work/err")"
}
# stderr_is TEXT: what the last run printed on stderr, exactly.
stderr_is() {
    [ "$(cat "$work/err")" = "$1" ] || fail "stderr was '$(cat "$work/err")', not '$1'"
}
absent() {
    [ ! -e "$1" ] || fail "$1 exists; nothing should have been created"
}
# empty_file FILE: FILE exists and holds nothing.
empty_file() {
    [ -f "$1" ] && [ ! -s "$1" ]
}
# lines_are FILE N: FILE holds exactly N lines and ends with a newline.
lines_are() {
    n=$(wc -l <"$1")
    [ "$n" -eq "$2" ] || fail "$1 has $n lines, not $2"
    [ ! -s "$1" ] || [ "$(tail -c 1 "$1" | od -An -c | tr -d ' ')" = '\n' ] || fail "$1 does not end with a newline"
}
# message_of FILE N: the message of text record N (the part after "TIME LEVEL pid=PID ").
message_of() {
    sed -n "${2}s/^[0-9T:.-]*Z [A-Z]* pid=[0-9]* //p" "$1"
}
# The time of a text record; written without {n}, which not every awk knows.
d='[0-9]'
ts="$d$d$d$d-$d$d-$d${d}T$d$d:$d$d:$d${d}[.]$d$d$d$d$d${d}Z"
# record_is FILE N LEVEL MESSAGE: text record N, whole.
record_is() {
    line=$(sed -n "${2}p" "$1")
    printf '%s\n' "$line" | grep -Eq "^$ts $3 pid=[0-9]+ " ||
        fail "record $2 of $1 has no '$3' prefix: '$line'"
    [ "$(message_of "$1" "$2")" = "$4" ] || fail "record $2 of $1 is '$line', not '... $4'"
}

case $case in
usage)
    run 2 "$bin"
    stderr_is "forklog: missing command: append or flush (see forklog --help)"
    run 2 "$bin" bogus x.log hello
    stderr_is "forklog: unknown command 'bogus': append or flush (see forklog --help)"
    run 2 "$bin" --bogus
    stderr_is "forklog: unknown option '--bogus' (see forklog --help)"
    run 2 "$bin" append -x x.log hello
    stderr_is "forklog: append: unknown option '-x' (see forklog --help)"
    run 2 "$bin" append --bogus x.log hello
    stderr_is "forklog: append: unknown option '--bogus' (see forklog --help)"
    run 2 "$bin" append -l loud x.log hello
    stderr_is "forklog: append: unknown level 'loud' (debug, info, warn or error)"
    run 2 "$bin" append --level= x.log hello
    stderr_is "forklog: append: unknown level '' (debug, info, warn or error)"
    run 2 "$bin" append -l
    stderr_is "forklog: append: option '-l' needs a value"
    run 2 "$bin" append --json=1 x.log hello
    stderr_is "forklog: append: option '--json' takes no value"
    # An unknown option in a cluster, after a long option: the message is about the cluster, not the option.
    run 2 "$bin" append --json -xy x.log hello
    stderr_is "forklog: append: unknown option '-x' (see forklog --help)"
    run 2 "$bin" append --level=warn -jx x.log hello
    stderr_is "forklog: append: unknown option '-j' (see forklog --help)"
    run 2 "$bin" append "" hello
    stderr_is "forklog: append: FILE is empty (see forklog --help)"
    run 2 "$bin" flush --json x.log
    stderr_is "forklog: flush: unknown option '--json' (see forklog --help)"
    run 2 "$bin" flush x.log extra
    stderr_is "forklog: flush: unexpected argument 'extra' (see forklog --help)"
    absent x.log
    # Missing FILE: nothing at all may appear in the current directory.
    mkdir empty || fail "mkdir"
    cd empty || fail "cd"
    run 2 "$bin" append
    stderr_is "forklog: append: missing FILE (see forklog --help)"
    run 2 "$bin" append -l warn --json
    stderr_is "forklog: append: missing FILE (see forklog --help)"
    run 2 "$bin" flush
    stderr_is "forklog: flush: missing FILE (see forklog --help)"
    [ -z "$(ls -A)" ] || fail "files appeared: $(ls -A)"
    ;;
open_errors)
    run 1 "$bin" append "$work/no/such/dir/x.log" hello
    stderr_is "forklog: cannot open $work/no/such/dir/x.log: No such file or directory"
    echo hello >input
    run 1 "$bin" append "$work/no/such/dir/x.log" <input
    stderr_is "forklog: cannot open $work/no/such/dir/x.log: No such file or directory"
    run 1 "$bin" flush "$work/no/x.log"
    stderr_is "forklog: cannot open $work/no/x.log: No such file or directory"
    absent "$work/no"
    mkdir adir
    run 1 "$bin" append adir hello
    stderr_is "forklog: cannot open adir: Is a directory"
    [ -z "$(ls -A adir)" ] || fail "adir is not empty"
    # A FIFO without a reader: at once, with the reason that ENXIO's own text does not give.
    mkfifo ff || fail "mkfifo"
    run 1 timeout 10 "$bin" append ff hello
    stderr_is "forklog: cannot open ff: No such device or address ($work/ff is a FIFO that no process has open for reading; forklog does not wait for a reader)"
    ;;
permission)
    # Root may write anywhere: the case needs a process without that power.
    [ "$(id -u)" -eq 0 ] || skip "needs root, to run forklog as the unprivileged user nobody"
    if command -v setpriv >/dev/null; then
        as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
    elif id nobody >/dev/null 2>&1; then
        # su runs a shell: quote each word for it.
        as_nobody() {
            cmd=""
            for w in "$@"; do cmd="$cmd '$w'"; done
            su nobody -s /bin/sh -c "$cmd"
        }
    else
        skip "neither setpriv nor a user nobody"
    fi
    chmod 755 "$work"
    as_nobody "$bin" --version >/dev/null 2>&1 || skip "nobody cannot run $bin (a folder on its path is closed)"
    echo before >ro.log
    chmod 644 ro.log
    run 1 as_nobody "$bin" append ro.log hello
    stderr_is "forklog: cannot open ro.log: Permission denied"
    echo hello >input
    run 1 as_nobody "$bin" append --json ro.log <input
    stderr_is "forklog: cannot open ro.log: Permission denied"
    [ "$(cat ro.log)" = before ] || fail "ro.log changed: $(cat ro.log)"
    run 1 as_nobody "$bin" append "$work/new.log" hello
    stderr_is "forklog: cannot open $work/new.log: Permission denied"
    absent new.log
    # A log anybody may write, in a folder where nobody may create the segment file: the library says which file.
    mkdir closed && echo before >closed/w.log && chmod 666 closed/w.log
    run 1 as_nobody "$bin" append closed/w.log hello
    stderr_is "forklog: cannot open closed/w.log: Permission denied (cannot create the log's segment file $work/closed/.w.log.forklog: Permission denied (the log's first user makes it in the log's directory; FORKLOG_PRIVATE needs no file there))"
    [ "$(cat closed/w.log)" = before ] || fail "closed/w.log changed: $(cat closed/w.log)"
    ;;
help_version)
    for opt in --help -h "append --help" "append -h" "flush --help"; do
        # shellcheck disable=SC2086 # the words of $opt are separate arguments
        run 0 "$bin" $opt
        stderr_is ""
        head -n 1 out | grep -q '^Usage: forklog append \[-l LEVEL\] \[--json\] FILE \[MESSAGE\.\.\.\]$' ||
            fail "'$opt' printed: $(cat out)"
        grep -q 'forklog flush FILE' out || fail "'$opt' does not show flush"
        grep -q '^Exit status: 0 ok; 1 ' out || fail "'$opt' does not show the exit status"
    done
    run 0 "$bin" --version
    stderr_is ""
    grep -Eqx 'forklog [0-9]+\.[0-9]+\.[0-9]+' out || fail "--version printed '$(cat out)'"
    [ "$(wc -l <out)" -eq 1 ] || fail "--version printed more than one line"
    if [ -w /dev/full ]; then
        "$bin" --help >/dev/full 2>err
        [ $? -eq 1 ] || fail "--help to a full disk did not exit 1"
        stderr_is "forklog: cannot write to standard output: No space left on device"
    fi
    ;;
closed_fds)
    # Started with a standard descriptor closed (a daemon, a cron wrapper): a closed stdout is no place help or
    # the version was written to, a closed stdin is no empty input (exit status 1, the log not created), and the
    # log never takes descriptor 0, 1 or 2.
    for opt in --help --version "append --help"; do
        # shellcheck disable=SC2086 # the words of $opt are separate arguments
        "$bin" $opt >&- 2>err
        [ $? -eq 1 ] || fail "'$opt' with stdout closed did not exit 1"
        stderr_is "forklog: cannot write to standard output: Bad file descriptor"
    done
    "$bin" append x.log <&- >out 2>err
    [ $? -eq 1 ] || fail "append with stdin closed did not exit 1"
    stderr_is "forklog: cannot read standard input: Bad file descriptor"
    absent x.log
    run 0 "$bin" append x.log words <&-
    "$bin" append x.log more words >&- 2>&-
    [ $? -eq 0 ] || fail "append of words with stdout and stderr closed did not exit 0"
    lines_are x.log 2
    record_is x.log 1 INFO "words"
    record_is x.log 2 INFO "more words"
    # A FILE that names a closed standard descriptor (/dev/stdout, /proc/self/fd/N) is no log: what the tool holds
    # its place with reaches nobody, so a record "written" there is lost. Refused, exit status 1.
    "$bin" append /dev/stdout hello >&- 2>err
    [ $? -eq 1 ] || fail "append to /dev/stdout with stdout closed did not exit 1"
    stderr_is "forklog: cannot open /dev/stdout: Bad file descriptor (standard output is closed)"
    "$bin" append /proc/self/fd/0 hello <&- >out 2>err
    [ $? -eq 1 ] || fail "append to /proc/self/fd/0 with stdin closed did not exit 1"
    stderr_is "forklog: cannot open /proc/self/fd/0: Bad file descriptor (standard input is closed)"
    "$bin" flush /dev/stdout >&- 2>err
    [ $? -eq 1 ] || fail "flush of /dev/stdout with stdout closed did not exit 1"
    stderr_is "forklog: cannot open /dev/stdout: Bad file descriptor (standard output is closed)"
    "$bin" append /dev/stderr hello 2>&-
    [ $? -eq 1 ] || fail "append to /dev/stderr with stderr closed did not exit 1"
    # /dev/null itself, named, is a log like any other, whatever is closed.
    "$bin" append /dev/null hello >&- 2>err
    [ $? -eq 0 ] || fail "append to /dev/null with stdout closed did not exit 0: $(cat err)"
    lines_are x.log 2
    ;;
words)
    run 0 "$bin" append x.log hello
    run 0 "$bin" append x.log "  two  spaces " kept -x -- --json "" end
    run 0 "$bin" append -l warn x.log careful
    run 0 "$bin" append --level=ERROR x.log broken
    run 0 "$bin" append -l Info -- x.log info again
    run 0 "$bin" append x.log ""
    stderr_is ""
    [ ! -s out ] || fail "append printed on stdout: $(cat out)"
    lines_are x.log 6
    record_is x.log 1 INFO "hello"
    record_is x.log 2 INFO "  two  spaces  kept -x -- --json  end"
    record_is x.log 3 WARN "careful"
    record_is x.log 4 ERROR "broken"
    record_is x.log 5 INFO "info again"
    record_is x.log 6 INFO ""
    ;;
stdin)
    # Several lines: an empty one, a 100 KiB one, and a last one without its newline.
    head -c 102400 /dev/zero | tr '\0' 'a' >long
    { printf 'first line\n\n\tindented\n' && cat long && printf '\nlast without newline'; } >input
    run 0 "$bin" append x.log <input
    stderr_is ""
    lines_are x.log 5
    record_is x.log 1 INFO "first line"
    record_is x.log 2 INFO ""
    record_is x.log 3 INFO '\tindented'
    [ "$(message_of x.log 4)" = "$(cat long)" ] || fail "the 100 KiB line did not come back whole"
    record_is x.log 5 INFO "last without newline"
    # The level applies to every line; an empty input writes nothing.
    printf 'one\ntwo\n' >input
    run 0 "$bin" append -l error x.log <input
    lines_are x.log 7
    record_is x.log 6 ERROR one
    record_is x.log 7 ERROR two
    run 0 "$bin" append empty.log </dev/null
    empty_file empty.log || fail "an empty input wrote to empty.log"
    # A NUL byte ends the line's record, with a warning that says how much of the line was left out.
    printf 'a\000bc\nd\n' >input
    run 0 "$bin" append nul.log <input
    stderr_is "forklog: warning: nul.log: line 1 cut at a NUL byte (3 bytes dropped)"
    lines_are nul.log 2
    record_is nul.log 1 INFO a
    record_is nul.log 2 INFO d
    ;;
stdin_is_the_log)
    # Standard input that is the log itself (a regular file or a pipe, by any name: a hard link, /dev/stdin) would
    # give append its own records back as lines, each written again, for ever: the file grows until the disk is full.
    # Refused, as cat(1) refuses "input file is output file", with nothing written. The file size limit and the
    # timeout bound a tool that loops.
    command -v timeout >/dev/null || skip "timeout(1) is needed to bound a tool that loops"
    echo seed >x.log
    ln x.log link.log
    for name in x.log link.log; do
        (ulimit -f 2048 && exec timeout 20 "$bin" append "$name" <x.log) >out 2>err
        got=$?
        [ "$got" -eq 1 ] || fail "append $name <x.log exited $got, not 1; stderr: $(cat err)"
        stderr_is "forklog: cannot append to $name: standard input is that file (its own records would come back as lines for ever)"
        [ "$(cat x.log)" = seed ] || fail "append $name <x.log wrote to x.log"
    done
    echo line | (ulimit -f 2048 && exec timeout 20 "$bin" append /dev/stdin) >out 2>err
    got=$?
    [ "$got" -eq 1 ] || fail "append /dev/stdin from a pipe exited $got, not 1; stderr: $(cat err)"
    stderr_is "forklog: cannot append to /dev/stdin: standard input is that file (its own records would come back as lines for ever)"
    # A message given as words reads no input: the same file as stdin is then no loop.
    run 0 "$bin" append x.log words <x.log
    lines_are x.log 2
    record_is x.log 2 INFO words
    ;;
cut)
    # Longer than the log's largest record (1 MiB by default): written cut, with a warning, and still status 0.
    head -c 1200000 /dev/zero | tr '\0' 'b' >huge
    { echo before && cat huge && echo && echo after; } >input
    run 0 "$bin" append x.log <input
    grep -Eqx "forklog: warning: x.log: line 2 cut by [0-9]+ bytes to fit the log's largest record" err ||
        fail "no warning for the cut line: $(cat err)"
    cut=$(sed 's/.* cut by \([0-9]*\) bytes.*/\1/' err)
    lines_are x.log 3
    record_is x.log 1 INFO before
    record_is x.log 3 INFO after
    sed -n 2p x.log | grep -q " \[forklog: $cut bytes cut\]$" || fail "record 2 has no marker for $cut bytes"
    len=$(sed -n 2p x.log | wc -c)
    if [ "$len" -gt 1048576 ] || [ "$len" -lt 1000000 ]; then
        fail "record 2 is $len bytes long, not about 1 MiB"
    fi
    # One argument may not pass 128 KiB (MAX_ARG_STRLEN): ten words of 120,000 bytes make the long message.
    word=$(head -c 120000 huge)
    run 0 "$bin" append y.log "$word" "$word" "$word" "$word" "$word" "$word" "$word" "$word" "$word" "$word"
    grep -Eqx "forklog: warning: y.log: message cut by [0-9]+ bytes to fit the log's largest record" err ||
        fail "no warning for the cut message: $(cat err)"
    lines_are y.log 1
    ;;
levels)
    # -l sets the record's level; the log's minimum level stays the default, info: debug records are dropped.
    run 0 "$bin" append -l debug x.log not written
    stderr_is ""
    printf 'a\nb\n' >input
    run 0 "$bin" append -l DEBUG --json x.log <input
    stderr_is ""
    empty_file x.log || fail "debug records were written: $(cat x.log)"
    run 0 "$bin" append -l info x.log written
    lines_are x.log 1
    record_is x.log 1 INFO written
    # The log's minimum level comes from FORKLOG_LEVEL when it is set; `warning` names warn, as there.
    FORKLOG_LEVEL=debug run 0 "$bin" append -l debug x.log shown
    FORKLOG_LEVEL=error run 0 "$bin" append -l warning x.log hidden
    lines_are x.log 2
    record_is x.log 2 DEBUG shown
    ;;
json)
    command -v python3 >/dev/null || skip "python3 is needed to parse the JSON records"
    run 0 "$bin" append --json x.log say '"hi"' 'back\slash'
    printf 'tab\there\nbad \377 byte\nlast' >input
    run 0 "$bin" append --json -l warn x.log <input
    stderr_is ""
    lines_are x.log 4
    python3 - x.log <<'EOF' || fail "the JSON records are not what was sent: $(cat x.log)"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
want = [("info", 'say "hi" back\\slash'), ("warn", "tab\there"), ("warn", "bad \ufffd byte"), ("warn", "last")]
assert [(r["level"], r["msg"]) for r in recs] == want, recs
assert all(set(r) >= {"ts", "level", "pid", "msg"} and isinstance(r["pid"], int) for r in recs), recs
EOF
    ;;
write_error)
    # A record that cannot be written: status 1, the reason, and nothing of the record in the file. From stdin,
    # the lines after a failed one are still read (and tried), then a summary says how many were lost.
    if [ -w /dev/full ]; then
        run 1 "$bin" append /dev/full hello
        stderr_is "forklog: cannot write to /dev/full: No space left on device"
        printf 'one\ntwo\nthree\n' >input
        run 1 "$bin" append /dev/full <input
        stderr_is "forklog: cannot write to /dev/full: No space left on device
forklog: /dev/full: 3 of 3 records not written"
    fi
    # Past RLIMIT_FSIZE (EFBIG; SIGXFSZ would kill a tool that did not ignore it). The log starts 100 bytes short
    # of the 4 MiB limit, so the limit leaves room for whatever else the library writes at open.
    head -c $((4194304 - 101)) /dev/zero | tr '\0' 'c' >x.log
    echo >>x.log
    msg=$(head -c 400 /dev/zero | tr '\0' 'c')
    printf '%s\n%s\n%s\n' "$msg" "$msg" "$msg" >input
    (ulimit -f 8192 && exec "$bin" append x.log "$msg") >out 2>err
    [ $? -eq 1 ] || fail "a record past the file size limit did not exit 1: $(cat err)"
    stderr_is "forklog: cannot write to x.log: File too large"
    (ulimit -f 8192 && exec "$bin" append x.log <input) >out 2>err
    [ $? -eq 1 ] || fail "records past the file size limit did not exit 1: $(cat err)"
    stderr_is "forklog: cannot write to x.log: File too large
forklog: x.log: 3 of 3 records not written"
    [ "$(wc -c <x.log)" -eq $((4194304 - 100)) ] || fail "x.log grew to $(wc -c <x.log) bytes"
    lines_are x.log 1
    ;;
pipe)
    # A log that is a pipe whose reader went away: the first record that cannot be written ends append (status 1),
    # which stops reading its input: `yes` upstream then ends too. Without that, this pipeline would never end.
    command -v timeout >/dev/null || skip "timeout(1) is needed to bound the pipeline"
    timeout 60 sh -c '
        yes | { "$1" append /dev/stdout 2>"$2/err"; echo $? >"$2/status"; } | head -n 1 >"$2/first"' sh "$bin" "$work"
    [ $? -eq 0 ] || fail "the pipeline did not end within 60 s"
    [ "$(cat status)" -eq 1 ] || fail "append exited $(cat status), not 1"
    stderr_is "forklog: cannot write to /dev/stdout: Broken pipe"
    grep -Eqx "$ts INFO pid=[0-9]+ y" first || fail "the first record was '$(cat first)'"
    ;;
std_socket)
    # Standard output or error that is a socket (a systemd service's stream to the journal): /dev/stdout and
    # /dev/stderr cannot be opened again by name, so the descriptor itself is the log. Every line arrives whole,
    # in order; a socket at a path in the file system is still refused.
    command -v python3 >/dev/null || skip "python3 is needed to give forklog a socket"
    python3 - "$bin" "$work" <<'PY' || fail "see above"
import socket, subprocess, sys, threading
bin, work = sys.argv[1], sys.argv[2]
def run(args, stdin=b"", fd=1):
    a, b = socket.socketpair()
    out = {"stdout": a} if fd == 1 else {"stderr": a, "stdout": subprocess.DEVNULL}
    p = subprocess.Popen([bin] + args, stdin=subprocess.PIPE, **out,
                         **({"stderr": subprocess.PIPE} if fd == 1 else {}))
    a.close()
    chunks = []
    def drain():
        while chunk := b.recv(65536):
            chunks.append(chunk)
    reader = threading.Thread(target=drain)
    reader.start()
    err = p.communicate(stdin, timeout=60)[1] or b""
    reader.join(60)
    return p.returncode, err, b"".join(chunks)
rc, err, got = run(["append", "/dev/stdout", "hello", "socket"])
assert rc == 0 and err == b"", (rc, err)
assert got.endswith(b" INFO pid=%d hello socket\n" % int(got.split(b"pid=")[1].split()[0])) and got.count(b"\n") == 1, got
lines = b"".join(b"line %d %s\n" % (i, b"x" * (i * 37 % 3000)) for i in range(2000))
rc, err, got = run(["append", "/dev/stdout"], lines)
assert rc == 0 and err == b"", (rc, err)
recs = got.split(b"\n")
assert recs[-1] == b"" and len(recs) == 2001, len(recs)
for i, r in enumerate(recs[:-1]):
    assert r.endswith(b" line %d %s" % (i, b"x" * (i * 37 % 3000))), (i, r[:80])
rc, err, got = run(["append", "--json", "/dev/stderr", "to", "stderr"], fd=2)
assert rc == 0 and got.startswith(b'{"ts":') and got.endswith(b'"msg":"to stderr"}\n'), (rc, got)
rc, err, got = run(["flush", "/dev/stdout"])
assert rc == 0 and err == b"" and got == b"", (rc, err, got)
s = socket.socket(socket.AF_UNIX)
s.bind(work + "/sock")
p = subprocess.run([bin, "append", work + "/sock", "x"], capture_output=True, timeout=60)
assert p.returncode == 1 and b"is a unix socket" in p.stderr, p
PY
    ;;
read_error)
    # Standard input that fails in the middle of a line (here with EAGAIN: a pipe that the process that made it
    # left non-blocking, whose writer sent "one\ntw" and waits): the part of the line read so far is not a record,
    # whose end never came, as with a stop signal. The whole line before it is; the status is 1, with the reason.
    command -v python3 >/dev/null || skip "python3 is needed to give forklog a non-blocking pipe"
    python3 - "$bin" append x.log >out 2>err <<'PY'
import os, subprocess, sys
r, w = os.pipe2(os.O_NONBLOCK)
os.write(w, b"one\ntw")
rc = subprocess.run(sys.argv[1:], stdin=r, timeout=60).returncode
os.close(w)
sys.exit(rc if rc >= 0 else 128 - rc)
PY
    got=$?
    [ $got -eq 1 ] || fail "append exited $got, not 1; stderr: $(cat err)"
    # glibc's getline() gives back the part of the line it read when read(2) fails, musl's drops it: the warning
    # comes only where there is something to drop.
    error="forklog: cannot read standard input: Resource temporarily unavailable"
    [ "$(cat err)" = "$error" ] ||
        stderr_is "forklog: warning: x.log: line 2 not written: standard input failed before its end (2 bytes dropped)
$error"
    lines_are x.log 1
    record_is x.log 1 INFO one
    ;;
stop)
    # SIGTERM while append waits for input: it ends between records, with every record whole and the log closed
    # (its segment file removed), and dies of the signal (status 143).
    mkfifo in || fail "mkfifo"
    { echo one && exec sleep 60; } >in 2>/dev/null &
    feeder=$!
    "$bin" append x.log <in 2>err &
    pid=$!
    i=0
    while [ ! -s x.log ] && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -TERM $pid
    wait $pid
    got=$?
    kill $feeder 2>/dev/null
    [ $got -eq 143 ] || fail "append exited $got, not 143 (SIGTERM); stderr: $(cat err)"
    stderr_is ""
    lines_are x.log 1
    record_is x.log 1 INFO one
    absent .x.log.forklog
    ;;
stop_midline)
    # SIGTERM while append waits for the end of a line: the part of the line read so far is not a record (its
    # end never came), so the log holds the whole lines only, and a warning says what was left out.
    mkfifo in || fail "mkfifo"
    { printf 'one\ntw' && exec sleep 60; } >in 2>/dev/null &
    feeder=$!
    "$bin" append x.log <in 2>err &
    pid=$!
    i=0
    while [ ! -s x.log ] && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    sleep 0.2 # append now waits in read(2) for the rest of "tw"
    kill -TERM $pid
    wait $pid
    got=$?
    kill $feeder 2>/dev/null
    [ $got -eq 143 ] || fail "append exited $got, not 143 (SIGTERM); stderr: $(cat err)"
    # glibc's getline() gives back the part of the line it read when read(2) fails, musl's drops it: the warning
    # comes only where there is something to drop.
    [ ! -s err ] || stderr_is "forklog: warning: x.log: line 2 not written: append was stopped before its end (2 bytes dropped)"
    lines_are x.log 1
    record_is x.log 1 INFO one
    ;;
stop_reading)
    # SIGTERM while append is busy reading (here a 100 MB line that streams in faster than append takes it), not
    # waiting in read(2): the signal interrupts no read, so append must not go on to wait for more input. The
    # writer then keeps the pipe open without writing for 60 s; append must end long before that.
    mkfifo in || fail "mkfifo"
    { dd if=/dev/zero bs=1048576 count=100 2>/dev/null && exec sleep 60; } >in &
    feeder=$!
    "$bin" append x.log <in 2>err &
    pid=$!
    (sleep 30 && kill -KILL $pid) >/dev/null 2>&1 &
    watchdog=$!
    # The signal comes once append has read 10 MB, so that it is in the middle of the stream.
    i=0
    while [ ! -r "/proc/$pid/io" ] && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    [ -r "/proc/$pid/io" ] || skip "/proc/PID/io cannot be read"
    while r=$(sed -n 's/^rchar: //p' "/proc/$pid/io" 2>/dev/null) && [ "${r:-0}" -lt 10000000 ]; do :; done
    start=$(date +%s)
    kill -TERM $pid
    wait $pid
    got=$?
    took=$(($(date +%s) - start))
    kill $watchdog $feeder 2>/dev/null
    [ $got -eq 143 ] || fail "append exited $got, not 143 (SIGTERM) after $took s; stderr: $(cat err)"
    [ $took -lt 10 ] || fail "append took $took s to end after SIGTERM"
    empty_file x.log || fail "the cut line was written: $(head -c 200 x.log)"
    ;;
stop_blocked_write)
    # SIGTERM while a record's write waits for a FIFO's reader that does not read: the write is finished first,
    # so append goes on waiting; a second SIGTERM ends it at once (status 143).
    mkfifo ff || fail "mkfifo"
    # The reader opens the FIFO read-write, which does not wait for a writer, and holds it before append opens it:
    # append's open does not wait for a reader (ENXIO without one), and a reader still on its way to open() under
    # load made append fail at once, never to block.
    sleep 60 <>ff &
    reader=$!
    i=0
    until [ "$(readlink "/proc/$reader/fd/0" 2>/dev/null)" = "$work/ff" ]; do
        [ $i -lt 200 ] || { kill $reader; fail "the reader never opened the FIFO"; }
        sleep 0.05
        i=$((i + 1))
    done
    yes | "$bin" append ff 2>err &
    pid=$!
    (sleep 30 && kill -KILL $pid) >/dev/null 2>&1 &
    watchdog=$!
    # Blocked once the FIFO's 64 KiB are full: the process sleeps in the kernel's pipe write.
    i=0
    while [ "$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null)" != S ] ||
        ! grep -q pipe_write "/proc/$pid/wchan" 2>/dev/null; do
        if [ $i -ge 100 ]; then
            named=0
            [ -r "/proc/$pid/wchan" ] && named=1
            kill -KILL $pid $watchdog $reader 2>/dev/null
            [ $named -eq 0 ] || skip "/proc/PID/wchan does not name pipe_write"
            fail "append never blocked; stderr: $(cat err)"
        fi
        sleep 0.1
        i=$((i + 1))
    done
    kill -TERM $pid
    sleep 1
    kill -0 $pid 2>/dev/null || fail "append ended at the first SIGTERM with its write unfinished"
    start=$(date +%s)
    kill -TERM $pid
    wait $pid
    got=$?
    took=$(($(date +%s) - start))
    kill $watchdog $reader 2>/dev/null
    [ $got -eq 143 ] || fail "append exited $got, not 143 (SIGTERM) after $took s; stderr: $(cat err)"
    [ $took -lt 10 ] || fail "append took $took s to end after the second SIGTERM"
    ;;
nomem)
    # A line that does not fit in memory: status 1 and the reason, not the end of the input taken for granted.
    (ulimit -v 100000 && exec "$bin" --version) >/dev/null 2>&1 ||
        skip "$bin cannot start with 100 MB of address space (a sanitizer build)"
    { echo first && head -c 150000000 /dev/zero | tr '\0' a && echo && echo after; } |
        (ulimit -v 100000 && exec "$bin" append x.log) >out 2>err
    [ $? -eq 1 ] || fail "append exited $?, not 1: $(cat err)"
    stderr_is "forklog: cannot read standard input: Cannot allocate memory"
    lines_are x.log 1
    record_is x.log 1 INFO first
    ;;
flush)
    run 0 "$bin" append x.log hello
    cp x.log before
    run 0 "$bin" flush x.log
    stderr_is ""
    cmp -s x.log before || fail "flush changed a log that has no buffer"
    run 0 "$bin" flush new.log
    empty_file new.log || fail "flush of a new log wrote to it"
    ;;
concurrent)
    # 8 writers at once, each fed 2,000 lines of its own through a pipe, into one file. Lines differ in length
    # (0..299 bytes of padding, a letter per writer) so a torn or interleaved record cannot look whole.
    writers=8 lines=2000 pids=""
    w=0
    while [ $w -lt $writers ]; do
        awk -v w=$w -v n=$lines 'BEGIN {
            c = substr("abcdefgh", w + 1, 1); pad = c
            while (length(pad) < 300) pad = pad pad
            for (i = 1; i <= n; i++) printf "w=%d n=%d %s\n", w, i, substr(pad, 1, (i * 37) % 300)
        }' | "$bin" append x.log 2>"err.$w" &
        pids="$pids $!"
        w=$((w + 1))
    done
    w=0
    for pid in $pids; do
        wait "$pid" || fail "writer $w exited $?: $(cat "err.$w")"
        [ ! -s "err.$w" ] || fail "writer $w said: $(cat "err.$w")"
        w=$((w + 1))
    done
    lines_are x.log $((writers * lines))
    awk -v writers=$writers -v lines=$lines -v ts="$ts" '
        function bad(why) { printf "line %d: %s: %.200s\n", NR, why, $0; failed = 1; exit 1 }
        {
            if ($0 !~ "^" ts " INFO pid=[0-9]+ w=[0-7] n=[0-9]+ [a-h]*$")
                bad("not a whole record")
            w = substr($4, 3) + 0; n = substr($5, 3) + 0; pad = $6
            if (n != next_n[w] + 1) bad("writer " w " line " n " after line " next_n[w])
            next_n[w] = n
            if (w in pid && pid[w] != $3) bad("writer " w " under two pids")
            pid[w] = $3
            if (length(pad) != (n * 37) % 300) bad("padding of " length(pad) " bytes")
            if (pad != "" && pad !~ "^" substr("abcdefgh", w + 1, 1) "+$") bad("padding of another writer")
        }
        END {
            if (failed) exit 1
            for (w = 0; w < writers; w++)
                if (next_n[w] != lines) { printf "writer %d: %d lines, not %d\n", w, next_n[w], lines; exit 1 }
        }' x.log >check || fail "$(cat check)"
    ;;
*)
    fail "no such case"
    ;;
esac
echo "cli_$case: passed"
