#!/usr/bin/env bash
# Scan throughput benchmark (not part of the tests): kappa against a raw
# consumer on the same broker in the same run; prints records/s and the ratio.
#   scripts/bench.sh [--records N] [--partitions P]
# KAPPA_BENCH_PROFILE=release (default) or dev. The test broker (nisshi) is
# itself slow (see docs/testbed.md), so the ratio here says whether kappa
# keeps up with the broker, not kappa's own ceiling.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_on_broker scripts/bench_scan.py "$@"
