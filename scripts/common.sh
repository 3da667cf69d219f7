# Shared settings for kappa's scripts. Source it; do not run it.
# Everything heavy (the broker binary, cargo's target dir, the Python venv) lives in a cache
# outside the checkout so a fresh clone on the same machine reuses it.
set -euo pipefail
KAPPA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAPPA_CACHE="${KAPPA_CACHE:-${HOME:-/root}/.cache/kappa}"
NISSHI_VERSION="0.8.1"
NISSHI_ROOT="$KAPPA_CACHE/nisshi-$NISSHI_VERSION"
NISSHI_BIN="$NISSHI_ROOT/bin/nisshi"
KAPPA_VENV="$KAPPA_CACHE/venv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KAPPA_CACHE/target}"
mkdir -p "$KAPPA_CACHE"
log() { printf '[kappa %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
