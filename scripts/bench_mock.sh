#!/usr/bin/env bash
# Scan-speed benchmark on librdkafka's mock cluster (not part of the tests):
# kappa's full scans through ADBC against `kcat -C -e -o beginning` and a
# confluent-kafka consumer building a pandas DataFrame, on the same topic in
# the same run; prints records/s, the ratios and the gateway's peak RSS.
#   scripts/bench_mock.sh [--records N] [--partitions P] [--runs R]
# KAPPA_BENCH_PROFILE=release (default) or dev; KAPPA_GATEWAY_BIN=PATH runs
# that gateway binary instead of building one.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$KAPPA_ROOT"
bash scripts/install-deps.sh
if ! command -v kcat >/dev/null; then
  log "apt: installing kcat (the raw-consume baseline)"
  $(command -v sudo || true) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kcat >/dev/null
fi
bin=$(bench_gateway_bin)
profile="${KAPPA_BENCH_PROFILE:-release}"
flag=$([[ "$profile" == release ]] && echo --release || true)
log "building the mock cluster ($profile)"
cargo build --locked $flag -p kappa-catalog --example mock_cluster >&2
target_profile=$([[ "$profile" == release ]] && echo release || echo debug)
"$KAPPA_VENV/bin/python" scripts/bench_mock.py --gateway-bin "$bin" \
  --mock-bin "$CARGO_TARGET_DIR/$target_profile/examples/mock_cluster" "$@"
