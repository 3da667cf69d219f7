#!/usr/bin/env bash
# Scan-speed benchmark on librdkafka's mock cluster (not part of the tests):
# kappa's full scans through ADBC against `kcat -C -e -o beginning` and a
# confluent-kafka consumer building a pandas DataFrame, on the same topic in
# the same run; prints records/s, the ratios and the gateway's peak RSS.
#   scripts/bench_mock.sh [--records N] [--partitions P] [--runs R]
# KAPPA_BENCH_PROFILE=release (default) or dev; KAPPA_GATEWAY_BIN=PATH runs
# that gateway binary instead of building one, KAPPA_MOCK_BIN=PATH that mock cluster.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$KAPPA_ROOT"
bash scripts/install-deps.sh
ensure_kcat
bin=$(bench_gateway_bin)
mock=$(bench_mock_bin)
"$KAPPA_VENV/bin/python" scripts/bench_mock.py --gateway-bin "$bin" --mock-bin "$mock" "$@"
