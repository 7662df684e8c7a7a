#!/usr/bin/env bash
# Starts N provider nodes (`quackmesh node --provide`) that list their machines on
# ComputeMarketplace, waits until the chain shows the listings and prints the marketplace; or
# only lists the marketplace (--list); or stops detached providers (--stop).
#
# Usage: scripts/register-providers.sh [--count N] [--prices "1 1.5 2"] [--bootstrap MULTIADDR]
#          [--network NAME] [--rpc-url URL] [--deployment FILE] [--first-dev-account I]
#          [--key-file FILE]... [--withdraw-every SECS] [--unlist-on-exit]
#          [--run-dir DIR] [--detach]
#        scripts/register-providers.sh --list [--network NAME] [--rpc-url URL] [--deployment FILE]
#        scripts/register-providers.sh --stop --run-dir DIR
#   --count N              providers to start (default 3)
#   --prices "P..."        price per hour in $DUCK of each, in order (default "1 1.5 2"; the last
#                          one repeats)
#   --bootstrap MULTIADDR  a peer to join the mesh through (repeatable; without one the providers
#                          list their machines but a rented cluster's coordinator cannot reach them)
#   --network NAME         devnet (default), duckchain-testnet or duckchain-mainnet
#   --rpc-url URL          chain endpoint (default: the network's; scripts/devnet.sh prints it)
#   --deployment FILE      deployment record (default testnet/deployments/<network>.json)
#   --first-dev-account I  devnet only: providers use anvil's accounts I, I+1, ... (default 7)
#   --key-file FILE        off devnet: one hex private-key file per provider, in order
#   --withdraw-every SECS  withdraw accrued rent this often (default 60)
#   --unlist-on-exit       unlist each machine when its node stops (refused while rented)
#   --run-dir DIR          data dirs and logs (default: a temporary directory, deleted at exit
#                          unless --detach)
#   --detach               leave the providers running and exit; stop them with --stop --run-dir
# Without --detach the providers run until Ctrl-C. Everything listens on 127.0.0.1 only.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
count=3
prices="1 1.5 2"
boot=()
network=devnet
rpc=""
deployment=""
first=7
keys=()
withdraw=60
unlist=0
run_dir=""
detach=0
mode=start
while [[ $# -gt 0 ]]; do
  case "$1" in
    --count) count="$2"; shift 2 ;;
    --prices) prices="$2"; shift 2 ;;
    --bootstrap) boot+=(--bootstrap "$2"); shift 2 ;;
    --network) network="$2"; shift 2 ;;
    --rpc-url) rpc="$2"; shift 2 ;;
    --deployment) deployment="$(realpath -m "$2")"; shift 2 ;;
    --first-dev-account) first="$2"; shift 2 ;;
    --key-file) keys+=("$(realpath -m "$2")"); shift 2 ;;
    --withdraw-every) withdraw="$2"; shift 2 ;;
    --unlist-on-exit) unlist=1; shift ;;
    --run-dir) run_dir="$(realpath -m "$2")"; shift 2 ;;
    --detach) detach=1; shift ;;
    --list) mode=list; shift ;;
    --stop) mode=stop; shift ;;
    -h|--help) qm_usage "$0"; exit 0 ;;
    *) echo "register-providers.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
cd "$QM_ROOT"
bin=$(qm_bin)
chain=(--network "$network")
[[ -n "$rpc" ]] && chain+=(--rpc-url "$rpc")
[[ -n "$deployment" ]] && chain+=(--deployment "$deployment")

if [[ $mode == stop ]]; then
  [[ -n "$run_dir" ]] || { echo "register-providers.sh: --stop needs --run-dir DIR" >&2; exit 2; }
  qm_stop_pid_files "$run_dir"/provider-*/pid
  exit 0
fi
if [[ $mode == list ]]; then
  "$bin" market list "${chain[@]}" --all --log warn
  exit 0
fi

if ! [[ "$count" =~ ^[1-9][0-9]*$ ]]; then echo "register-providers.sh: --count must be >= 1" >&2; exit 2; fi
if [[ $network == devnet ]]; then
  if (( first + count - 1 > 9 )); then
    echo "register-providers.sh: devnet has anvil accounts 0..9: --first-dev-account $first" \
      "leaves room for $(( 10 - first )) providers" >&2; exit 2
  fi
elif (( ${#keys[@]} < count )); then
  echo "register-providers.sh: off devnet, give one --key-file per provider ($count)" >&2; exit 2
fi
read -r -a price_list <<<"$prices"
(( ${#price_list[@]} >= 1 )) || { echo "register-providers.sh: --prices is empty" >&2; exit 2; }

qm_run_dir_with_cleanup providers

before=$(qm_market_available "${chain[@]}")
for i in $(seq 1 "$count"); do
  price=${price_list[$(( i - 1 < ${#price_list[@]} ? i - 1 : ${#price_list[@]} - 1 ))]}
  key=(--dev-account $(( first + i - 1 )))
  [[ $network != devnet ]] && key=(--private-key-file "${keys[$((i - 1))]}")
  args=(--provide --price "$price" --withdraw-every "$withdraw" "${chain[@]}" "${key[@]}")
  [[ $unlist -eq 1 ]] && args+=(--unlist-on-exit)
  qm_start_node "provider-$i" "$run_dir/provider-$i" "${boot[@]}" "${args[@]}"
  echo "provider-$i: $price DUCK/h, api $QM_API, $QM_ADDR (pid $QM_PID)"
done

# A restarted provider reuses its listing, so count the machines of these nodes' PeerIds.
peers=$(for i in $(seq 1 "$count"); do sed -n 's/^peer_id: //p' "$run_dir/provider-$i/stdout"; done)
listed=0
for _ in $(seq 1 150); do
  listed=$("$bin" market list "${chain[@]}" --json --log warn 2>/dev/null | PEERS="$peers" python3 -c '
import json, os, sys
peers = set(os.environ["PEERS"].split())
print(sum(1 for m in json.load(sys.stdin) if m["listed"] and m["peer_id"] in peers))' 2>/dev/null || echo 0)
  (( listed >= count )) && break
  sleep 0.2
done
if (( listed < count )); then
  echo "register-providers.sh: only $listed of $count machines listed after 30 s; logs in $run_dir" >&2
  exit 1
fi
echo "$count machines listed (available before: $before); the marketplace:"
"$bin" market list "${chain[@]}" --all --log warn | sed 's/^/  /'
if [[ $detach -eq 1 ]]; then
  echo "providers detached; logs in $run_dir; stop them with:"
  echo "  scripts/register-providers.sh --stop --run-dir $run_dir"
  exit 0
fi
echo "providers running (rent them: $bin market rent ${chain[*]} --machines $count --hours 1); Ctrl-C stops them"
while :; do
  for p in "${QM_PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "register-providers.sh: a provider exited (logs in $run_dir)" >&2; exit 1; }
  done
  sleep 1
done
