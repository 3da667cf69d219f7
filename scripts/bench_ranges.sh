#!/usr/bin/env bash
# Range-scan benchmark (not part of the tests): point lookups, a 1% _timestamp
# range and ORDER BY _offset DESC LIMIT 100 against a full scan of the same
# topic, in one run on a fresh broker; prints the ratios and records fetched.
#   scripts/bench_ranges.sh [--records N] [--partitions P] [--runs R]
# KAPPA_BENCH_PROFILE=release (default) or dev; KAPPA_GATEWAY_BIN=PATH runs
# that gateway binary instead of building one.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_on_broker scripts/bench_ranges.py "$@"
