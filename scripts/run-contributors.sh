#!/usr/bin/env bash
# Starts N contributor nodes (`quackmesh node --contribute`), each with its own shard of an
# MNIST-format training set (split with `quackmesh data partition`; a shard never leaves its
# node). They train every job announced on chain and earn $DUCK for accepted updates. Or stops
# detached contributors (--stop).
#
# Usage: scripts/run-contributors.sh --bootstrap MULTIADDR [--count N] [--data DIR]
#          [--scheme iid|labels:K|dirichlet:A] [--seed S] [--network NAME] [--rpc-url URL]
#          [--deployment FILE] [--first-dev-account I] [--key-file FILE]... [--run-dir DIR]
#          [--detach]
#        scripts/run-contributors.sh --stop --run-dir DIR
#   --bootstrap MULTIADDR  a peer to join the mesh through (repeatable; required: the global
#                          model and the updates travel over the mesh)
#   --count N              contributors to start (default 2)
#   --data DIR             the training set to split (default data/mnist, scripts/fetch-mnist.sh)
#   --scheme S             iid (default), labels:K (each shard holds K digits) or dirichlet:ALPHA
#   --seed S               seed of the split (default 0)
#   --network NAME         devnet (default), duckchain-testnet or duckchain-mainnet
#   --rpc-url URL          chain endpoint (default: the network's)
#   --deployment FILE      deployment record (default testnet/deployments/<network>.json)
#   --first-dev-account I  devnet only: contributors use anvil's accounts I, I+1, ... (default 3)
#   --key-file FILE        off devnet: one hex private-key file per contributor, in order
#   --run-dir DIR          shards, data dirs and logs (default: a temporary directory, deleted
#                          at exit unless --detach)
#   --detach               leave the contributors running and exit; stop them with --stop
# Without --detach they run until Ctrl-C, printing each one's $DUCK balance every 10 s.
# Everything listens on 127.0.0.1 only.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
count=2
data="$QM_ROOT/data/mnist"
scheme=iid
seed=0
boot=()
network=devnet
rpc=""
deployment=""
first=3
keys=()
run_dir=""
detach=0
mode=start
while [[ $# -gt 0 ]]; do
  case "$1" in
    --count) count="$2"; shift 2 ;;
    --data) data="$(realpath -m "$2")"; shift 2 ;;
    --scheme) scheme="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --bootstrap) boot+=(--bootstrap "$2"); shift 2 ;;
    --network) network="$2"; shift 2 ;;
    --rpc-url) rpc="$2"; shift 2 ;;
    --deployment) deployment="$(realpath -m "$2")"; shift 2 ;;
    --first-dev-account) first="$2"; shift 2 ;;
    --key-file) keys+=("$(realpath -m "$2")"); shift 2 ;;
    --run-dir) run_dir="$(realpath -m "$2")"; shift 2 ;;
    --detach) detach=1; shift ;;
    --stop) mode=stop; shift ;;
    -h|--help) qm_usage "$0"; exit 0 ;;
    *) echo "run-contributors.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
cd "$QM_ROOT"
bin=$(qm_bin)

if [[ $mode == stop ]]; then
  [[ -n "$run_dir" ]] || { echo "run-contributors.sh: --stop needs --run-dir DIR" >&2; exit 2; }
  qm_stop_pid_files "$run_dir"/contributor-*/pid
  exit 0
fi
(( ${#boot[@]} > 0 )) || { echo "run-contributors.sh: give --bootstrap MULTIADDR (see --help)" >&2; exit 2; }
if ! [[ "$count" =~ ^[1-9][0-9]*$ ]]; then echo "run-contributors.sh: --count must be >= 1" >&2; exit 2; fi
if [[ $network == devnet ]]; then
  if (( first + count - 1 > 9 )); then
    echo "run-contributors.sh: devnet has anvil accounts 0..9: --first-dev-account $first" \
      "leaves room for $(( 10 - first )) contributors" >&2; exit 2
  fi
elif (( ${#keys[@]} < count )); then
  echo "run-contributors.sh: off devnet, give one --key-file per contributor ($count)" >&2; exit 2
fi
if [[ ! -f "$data/train-images-idx3-ubyte" && ! -f "$data/train-images-idx3-ubyte.gz" ]]; then
  echo "run-contributors.sh: no MNIST training set in $data (scripts/fetch-mnist.sh)" >&2; exit 1
fi
chain=(--network "$network")
[[ -n "$rpc" ]] && chain+=(--rpc-url "$rpc")
[[ -n "$deployment" ]] && chain+=(--deployment "$deployment")

qm_run_dir_with_cleanup contributors

echo "splitting $data into $count shards ($scheme, seed $seed)"
"$bin" data partition --data "$data" --parts "$count" --scheme "$scheme" --seed "$seed" \
  --out "$run_dir/shards" --log warn >/dev/null
declare -A api
for i in $(seq 1 "$count"); do
  key=(--dev-account $(( first + i - 1 )))
  [[ $network != devnet ]] && key=(--private-key-file "${keys[$((i - 1))]}")
  qm_start_node "contributor-$i" "$run_dir/contributor-$i" "${boot[@]}" --contribute \
    --data "$run_dir/shards/part-$((i - 1))" "${chain[@]}" "${key[@]}"
  api[$i]=$QM_API
  echo "contributor-$i: shard part-$((i - 1)), api $QM_API, $QM_ADDR (pid $QM_PID)"
done
if [[ $detach -eq 1 ]]; then
  echo "contributors detached; logs in $run_dir; stop them with:"
  echo "  scripts/run-contributors.sh --stop --run-dir $run_dir"
  exit 0
fi
echo "contributors running; they train every job on chain (scripts/seed-job.sh submits one); Ctrl-C stops them"
while :; do
  for p in "${QM_PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "run-contributors.sh: a contributor exited (logs in $run_dir)" >&2; exit 1; }
  done
  line=""
  for i in $(seq 1 "$count"); do
    line+="  contributor-$i $(curl -sf "${api[$i]}/api/wallet" | qm_json 'd["duck"]' 2>/dev/null || echo '?') DUCK"
  done
  echo "$(date +%T)$line"
  sleep 10
done
