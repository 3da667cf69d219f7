#!/usr/bin/env bash
# Lake-tier benchmark (not part of the tests): N records tiered into Delta Lake by
# kappa-compactor, then a full scan, a filtered aggregate and a one-partition offset
# range read through kappa (ADBC) and through DuckDB in-process over the same Delta
# table; prints both times, their ratio and the row counts. The full scan is also read from a bare
# pyarrow.flight server streaming the same files (scripts/flight_floor.py): the transfer floor.
#   scripts/bench_union.sh [--records N] [--partitions P] [--runs R] [--lake DIR]
# KAPPA_BENCH_PROFILE=release (default) or dev; KAPPA_GATEWAY_BIN=PATH and
# KAPPA_COMPACTOR_BIN=PATH run those binaries instead of building them.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_on_broker --with-compactor scripts/bench_union.py "$@"
