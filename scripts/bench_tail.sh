#!/usr/bin/env bash
# Streaming-query benchmark (not part of the tests): produce-to-client latency of
# tail() at a steady rate, sustained tail() throughput against a plain
# confluent-kafka consumer of the same topic in the same run, and the gateway's
# peak RSS while a slow client reads; on a fresh broker.
#   scripts/bench_tail.sh [--mock] [--seconds S] [--rate R] [--records N] [--partitions P]
#                         [--slow-rate ROWS_PER_S] [--slow-records N] [--slow-value-bytes B]
# --mock runs on librdkafka's mock cluster instead of the test broker, whose own
# delivery latency hides kappa's (the memory part is then left out: the mock
# cannot hold its backlog; give it --records 100000 or fewer).
# KAPPA_BENCH_PROFILE=release (default) or dev; KAPPA_GATEWAY_BIN=PATH runs
# that gateway binary instead of building one, KAPPA_MOCK_BIN=PATH that mock cluster.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ ${1:-} == --mock ]]; then
  shift
  cd "$KAPPA_ROOT"
  bash scripts/install-deps.sh
  "$KAPPA_VENV/bin/python" scripts/bench_tail.py --mock-bin "$(bench_mock_bin)" \
    --gateway-bin "$(bench_gateway_bin)" "$@"
else
  bench_on_broker scripts/bench_tail.py "$@"
fi
