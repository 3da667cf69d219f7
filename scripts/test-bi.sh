#!/usr/bin/env bash
# Runs the BI-tool tests (tests/bi: flightsql-dbapi, and Apache Superset drawing a chart in headless
# Chromium) against the real gateway binary, in their own venv. Uses KAPPA_BROKERS when set (as
# scripts/test.sh sets it), else a throwaway broker; KAPPA_GATEWAY_BIN defaults to the debug build.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$KAPPA_ROOT"

bash scripts/install-bi.sh

export KAPPA_GATEWAY_BIN="${KAPPA_GATEWAY_BIN:-$CARGO_TARGET_DIR/debug/kappa-gateway}"
[[ -x "$KAPPA_GATEWAY_BIN" ]] || { log "no gateway binary at $KAPPA_GATEWAY_BIN: cargo build first"; exit 1; }
if [[ -z "${KAPPA_BROKERS:-}" ]]; then
  KAPPA_BROKERS=$(bash scripts/broker.sh start 0)
  trap 'bash "$KAPPA_ROOT/scripts/broker.sh" stop "${KAPPA_BROKERS##*:}"' EXIT
fi
export KAPPA_BROKERS

log "BI tool tests (broker $KAPPA_BROKERS)"
"$KAPPA_BI_VENV/bin/python" -m pytest -q -p no:cacheprovider tests/bi
