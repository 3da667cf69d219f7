#!/usr/bin/env bash
# Builds kappa's container image on a machine with no container registry: the runtime stage of
# deploy/docker/Dockerfile on a Debian base made here (debootstrap, imported into Docker), with
# binaries built outside the image and the shared libraries they load copied in beside them.
#   scripts/image.sh              # the debug binaries the test command built, stripped
#   scripts/image.sh --release    # release binaries (built if missing; KAPPA_IMAGE_PROFILE=release)
#   scripts/image.sh broker       # the test broker (nisshi) for deploy/compose.yaml
# KAPPA_GATEWAY_BIN / KAPPA_COMPACTOR_BIN pick the binaries; KAPPA_IMAGE names the image
# (kappa:<version> by default, also tagged kappa:latest). Installs Debian's docker.io and starts
# dockerd when no Docker engine answers (it is left running); exits 3 when no engine can run.
# Prints the image reference as its last line.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$KAPPA_ROOT"

profile="${KAPPA_IMAGE_PROFILE:-debug}"
what=kappa
case "${1:-}" in
  --release) profile=release ;;
  broker) what=broker ;;
  "") ;;
  *) log "usage: $0 [--release | broker]"; exit 2 ;;
esac
[[ "$profile" == debug || "$profile" == release ]] || { log "image: profile must be debug or release"; exit 2; }
run_dir="$KAPPA_CACHE/run"
mkdir -p "$run_dir" "$KAPPA_CACHE/images"

# A Docker engine that answers: the running one, or Debian's docker.io started here as root.
ensure_docker() {
  docker info >/dev/null 2>&1 && return 0
  { command -v dockerd && command -v docker; } >/dev/null || apt_install docker.io
  if [[ $(id -u) -ne 0 ]]; then
    log "image: no Docker engine answers and starting dockerd needs root"
    return 1
  fi
  log "image: starting dockerd (log: $run_dir/dockerd.log)"
  setsid dockerd >"$run_dir/dockerd.log" 2>&1 </dev/null &
  echo $! >"$run_dir/dockerd.pid"
  for _ in $(seq 1 600); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$run_dir/dockerd.pid")" 2>/dev/null || break
    sleep 0.1
  done
  log "image: dockerd did not start (no container engine can run here); its log follows"
  tail -n 40 "$run_dir/dockerd.log" >&2
  return 1
}

# The base: Debian's minimal variant of this machine's release (so the libraries copied from
# here are the base's own versions) plus the CA roots, made once and cached as a tarball.
ensure_base() {
  local suite base tarball root
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  base="kappa-base:$suite"
  tarball="$KAPPA_CACHE/images/debian-$suite-minbase.tar"
  if ! docker image inspect "$base" >/dev/null 2>&1; then
    if [[ ! -s "$tarball" ]]; then
      apt_install debootstrap
      root=$(mktemp -d "$KAPPA_CACHE/images/rootfs.XXXXXX")
      log "image: debootstrap --variant=minbase $suite (once; cached in $tarball)"
      debootstrap --variant=minbase --include=ca-certificates "$suite" "$root" >"$run_dir/debootstrap.log" 2>&1 \
        || { tail -n 40 "$run_dir/debootstrap.log" >&2; rm -rf "$root"; return 1; }
      # What a container never reads: package downloads and lists, logs, documentation, translations.
      rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
      tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
      mv "$tarball.tmp" "$tarball"
      rm -rf "$root"
    fi
    docker import "$tarball" "$base" >/dev/null
  fi
  echo "$base"
}

# The binary $1 of the chosen profile: $2 (an env var's name) if set, else cargo's (built if stale).
binary() {
  local name=$1 override=${!2:-}
  if [[ -n "$override" ]]; then
    echo "$override"
    return
  fi
  local flags=()
  [[ "$profile" == release ]] && flags=(--release)
  cargo build --locked "${flags[@]}" --bin "$name" >&2
  echo "$CARGO_TARGET_DIR/$profile/$name"
}

# Copies every library the binaries $2… load into the context $1, each at its own path
# (resolved through the /lib → /usr/lib links), to be copied over the base.
copy_libraries() {
  local context=$1 lib dir
  shift
  for lib in $(ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// {print $3} NF == 2 && $1 ~ /^\// {print $1}' | sort -u); do
    dir=$(realpath "$(dirname "$lib")")
    mkdir -p "$context/lib$dir"
    cp -L "$lib" "$context/lib$dir/$(basename "$lib")"
  done
}

ensure_docker || exit 3
base=$(ensure_base)
context=$(mktemp -d "$KAPPA_CACHE/images/context.XXXXXX")
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/bin" "$context/lib"

if [[ $what == broker ]]; then
  [[ -x "$NISSHI_BIN" ]] || bash scripts/install-broker.sh >&2
  image="${KAPPA_BROKER_IMAGE:-kappa-test-broker:nisshi-$NISSHI_VERSION}"
  strip -o "$context/bin/nisshi" "$NISSHI_BIN"
  copy_libraries "$context" "$NISSHI_BIN"
  cp deploy/docker/test-broker.Dockerfile "$context/Dockerfile"
  log "image: building $image (on $base)"
  DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE_IMAGE=$base" -t "$image" "$context" >/dev/null
  echo "$image"
  exit 0
fi

gateway=$(binary kappa-gateway KAPPA_GATEWAY_BIN)
compactor=$(binary kappa-compactor KAPPA_COMPACTOR_BIN)
version=$("$gateway" --version | awk '{print $2}')
image="${KAPPA_IMAGE:-kappa:$version}"

# Debug info and symbols out: a debug build's binaries shrink by a third.
strip -o "$context/bin/kappa-gateway" "$gateway"
strip -o "$context/bin/kappa-compactor" "$compactor"
copy_libraries "$context" "$gateway" "$compactor"
# The Dockerfile's runtime stage, its binaries taken from the context instead of the build stage.
{
  echo "ARG RUNTIME_IMAGE"
  sed -n '/^FROM \${RUNTIME_IMAGE} AS runtime$/,$p' deploy/docker/Dockerfile \
    | sed 's#^COPY --from=build /out/ /usr/local/bin/$#COPY lib/ /\nCOPY bin/ /usr/local/bin/#'
} >"$context/Dockerfile"
grep -q '^COPY bin/' "$context/Dockerfile" || { log "image: deploy/docker/Dockerfile's runtime stage changed shape"; exit 1; }

log "image: building $image ($profile binaries, on $base)"
DOCKER_BUILDKIT=0 docker build -q --build-arg "RUNTIME_IMAGE=$base" --build-arg PACKAGES= \
  --label "org.opencontainers.image.version=$version" --label "dev.kappa.profile=$profile" \
  -t "$image" -t kappa:latest "$context" >/dev/null
log "image: $image is $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%d MB", $1 / 1e6}')"
echo "$image"
