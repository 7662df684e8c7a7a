#!/usr/bin/env bash
# Chain-layer benchmark (node/benches/chain.rs) against a local anvil: transaction sending,
# event watching and devnet start-up, each printed as a ratio to a baseline measured in the
# same run. The chain code is I/O-bound and the dev profile builds dependencies at opt-level 3,
# so this runs in the dev profile (no release build needed). Needs `npm ci` (anvil).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo bench --profile dev --features test-utils --bench chain "$@"
