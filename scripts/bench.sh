#!/usr/bin/env bash
# Scan throughput benchmark (not part of the tests): kappa against a raw
# consumer on the same broker in the same run; prints records/s and the ratio.
#   scripts/bench.sh [--records N] [--partitions P]
# KAPPA_BENCH_PROFILE=release (default) or dev. The test broker (nisshi) is
# itself slow (see docs/testbed.md), so the ratio here says whether kappa
# keeps up with the broker, not kappa's own ceiling.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$KAPPA_ROOT"
profile="${KAPPA_BENCH_PROFILE:-release}"
bash scripts/install-deps.sh
bash scripts/install-broker.sh
if [[ "$profile" == release ]]; then
  cargo build --locked --release --bin kappa-gateway
  bin="$CARGO_TARGET_DIR/release/kappa-gateway"
else
  cargo build --locked --bin kappa-gateway
  bin="$CARGO_TARGET_DIR/debug/kappa-gateway"
fi
brokers=$(bash scripts/broker.sh start 0)
trap 'bash "$KAPPA_ROOT/scripts/broker.sh" stop "${brokers##*:}"' EXIT
"$KAPPA_VENV/bin/python" scripts/bench_scan.py --brokers "$brokers" --gateway-bin "$bin" "$@"
