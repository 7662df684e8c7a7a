#!/usr/bin/env bash
# Federated training benchmark (issue 5): MLP 784-128-10 on the full real MNIST training set
# split IID over 2 and over 10 contributors, 1 local epoch, batch 32, SGD lr 0.05, 5 rounds,
# every participant a real `quackmesh node` on 127.0.0.1 against a real anvil devnet.
# Prints accuracy after each round and seconds per round (chain transactions and mesh
# transfers included) against the same rounds run in one process without mesh or chain,
# measured in the same run, and the Flower + PyTorch reference of ../shared/FACTS.md.
#
# Usage: scripts/bench-federated.sh [--contributors 2,10]
# Needs scripts/setup.sh once (anvil, MNIST). Takes a few minutes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
contributors="2,10"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --contributors) contributors="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-federated.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -f data/mnist/train-images-idx3-ubyte || -f data/mnist/train-images-idx3-ubyte.gz ]] || scripts/fetch-mnist.sh
export PATH="$root/node_modules/.bin:$PATH"
# One compute thread per process, as every node runs (2 cores shared by all of them).
RAYON_NUM_THREADS=1 QM_CONTRIBUTORS="$contributors" cargo bench -p quackmesh --features test-utils --bench federated
