#!/usr/bin/env bash
# Submits a sample federated training job (an MLP 784-128-10 on MNIST, validated by the
# coordinator on the 10k test images) through a running node, which deposits the reward pool
# on chain from its account; prints the job id and, with --wait, follows its rounds until it
# finishes (exit 1 if it does not in --timeout seconds).
#
# Usage: scripts/seed-job.sh [--node URL] [--rounds R] [--reward DUCK] [--min-contributors N]
#          [--validation DIR] [--model mlp|cnn] [--wait] [--timeout SECS] [-- JOB SUBMIT FLAGS]
#   --node URL            API of the node that submits (default $QUACKMESH_NODE or
#                         http://127.0.0.1:7720); it needs a chain key and $DUCK
#   --rounds R            rounds (default 3)
#   --reward DUCK         the whole reward pool (default rounds x min-contributors x 10)
#   --min-contributors N  updates per round (default 2)
#   --validation DIR      validation set (default data/mnist; its t10k-* files are used)
#   --model M             mlp (default) or cnn
#   --wait                follow the rounds until the job finishes
#   --timeout SECS        with --wait, how long to wait (default 600)
#   -- FLAGS              passed on to `quackmesh job submit` (e.g. -- --round-timeout 30 --lr 0.1)
# A network to run it on: scripts/demo.sh --stay, or scripts/devnet.sh with coordinator nodes,
# scripts/register-providers.sh and scripts/run-contributors.sh (see README.md).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
node_url="${QUACKMESH_NODE:-http://127.0.0.1:7720}"
rounds=3
reward=""
min_contributors=2
validation="$QM_ROOT/data/mnist"
model=mlp
wait_done=0
timeout_s=600
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --node) node_url="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --reward) reward="$2"; shift 2 ;;
    --min-contributors) min_contributors="$2"; shift 2 ;;
    --validation) validation="$(realpath -m "$2")"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --wait) wait_done=1; shift ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) qm_usage "$0"; exit 0 ;;
    *) echo "seed-job.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
cd "$QM_ROOT"
bin=$(qm_bin)
node_url="${node_url%/}"
[[ -n "$reward" ]] || reward=$(( rounds * min_contributors * 10 ))
curl -sf --max-time 5 "$node_url/api/node" >/dev/null \
  || { echo "seed-job.sh: no node answers at $node_url (--node URL)" >&2; exit 1; }

echo "submitting a $rounds-round $model job (pool $reward DUCK, $min_contributors updates a round) through $node_url"
out=$("$bin" job submit --node "$node_url" --validation "$validation" --model "$model" \
  --rounds "$rounds" --reward "$reward" --min-contributors "$min_contributors" --log warn "${extra[@]}")
job=$(sed -n 's/^job_id: //p' <<<"$out")
[[ -n "$job" ]] || { echo "seed-job.sh: submission failed: $out" >&2; exit 1; }
echo "job_id: $job"
[[ $wait_done -eq 1 ]] || exit 0

seen=0
deadline=$(( $(date +%s) + timeout_s ))
while :; do
  rec=$(curl -sf --max-time 5 "$node_url/api/job/$job" || true)
  if [[ -n "$rec" ]]; then
    while read -r r acc; do
      [[ -z "$r" ]] && continue
      if (( r > seen )); then echo "round $r: global accuracy $acc%"; seen=$r; fi
    done < <(qm_json "'\n'.join(f'{r[\"round\"]} {r[\"accuracy_bps\"]/100:.2f}' for r in d['rounds_done'])" <<<"$rec")
    status=$(qm_json 'd["status"]' <<<"$rec")
    if [[ "$status" == finished ]]; then
      paid=$(qm_json "sum(int(x['amount']) for x in d['rewards'])/1e18" <<<"$rec")
      echo "job $job finished: $paid DUCK paid to contributors"
      exit 0
    fi
  fi
  if (( $(date +%s) > deadline )); then
    echo "seed-job.sh: job $job did not finish in $timeout_s s (status ${status:-unknown})" >&2; exit 1
  fi
  sleep 1
done
