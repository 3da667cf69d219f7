#!/usr/bin/env bash
# Changelog benchmark (not part of the tests): K keys updated U times each, all but the last
# --kafka-rounds updates of each key (default 1) tiered into Delta Lake by kappa-compactor, which
# also keeps the latest rows of the changelog table; times `SELECT * FROM latest(t)` (from those
# rows), latest() over the whole history, and a full scan plus GROUP BY _key of the same topic
# (the same run); prints the ratios and the rows read from each tier.
#   scripts/bench_latest.sh [--keys K] [--updates U] [--partitions P] [--kafka-rounds N] [--runs R]
# KAPPA_BENCH_PROFILE=release (default) or dev; KAPPA_GATEWAY_BIN=PATH and
# KAPPA_COMPACTOR_BIN=PATH run those binaries instead of building them.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_on_broker --with-compactor scripts/bench_latest.py "$@"
