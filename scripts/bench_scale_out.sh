#!/usr/bin/env bash
# Scale-out benchmark (not part of the tests): three gateways on this machine, one coordinating.
# Shows how the work spreads (records and bytes each task fetched, with three gateways) and what
# distribution costs: the same queries on one gateway and across three, medians and ratios.
#   scripts/bench_scale_out.sh [--records N] [--partitions P] [--runs R] [--tiered]
# --tiered: the compactor tiers the records into a lake first, so the large query reads the lake.
# KAPPA_BENCH_PROFILE=release (default) or dev; KAPPA_GATEWAY_BIN=PATH runs that binary.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_on_broker --with-compactor scripts/bench_scale_out.py "$@"
