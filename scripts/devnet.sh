#!/usr/bin/env bash
# Starts a local QuackMesh devnet: anvil on 127.0.0.1, all contracts deployed, anvil's ten
# well-known accounts funded with $DUCK, the record written to testnet/deployments/devnet.json.
# Keeps anvil running until Ctrl-C, or with --detach leaves it running and writes a pid file.
#
#   scripts/devnet.sh [--port 8545] [--fund 1000000] [--detach] [--pid-file FILE]
#                     [--deployment FILE] [--block-time SECS]
#   scripts/devnet.sh --stop [--pid-file FILE]
#
# Every transaction is mined at once, and an empty block comes every --block-time seconds
# besides (default 1; 0 for none), so the chain's clock moves as on DuckChain: coordinator
# leases expire even when nobody sends a transaction.
#
# Needs `npm ci` (anvil) and the quackmesh binary (built with `cargo build` if missing;
# set QUACKMESH_BIN to use another). Everything listens on 127.0.0.1 only.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port=8545
fund=1000000
detach=0
stop=0
block_time=1
pid_file="$root/testnet/devnet.pid"
deployment="$root/testnet/deployments/devnet.json"

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --fund) fund="$2"; shift 2 ;;
    --detach) detach=1; shift ;;
    --pid-file) pid_file="$2"; shift 2 ;;
    --deployment) deployment="$2"; shift 2 ;;
    --block-time) block_time="$2"; shift 2 ;;
    --stop) stop=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "devnet.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [[ $stop -eq 1 ]]; then
  if [[ -f "$pid_file" ]] && kill "$(cat "$pid_file")" 2>/dev/null; then
    echo "stopped devnet (pid $(cat "$pid_file"))"
  else
    echo "no running devnet recorded in $pid_file"
  fi
  rm -f "$pid_file"
  exit 0
fi

anvil="${QUACKMESH_ANVIL:-$root/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil}"
if [[ ! -x "$anvil" ]]; then
  echo "devnet.sh: anvil not found at $anvil; run \`npm ci\` in $root" >&2
  exit 1
fi

bin="${QUACKMESH_BIN:-}"
if [[ -z "$bin" ]]; then
  for candidate in "$root/target/debug/quackmesh" "$root/target/release/quackmesh"; do
    if [[ -x "$candidate" ]]; then bin="$candidate"; break; fi
  done
fi
if [[ -z "$bin" ]]; then
  echo "building quackmesh (cargo build --bin quackmesh)..."
  (cd "$root" && cargo build --quiet --bin quackmesh)
  bin="$root/target/debug/quackmesh"
fi

if [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
  echo "devnet.sh: a devnet is already running (pid $(cat "$pid_file")); stop it with --stop" >&2
  exit 1
fi

mkdir -p "$(dirname "$pid_file")" "$(dirname "$deployment")"
log="${pid_file%.pid}.log"
args=(--host 127.0.0.1 --port "$port" --chain-id 31337)
[[ "$block_time" != 0 ]] && args+=(--block-time "$block_time" --mixed-mining)
if [[ $detach -eq 1 ]]; then
  nohup "$anvil" "${args[@]}" >"$log" 2>&1 &
else
  "$anvil" "${args[@]}" >"$log" 2>&1 &
fi
anvil_pid=$!
echo "$anvil_pid" >"$pid_file"

cleanup() {
  kill "$anvil_pid" 2>/dev/null || true
  wait "$anvil_pid" 2>/dev/null || true
  rm -f "$pid_file"
}
if [[ $detach -eq 0 ]]; then
  trap 'echo; echo "stopping devnet"; cleanup; exit 0' INT TERM
fi
trap '[[ $? -ne 0 ]] && cleanup' EXIT

# anvil prints "Listening on 127.0.0.1:PORT" (the real port, also when --port 0).
for _ in $(seq 1 200); do
  if listening=$(grep -m1 -o 'Listening on 127.0.0.1:[0-9]*' "$log" 2>/dev/null); then break; fi
  if ! kill -0 "$anvil_pid" 2>/dev/null; then echo "anvil exited:" >&2; cat "$log" >&2; exit 1; fi
  sleep 0.05
done
[[ -n "${listening:-}" ]] || { echo "anvil did not start; see $log" >&2; exit 1; }
port="${listening##*:}"
rpc="http://127.0.0.1:$port"

echo "anvil listening on $rpc (chain id 31337, pid $anvil_pid, log $log)"
"$bin" --log warn chain deploy --network devnet --rpc-url "$rpc" --deployment "$deployment" \
  --force --fund-dev-accounts "$fund"

echo
echo "funded accounts (anvil's well-known dev keys; never use them elsewhere):"
for i in $(seq 0 9); do
  addr=$("$bin" --log warn wallet address --network devnet --rpc-url "$rpc" --deployment "$deployment" --dev-account "$i")
  echo "  #$i $addr"
done
echo
echo "try:  $bin market list --rpc-url $rpc --deployment $deployment"
echo "      $bin wallet balance --rpc-url $rpc --deployment $deployment --dev-account 1"

trap - EXIT
if [[ $detach -eq 1 ]]; then
  echo "devnet detached (pid $anvil_pid in $pid_file); stop it with: scripts/devnet.sh --stop"
  exit 0
fi
echo "devnet running; Ctrl-C to stop"
wait "$anvil_pid"
rm -f "$pid_file"
