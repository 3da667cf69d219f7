#!/usr/bin/env bash
# Runs every check and test kappa has, from a fresh machine: installs what is
# missing, lints, starts a throwaway broker, runs the Rust tests (unit and
# end-to-end) and the Python client tests against the real gateway binary.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$KAPPA_ROOT"
started=$(date +%s)

bash scripts/install-deps.sh
bash scripts/install-bi.sh
bash scripts/install-broker.sh
# The image and compose tests (tests/python/test_image.py, test_compose.py): Debian's docker-compose
# runs the stack; scripts/image.sh, which the tests run, installs Docker's engine and starts it.
apt_install docker-compose

log "lint: cargo fmt --check"
cargo fmt --all -- --check
log "lint: cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "build"
cargo build --workspace --locked --bins --tests

brokers=$(bash scripts/broker.sh start 0)
port="${brokers##*:}"
trap 'bash "$KAPPA_ROOT/scripts/broker.sh" stop "$port"' EXIT
export KAPPA_TEST_BROKERS="$brokers"

log "rust tests (broker $brokers)"
cargo test --workspace --locked

log "python client tests"
KAPPA_BROKERS="$brokers" KAPPA_GATEWAY_BIN="$CARGO_TARGET_DIR/debug/kappa-gateway" \
  KAPPA_COMPACTOR_BIN="$CARGO_TARGET_DIR/debug/kappa-compactor" \
  "$KAPPA_VENV/bin/python" -m pytest -q -p no:cacheprovider --timeout 600 tests/python

KAPPA_BROKERS="$brokers" KAPPA_GATEWAY_BIN="$CARGO_TARGET_DIR/debug/kappa-gateway" bash scripts/test-bi.sh

log "all tests passed in $(( $(date +%s) - started ))s"
