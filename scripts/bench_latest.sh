#!/usr/bin/env bash
# Changelog benchmark (not part of the tests): K keys updated U times each, most of it tiered
# into Delta Lake by kappa-compactor, the rest in Kafka; times `SELECT * FROM latest(t)` against
# a full scan plus GROUP BY _key over the same table (the same run), prints the ratio and the
# rows read from each tier.
#   scripts/bench_latest.sh [--keys K] [--updates U] [--partitions P] [--runs R]
# KAPPA_BENCH_PROFILE=release (default) or dev; KAPPA_GATEWAY_BIN=PATH and
# KAPPA_COMPACTOR_BIN=PATH run those binaries instead of building them.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_on_broker --with-compactor scripts/bench_latest.py "$@"
