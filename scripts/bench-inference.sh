#!/usr/bin/env bash
# Distributed inference benchmark (issue 6): the 10,000 real MNIST test images through the MLP
# and the CNN over a rented cluster of 1, 2 and 3 `quackmesh node --provide` machines on this
# machine (real anvil devnet, InferencePool jobs, the mesh on 127.0.0.1), against single-process
# candle inference of the same model and batch measured in the same run. Prints seconds,
# images per second, the ratio to one process and the mesh's overhead per request (part).
#
# Usage: scripts/bench-inference.sh
# Needs scripts/setup.sh once (anvil, MNIST). Takes a few minutes (release build first).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-inference.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -f data/mnist/train-images-idx3-ubyte || -f data/mnist/train-images-idx3-ubyte.gz ]] || scripts/fetch-mnist.sh
export PATH="$root/node_modules/.bin:$PATH"
# One compute thread per process, as every node runs.
RAYON_NUM_THREADS=1 cargo bench -p quackmesh --features test-utils --bench inference
