#!/usr/bin/env bash
# The QuackMesh demo: a whole federated-learning network on this machine, for real.
#
#   1. sets up what is missing (scripts/setup.sh) and fetches real MNIST (scripts/fetch-mnist.sh);
#   2. starts a local DuckChain devnet (anvil, chain id 31337) and deploys the contracts;
#   3. starts a bootstrap node, 2 coordinator-eligible nodes, 3 providers that list their
#      machines on ComputeMarketplace, and N contributors, each with its own IID shard of the
#      MNIST training set (the data never leaves its node); rents the 3 providers as a cluster
#      (one rentCluster transaction; the providers withdraw the accruing rent every 5 s);
#   4. the requester submits a training job (POST /api/job through `quackmesh job submit`): the
#      reward pool goes into escrow on chain, a coordinator is elected and claims the job;
#   5. shows the global accuracy round by round and the $DUCK rewards arriving on chain;
#   6. prints a summary (accuracy per round, $DUCK earned per participant, transactions, time)
#      and stops everything it started (also on Ctrl-C).
#
# Usage: scripts/demo.sh [--contributors N] [--rounds R] [--keep] [--stay] [--ready-file FILE]
#   --contributors N  contributor nodes, 1-4 (default 2)
#   --rounds R        rounds of federated training (default 5)
#   --keep            keep the run directory (logs, data dirs) instead of deleting it
#   --stay            keep the network running after the summary (browse the dashboard) until Ctrl-C
#   --ready-file FILE (or $QUACKMESH_DEMO_READY_FILE) for other programs (scripts/dashboard-test.sh,
#                     scripts/record-demo.sh): appends KEY=VALUE lines as the run goes:
#                     DASHBOARD_URL=http://127.0.0.1:PORT/, RPC_URL=... and DEPLOYMENT=FILE
#                     once the requester's node is up, JOB_ID=N once the job is on chain, FINISHED=SECONDS after the
#                     summary (with --stay the network then keeps running)
# Everything listens on 127.0.0.1 only.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root="$QM_ROOT"
caller_pwd=$PWD
cd "$root"
contributors=2
rounds=5
keep=0
stay=0
ready_file="${QUACKMESH_DEMO_READY_FILE:-}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --contributors) contributors="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --stay) stay=1; shift ;;
    --ready-file) ready_file="$2"; shift 2 ;;
    -h|--help) qm_usage "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if ! [[ "$contributors" =~ ^[1-4]$ ]]; then
  echo "demo.sh: --contributors must be 1..4 (anvil's funded accounts 3..6)" >&2; exit 2
fi
if ! [[ "$rounds" =~ ^[0-9]+$ ]] || (( rounds < 1 || rounds > 100 )); then
  echo "demo.sh: --rounds must be 1..100" >&2; exit 2
fi

say() { printf '\033[1m[demo]\033[0m %s\n' "$*"; }
started=$(date +%s)

bin="${QUACKMESH_BIN:-$root/target/debug/quackmesh}"
if [[ ! -x node_modules/.bin/anvil || ! -x "$bin" ]]; then
  say "first run: installing the toolchain and building (scripts/setup.sh)"
  scripts/setup.sh
fi
if [[ ! -f data/mnist/train-images-idx3-ubyte && ! -f data/mnist/train-images-idx3-ubyte.gz ]]; then
  scripts/fetch-mnist.sh
fi

run="$(mktemp -d "${TMPDIR:-/tmp}/quackmesh-demo.XXXXXX")"
if [[ -n "$ready_file" && "$ready_file" != /* ]]; then ready_file="$caller_pwd/$ready_file"; fi
if [[ -n "$ready_file" ]]; then : >"$ready_file"; fi
ready() { if [[ -n "$ready_file" ]]; then echo "$1" >>"$ready_file"; fi; }
cleanup() {
  trap - EXIT INT TERM
  qm_stop_all
  scripts/devnet.sh --stop --pid-file "$run/devnet.pid" >/dev/null 2>&1 || true
  if [[ $keep -eq 1 ]]; then say "run directory kept: $run"; else rm -rf "$run"; fi
}
trap cleanup EXIT
trap 'echo; say "interrupted"; exit 130' INT TERM

json() { qm_json "$1"; }

port=$(qm_free_port)
say "starting the devnet (anvil on 127.0.0.1:$port) and deploying the contracts"
scripts/devnet.sh --port "$port" --detach --pid-file "$run/devnet.pid" \
  --deployment "$run/devnet.json" >"$run/devnet.out"
chain=(--network devnet --rpc-url "http://127.0.0.1:$port" --deployment "$run/devnet.json")

# start_node NAME [ARGS...]: starts `quackmesh node` in $run/NAME, sets $api and $addr.
start_node() {
  local name=$1; shift
  qm_start_node "$name" "$run/$name" "$@" || { echo "demo.sh: node $name failed" >&2; exit 1; }
  api=$QM_API
  addr=$QM_ADDR
}

say "starting the bootstrap node"
start_node bootstrap
boot=$addr
declare -A node_api
for i in 1 2; do
  start_node "coordinator-$i" --bootstrap "$boot" --coordinator "${chain[@]}" --dev-account "$i"
  node_api["coordinator-$i"]=$api
done
say "2 coordinator-eligible nodes up"

say "splitting the MNIST training set into $contributors private shards"
"$bin" data partition --data data/mnist --parts "$contributors" --out "$run/shards" \
  --log warn >/dev/null
for i in $(seq 1 "$contributors"); do
  shard="$run/shards/part-$((i - 1))"
  start_node "contributor-$i" --bootstrap "$boot" --contribute --data "$shard" \
    "${chain[@]}" --dev-account $((i + 2))
  node_api["contributor-$i"]=$api
done
say "$contributors contributors up"

prices=(1 1.5 2)
for i in 1 2 3; do
  start_node "provider-$i" --bootstrap "$boot" --provide --price "${prices[$((i - 1))]}" \
    --withdraw-every 5 "${chain[@]}" --dev-account $((i + 6))
  node_api["provider-$i"]=$api
done
listed=0
for _ in $(seq 1 100); do
  listed=$(qm_market_available "${chain[@]}")
  (( listed >= 3 )) && break
  sleep 0.2
done
(( listed >= 3 )) || { echo "demo.sh: the providers did not list their machines" >&2; exit 1; }
say "3 providers listed their machines:"
"$bin" market list "${chain[@]}" --available --log warn | sed 's/^/    /'
say "renting all 3 for 1 hour as one cluster (rentCluster)"
"$bin" market rent "${chain[@]}" --dev-account 0 --machines 3 --hours 1 --log warn | sed 's/^/    /'
start_node requester --bootstrap "$boot" "${chain[@]}" --dev-account 0
node_api[requester]=$api
req=$api
ready "DASHBOARD_URL=$req/"
ready "RPC_URL=http://127.0.0.1:$port"
ready "DEPLOYMENT=$run/devnet.json"

balance() { curl -sf "$1/api/wallet" | json 'd["duck"]'; }
declare -A before
for n in "${!node_api[@]}"; do before[$n]=$(balance "${node_api[$n]}"); done

reward=$((rounds * contributors * 10))
say "submitting a $rounds-round MLP job with a pool of $reward DUCK"
out=$("$bin" job submit --node "$req" --validation data/mnist --rounds "$rounds" \
  --reward "$reward" --min-contributors "$contributors" --log warn)
job=$(sed -n 's/^job_id: //p' <<<"$out")
[[ -n "$job" ]] || { echo "demo.sh: job submission failed: $out" >&2; exit 1; }
say "job $job created on chain; following its rounds"
ready "JOB_ID=$job"

seen=0
deadline=$(( $(date +%s) + 600 ))
while :; do
  rec=$(curl -sf "$req/api/job/$job" || true)
  if [[ -n "$rec" ]]; then
    lines=$(json "'\n'.join(f'{r[\"round\"]} {r[\"accuracy_bps\"]/100:.2f} {r[\"term\"]}' for r in d['rounds_done'])" <<<"$rec")
    while read -r r acc term; do
      [[ -z "$r" ]] && continue
      if (( r > seen )); then
        paid=$(json "sum(int(x['amount']) for x in d['rewards'] if x['round']==$r)/1e18" <<<"$rec")
        say "round $r: global accuracy ${acc}% (coordinator term $term), rewards paid so far this round: $paid DUCK"
        seen=$r
      fi
    done <<<"$lines"
    status=$(json 'd["status"]' <<<"$rec")
    [[ "$status" == "finished" ]] && break
  fi
  if (( $(date +%s) > deadline )); then echo "demo.sh: the job did not finish in 10 minutes" >&2; exit 1; fi
  sleep 1
done

rec=$(curl -sf "$req/api/job/$job")
echo
say "summary"
echo "accuracy per round (10k real MNIST test images):"
json "'\n'.join(f'  round {r[\"round\"]}: {r[\"accuracy_bps\"]/100:.2f}%' for r in d['rounds_done'])" <<<"$rec"
echo "\$DUCK per participant since the job was submitted (on chain):"
for n in $(printf '%s\n' "${!node_api[@]}" | sort); do
  after=$(balance "${node_api[$n]}")
  python3 -c "print(f'  {\"$n\":<16} {float(\"$after\")-float(\"${before[$n]}\"):+.4f} DUCK')"
done
refund=$(json 'd.get("refund") or "0"' <<<"$rec")
python3 -c "print(f'  unspent pool refunded to the requester: {int(\"$refund\")/1e18:.4f} DUCK')"
txs=$(curl -sf "$req/api/transactions?limit=1000" | json 'len({e["tx_hash"] for e in d})')
echo "transactions with QuackMesh events: $txs"
"$bin" job model --node "$req" "$job" -o "$run/global.safetensors" --log warn >/dev/null
check=$("$bin" eval --weights "$run/global.safetensors" --data data/mnist --split test --log warn | tail -1)
echo "global model fetched from the mesh and evaluated on its own: $check"
echo "time taken: $(( $(date +%s) - started )) s"
echo "dashboard: $req/ (API: /api/jobs, /api/job/$job, /api/market, /api/transactions, /metrics)"
ready "FINISHED=$(( $(date +%s) - started ))"
if [[ $stay -eq 1 ]]; then
  say "the network keeps running; Ctrl-C stops it"
  while :; do sleep 1; done
fi
