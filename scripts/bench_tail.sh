#!/usr/bin/env bash
# Streaming-query benchmark (not part of the tests): produce-to-client latency of
# tail() at a steady rate, sustained tail() throughput against a plain
# confluent-kafka consumer of the same topic in the same run, and the gateway's
# peak RSS while a slow client reads; on a fresh broker.
#   scripts/bench_tail.sh [--seconds S] [--rate R] [--records N] [--partitions P]
#                         [--slow-rate ROWS_PER_S] [--slow-records N] [--slow-value-bytes B]
# KAPPA_BENCH_PROFILE=release (default) or dev; KAPPA_GATEWAY_BIN=PATH runs
# that gateway binary instead of building one.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_on_broker scripts/bench_tail.py "$@"
