#!/bin/sh
# SPDX-License-Identifier: MIT
# Every dynamic symbol the shared library defines is public API: forklog_* (plus the version node).
set -eu
bad=$(nm -D --defined-only "$1" | awk '{print $3}' | grep -v -e '^forklog_' -e '^FORKLOG_' || true)
if [ -n "$bad" ]; then echo "unexpected exported symbols: $bad"; exit 1; fi
echo "exported symbols OK: $(nm -D --defined-only "$1" | grep -c ' T forklog_') functions"
