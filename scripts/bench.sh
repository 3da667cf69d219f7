#!/usr/bin/env bash
# Scan throughput benchmark (not part of the tests): kappa against a raw
# consumer on the same broker in the same run; prints records/s and the ratio.
#   scripts/bench.sh [--records N] [--partitions P]
# KAPPA_BENCH_PROFILE=release (default) or dev. The test broker (nisshi) is
# itself slow (see docs/testbed.md), so the ratio here says whether kappa
# keeps up with the broker, not kappa's own ceiling.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$KAPPA_ROOT"
bash scripts/install-deps.sh
bash scripts/install-broker.sh
bin=$(bench_gateway_bin)
brokers=$(bash scripts/broker.sh start 0)
trap 'bash "$KAPPA_ROOT/scripts/broker.sh" stop "${brokers##*:}"' EXIT
"$KAPPA_VENV/bin/python" scripts/bench_scan.py --brokers "$brokers" --gateway-bin "$bin" "$@"
