#!/usr/bin/env bash
# Installs what building and testing kappa needs: Debian packages for rdkafka's C build,
# and a Python virtual environment with the real client libraries the tests use.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

APT_PACKAGES=(build-essential pkg-config zlib1g-dev libssl-dev python3 python3-venv)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt: installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

REQS="$KAPPA_ROOT/scripts/requirements.txt"
STAMP="$KAPPA_VENV/.requirements.sha"
want=$(sha256sum "$REQS" | cut -d' ' -f1)
if [[ ! -x "$KAPPA_VENV/bin/python" || "$(cat "$STAMP" 2>/dev/null)" != "$want" ]]; then
  log "python: creating $KAPPA_VENV"
  python3 -m venv "$KAPPA_VENV"
  "$KAPPA_VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
  echo "$want" > "$STAMP"
fi
log "deps: ready"
