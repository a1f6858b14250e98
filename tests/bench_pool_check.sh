#!/bin/sh
# SPDX-License-Identifier: MIT
# forklog_bench_pool's check of a run's log (-c FILE) passes a whole file and fails on a task record lost, repeated
# or torn, on a missing summary and on a last record without its newline: counting lines let all but the last pass.
# usage: bench_pool_check.sh FORKLOG_BENCH_POOL
set -u
bench=$1
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
ts=2026-12-06T01:03:40.806540Z
task() { printf '%s INFO pid=28364 task task=%s status=ok cost=0.000383669 worker=28365 code=0 signal=0 start=%s\n' "$ts" "$1" "$ts"; }
summary() { printf '%s INFO pid=28364 pool summary tasks=4 ok=4 failed=0 crashed=0 timeout=0 not_run=0 workers=2 wall=0.2 min=0.00000003 p50=0.000368927 p95=0.2 p99=0.2 max=0.2 mean=0.025401522 tasks_per_s=39.64398963890455\n' "$ts"; }
fail=0
expect() { # expect 0|2 NAME: the check of $dir/f.log exits so
  "$bench" -c "$dir/f.log" -n 4 >"$dir/out" 2>&1
  rc=$?
  if [ "$rc" != "$1" ]; then
    echo "FAIL: $2: the check exited $rc, expected $1: $(cat "$dir/out")"
    fail=1
  fi
}
{ task 0; task 2; task 1; task 3; summary; } >"$dir/f.log"
expect 0 "a whole file"
{ task 0; task 2; task 3; summary; } >"$dir/f.log"
expect 2 "a task record lost"
{ task 0; task 2; task 1; task 1; task 3; summary; } >"$dir/f.log"
expect 2 "a task record repeated"
{ task 0; task 2 | head -c 40; task 1; task 2 | tail -c +41; task 3; summary; } >"$dir/f.log"
expect 2 "a task record torn by another"
{ task 0; task 2; task 1; task 3; } >"$dir/f.log"
expect 2 "no summary"
{ task 0; task 2; task 1; task 3; summary | head -c 100; } >"$dir/f.log"
expect 2 "the summary cut"
{ task 0; task 2; task 1; task 3; summary; } | head -c -1 >"$dir/f.log"
expect 2 "the last newline lost"
[ "$fail" = 0 ] && echo "bench_pool_check: every broken file was caught"
exit "$fail"
