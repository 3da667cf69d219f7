#!/usr/bin/env bash
# Tiering-speed benchmark on librdkafka's mock cluster (not part of the tests):
# `kappa-compactor run --once --tier-after 0s` into a fresh lake against
# `kcat -C -e -o beginning` dumping the same topic to /dev/null, in the same
# run; checks that every record was tiered, prints records/s, the ratio, the
# compactor's peak RSS and its commits.
#   scripts/bench_compactor.sh [--records N] [--partitions P] [--runs R]
#                              [--max-records-per-commit N]... [--value-bytes B] [--perf FILE]
# KAPPA_BENCH_PROFILE=release (default) or dev; KAPPA_COMPACTOR_BIN=PATH runs
# that compactor binary instead of building one. The mock cluster is built in
# the same profile (a release build of kappa-catalog's dev-dependencies takes a
# while); KAPPA_MOCK_BIN=PATH runs an already-built one instead.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$KAPPA_ROOT"
bash scripts/install-deps.sh
ensure_kcat
bin=$(bench_compactor_bin)
mock=$(bench_mock_bin)
"$KAPPA_VENV/bin/python" scripts/bench_compactor.py --compactor-bin "$bin" --mock-bin "$mock" "$@"
