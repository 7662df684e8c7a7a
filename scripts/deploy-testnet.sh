#!/usr/bin/env bash
# Deploys QuackMesh's contracts to DuckChain testnet (or another network of
# testnet/networks.toml) and writes testnet/deployments/<network>.json.
#
#   QUACKMESH_PRIVATE_KEY=0x... scripts/deploy-testnet.sh [--network duckchain-testnet]
#                                  [--rpc-url URL] [--force] [any other `chain deploy` flag]
#
# The key may also come from --private-key-file FILE or an encrypted keystore
# (--keystore FILE with QUACKMESH_KEYSTORE_PASSWORD). The deploy refuses an endpoint whose
# chain id is not the network's (202105 for DuckChain testnet, 5545 for mainnet). On mainnet
# the configured $DUCK is used and DuckToken is not deployed.
# Alternative without the Rust binary: contracts/script/Deploy.s.sol (forge script; see there).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
network=duckchain-testnet
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --network) network="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done

if [[ -z "${QUACKMESH_PRIVATE_KEY:-}" ]] && [[ ! " ${args[*]-} " =~ " --private-key-file " ]] \
  && [[ ! " ${args[*]-} " =~ " --keystore " ]]; then
  echo "deploy-testnet.sh: set QUACKMESH_PRIVATE_KEY or pass --private-key-file/--keystore" >&2
  exit 2
fi

bin="${QUACKMESH_BIN:-$root/target/release/quackmesh}"
if [[ ! -x "$bin" ]]; then
  bin="$root/target/debug/quackmesh"
fi
if [[ ! -x "$bin" ]]; then
  (cd "$root" && cargo build --quiet --bin quackmesh)
fi

cd "$root"
exec "$bin" chain deploy --network "$network" --deployment "testnet/deployments/$network.json" "${args[@]}"
