#!/usr/bin/env bash
# Installs everything QuackMesh needs on a fresh machine, then builds the node. Idempotent: a
# second run only checks. Needs: a Rust toolchain (rustup), and apt/npm/PyPI registry access.
#
#   scripts/setup.sh            # everything
#   scripts/setup.sh --no-build # tools and data only
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD=1
for arg in "$@"; do
  case "$arg" in
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "setup: unknown argument $arg" >&2; exit 2 ;;
  esac
done
log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust with rustup first" >&2; exit 1; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "installing Node.js and npm (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi

# Chromium for the dashboard's browser test (scripts/dashboard-test.sh drives it through
# playwright-core; Debian's package, since nothing outside the package registries is reachable).
if [ ! -x /usr/bin/chromium ] && ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    log "installing Chromium (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    log "installing Chromium (sudo apt)"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  else
    log "Chromium missing and no root: install it (apt-get install chromium) or set QUACKMESH_SKIP_BROWSER=1"
  fi
fi

# Foundry (forge, anvil, cast), solc, OpenZeppelin and playwright-core come from npm at the
# versions pinned in package-lock.json. npm ci wipes node_modules, so only run it when the lock file changed.
if [ -f package-lock.json ]; then
  stamp=node_modules/.quackmesh-lock.sha256
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "npm ci (Foundry binaries, solc, OpenZeppelin)"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" > "$stamp"
  fi
fi

# Python is only used to check that our safetensors files load in the reference implementation.
if command -v python3 >/dev/null && ! python3 -c 'import safetensors.numpy, numpy' 2>/dev/null; then
  log "pip install safetensors numpy"
  python3 -m pip install -q --disable-pip-version-check safetensors numpy
fi

if [ -x scripts/fetch-mnist.sh ]; then
  scripts/fetch-mnist.sh
fi

if [ "$BUILD" = 1 ]; then
  log "cargo build (the quackmesh binary and its tests)"
  cargo build --features quackmesh/test-utils --bins --tests
fi
log "done"
