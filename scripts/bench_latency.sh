#!/usr/bin/env bash
# Small-query latency benchmark (not part of the tests): SELECT 1 and count(*) of
# 3,000 records through ADBC, beside a plain consumer's read of the same records,
# and 32 concurrent clients. KAPPA_BENCH_PROFILE / KAPPA_GATEWAY_BIN as in bench.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_on_broker scripts/bench_latency.py "$@"
