#!/usr/bin/env bash
# Builds the test broker (nisshi, a Kafka-compatible broker from the crate registry) once per machine.
# See docs/testbed.md for why nisshi. It declares a dependency that asks for a newer rustc than the
# machine has but builds and runs on it, hence --ignore-rust-version.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ -x "$NISSHI_BIN" ]]; then
  log "broker: $NISSHI_BIN (cached)"
  exit 0
fi
log "broker: building nisshi $NISSHI_VERSION (about 11 minutes on 2 cores, once per machine)"
CARGO_TARGET_DIR="$KAPPA_CACHE/nisshi-build" cargo install nisshi --version "$NISSHI_VERSION" --locked \
  --ignore-rust-version --no-default-features --features libsql --root "$NISSHI_ROOT"
rm -rf "$KAPPA_CACHE/nisshi-build"
log "broker: installed $NISSHI_BIN"
