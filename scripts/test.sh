#!/usr/bin/env bash
# Runs every test QuackMesh has: the contracts' forge suite (unit, fuzz, invariant) and the Rust
# unit and integration tests (real anvil devnets, real libp2p nodes on 127.0.0.1, real MNIST).
# Run scripts/setup.sh once first.
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
