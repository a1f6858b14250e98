#!/bin/sh
# SPDX-License-Identifier: MIT
# The threaded tests under ThreadSanitizer (clang): configures and builds BUILD_DIR (default build-tsan) with
# -fsanitize=thread, then runs each test that starts threads with tests/tsan.supp; fails if a test fails or TSan
# reports anything. About a minute on 2 cores. Settings (environment): BUILD_DIR, CC (default clang), TESTS.
#   - tests/tsan_criterion_shim.c, preloaded, lets Criterion's arena be mapped at all under TSan (see there);
#   - die_after_fork=0: the tests fork from threaded processes, and the children start threads (TSan only warns
#     that it cannot vouch for a child's own locks: the library's are process-shared and the tests check the files);
#   - the library sleeps on its lock with pthread_mutex_timedlock() in this build (lib/lock.c, FL__TSAN);
#   - test_pool is left out: its memlock test needs mlockall(), which the sanitizers' runtimes turn into a no-op.
set -eu
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-tsan}
case $build in /*) ;; *) build=$PWD/$build ;; esac
cc=${CC:-clang}
tests=${TESTS:-"test_fields test_ring test_combine test_hostile test_stress test_core test_crash test_targets test_format_internal"}
cmake -S . -B "$build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS="-fsanitize=thread -g -O1" \
  -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread -DFORKLOG_BUILD_TESTS=ON \
  -DFORKLOG_BUILD_BENCH=OFF -DFORKLOG_BUILD_EXAMPLES=OFF >/dev/null
# shellcheck disable=SC2086
cmake --build "$build" -j "$(nproc)" --target $tests
"$cc" -shared -fPIC -O1 -o "$build/tsan_criterion_shim.so" tests/tsan_criterion_shim.c -ldl
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
failed=0
for t in $tests; do
  start=$(date +%s)
  if ! LD_PRELOAD="$build/tsan_criterion_shim.so" \
    TSAN_OPTIONS="die_after_fork=0 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp log_path=$reports/$t" \
    "$build/tests/$t" --jobs 2 --timeout 120 >"$reports/$t.out" 2>&1; then
    tail -n 20 "$reports/$t.out"
    failed=1
  fi
  n=$(cat "$reports/$t".[0-9]* 2>/dev/null | grep -c '^WARNING: ThreadSanitizer' || true)
  printf '%s: %s, %s TSan reports, %ss\n' "$t" "$(grep Synthesis "$reports/$t.out" || echo 'no synthesis')" "$n" \
    "$(($(date +%s) - start))"
  if [ "$n" -gt 0 ]; then
    cat "$reports/$t".[0-9]*
    failed=1
  fi
done
exit $failed
