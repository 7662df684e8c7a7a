#!/usr/bin/env bash
# Runs every test QuackMesh has: the contracts' forge suite (unit, fuzz, invariant), the Rust
# unit and integration tests (real anvil devnets, real libp2p nodes on 127.0.0.1, real MNIST) and
# the dashboard's browser test (scripts/dashboard-test.sh: a real demo network, headless
# Chromium; about a minute). Run scripts/setup.sh once first. QUACKMESH_SKIP_BROWSER=1 skips
# the browser test only where no Chromium is installed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$ROOT/node_modules/.bin:$PATH"

if [ -f contracts/foundry.toml ]; then
  echo "== forge test"
  (cd contracts && forge test)
fi

echo "== cargo test"
cargo test --workspace --features quackmesh/test-utils --lib --bins --tests

echo "== dashboard (headless Chromium on a demo network)"
scripts/dashboard-test.sh
