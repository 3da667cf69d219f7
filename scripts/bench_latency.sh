#!/usr/bin/env bash
# Small-query latency benchmark (not part of the tests): SELECT 1 and count(*) of
# 3,000 records through ADBC, beside a plain consumer's read of the same records,
# and 32 concurrent clients. KAPPA_BENCH_PROFILE / KAPPA_GATEWAY_BIN as in bench.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$KAPPA_ROOT"
bash scripts/install-deps.sh
bash scripts/install-broker.sh
bin=$(bench_gateway_bin)
brokers=$(bash scripts/broker.sh start 0)
trap 'bash "$KAPPA_ROOT/scripts/broker.sh" stop "${brokers##*:}"' EXIT
"$KAPPA_VENV/bin/python" scripts/bench_latency.py --brokers "$brokers" --gateway-bin "$bin" "$@"
