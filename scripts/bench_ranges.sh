#!/usr/bin/env bash
# Range-scan benchmark (not part of the tests): point lookups, a 1% _timestamp
# range and ORDER BY _offset DESC LIMIT 100 against a full scan of the same
# topic, in one run on a fresh broker; prints the ratios and records fetched.
#   scripts/bench_ranges.sh [--records N] [--partitions P] [--runs R]
# KAPPA_BENCH_PROFILE=release (default) or dev; KAPPA_GATEWAY_BIN=PATH runs
# that gateway binary instead of building one.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$KAPPA_ROOT"
bash scripts/install-deps.sh
bash scripts/install-broker.sh
bin=$(bench_gateway_bin)
brokers=$(bash scripts/broker.sh start 0)
trap 'bash "$KAPPA_ROOT/scripts/broker.sh" stop "${brokers##*:}"' EXIT
"$KAPPA_VENV/bin/python" scripts/bench_ranges.py --brokers "$brokers" --gateway-bin "$bin" "$@"
