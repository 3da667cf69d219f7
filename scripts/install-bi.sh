#!/usr/bin/env bash
# Installs what the BI-tool tests (tests/bi) need: Debian's chromium and chromium-driver for the
# headless screenshots, and a second Python virtual environment, $KAPPA_BI_VENV, with Apache
# Superset, flightsql-dbapi (they pin SQLAlchemy < 2, so they cannot share the main venv) and
# kappa's Superset engine spec (deploy/superset).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

apt_install chromium chromium-driver python3 python3-venv
ensure_venv "$KAPPA_BI_VENV" "$KAPPA_ROOT/scripts/requirements-bi.txt" \
  "$KAPPA_ROOT"/deploy/superset/{pyproject.toml,kappa_superset.py}
log "bi deps: ready"
