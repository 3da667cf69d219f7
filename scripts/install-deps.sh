#!/usr/bin/env bash
# Installs what building and testing kappa needs: Debian packages for rdkafka's C build,
# and a Python virtual environment with the real client libraries the tests use.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

apt_install build-essential pkg-config zlib1g-dev libssl-dev python3 python3-venv
ensure_venv "$KAPPA_VENV" "$KAPPA_ROOT/scripts/requirements.txt"
log "deps: ready"
