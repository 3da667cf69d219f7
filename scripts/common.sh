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
# Apache Superset and flightsql-dbapi pin SQLAlchemy < 2: their own venv (tests/bi).
KAPPA_BI_VENV="$KAPPA_CACHE/venv-bi"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KAPPA_CACHE/target}"
mkdir -p "$KAPPA_CACHE"
log() { printf '[kappa %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Installs the Debian packages named that are missing (CI has no stdin: nothing asks).
apt_install() {
  local missing=() p
  for p in "$@"; do
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "apt: installing ${missing[*]}"
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { log "apt: ${missing[*]} missing; run as root or install sudo"; return 1; }
    sudo="sudo -n"
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Makes the virtual environment $1 hold the pinned requirements file $2 (its relative paths are
# from the checkout's root); does nothing when neither it nor the local sources $3… it installs
# have changed since the last install (a stamp of their hashes).
ensure_venv() {
  local venv=$1 requirements=$2 stamp want
  shift 2
  stamp="$venv/.requirements.sha"
  want=$(cat "$requirements" "$@" | sha256sum | cut -d' ' -f1)
  if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    log "python: creating $venv from $(basename "$requirements")"
    python3 -m venv "$venv"
    (cd "$KAPPA_ROOT" && "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements")
    echo "$want" > "$stamp"
  fi
}

# The binary a benchmark runs: $2 (KAPPA_GATEWAY_BIN, KAPPA_COMPACTOR_BIN) if set, else a build
# of KAPPA_BENCH_PROFILE (release by default; `dev` for a debug build). Prints its path.
bench_bin() {
  local name=$1 override=${!2:-}
  if [[ -n "$override" ]]; then
    echo "$override"
  elif [[ "${KAPPA_BENCH_PROFILE:-release}" == release ]]; then
    cargo build --locked --release --bin "$name" >&2
    echo "$CARGO_TARGET_DIR/release/$name"
  else
    cargo build --locked --bin "$name" >&2
    echo "$CARGO_TARGET_DIR/debug/$name"
  fi
}
bench_gateway_bin() { bench_bin kappa-gateway KAPPA_GATEWAY_BIN; }
bench_compactor_bin() { bench_bin kappa-compactor KAPPA_COMPACTOR_BIN; }

# Installs kcat (Debian's packages), the raw-consume baseline of the scan and compactor benchmarks.
ensure_kcat() {
  command -v kcat >/dev/null || apt_install kcat
}

# The mock-cluster example's path: KAPPA_MOCK_BIN if set, else a build in KAPPA_BENCH_PROFILE
# (release by default; a release build of kappa-catalog's dev-dependencies takes a while).
bench_mock_bin() {
  if [[ -n "${KAPPA_MOCK_BIN:-}" ]]; then
    echo "$KAPPA_MOCK_BIN"
    return
  fi
  local flags=() target_profile=debug
  if [[ "${KAPPA_BENCH_PROFILE:-release}" == release ]]; then flags=(--release) target_profile=release; fi
  log "building the mock cluster (${KAPPA_BENCH_PROFILE:-release})"
  cargo build --locked "${flags[@]}" -p kappa-catalog --example mock_cluster >&2
  echo "$CARGO_TARGET_DIR/$target_profile/examples/mock_cluster"
}

# Runs a Python benchmark on a fresh test broker, stopped when the script exits:
#   bench_on_broker [--with-compactor] scripts/bench_x.py [args…]
# passes --brokers and --gateway-bin (bench_gateway_bin), and --compactor-bin if asked.
bench_on_broker() {
  local with_compactor=false binaries=() brokers
  if [[ $1 == --with-compactor ]]; then with_compactor=true; shift; fi
  local script=$1
  shift
  cd "$KAPPA_ROOT"
  bash scripts/install-deps.sh
  bash scripts/install-broker.sh
  binaries=(--gateway-bin "$(bench_gateway_bin)")
  if $with_compactor; then binaries+=(--compactor-bin "$(bench_compactor_bin)"); fi
  brokers=$(bash scripts/broker.sh start 0)
  # shellcheck disable=SC2064 # the port is known now, not at exit
  trap "bash '$KAPPA_ROOT/scripts/broker.sh' stop '${brokers##*:}'" EXIT
  "$KAPPA_VENV/bin/python" "$script" --brokers "$brokers" "${binaries[@]}" "$@"
}
