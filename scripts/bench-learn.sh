#!/usr/bin/env bash
# Learn-area benchmarks: candle (this repo) against PyTorch and NumPy measured in the same run
# on the same machine, thread count and MNIST images. Prints a table of ratios.
#
#   - training throughput, 1 epoch, batch 32 and 128, MLP and CNN: candle vs PyTorch
#     (targets: MLP >= 1.0x, CNN >= 0.5x);
#   - the federated hot path (MLP, batch 32, SGD lr 0.05, 1 epoch on 30k images): seconds of
#     wall and CPU time;
#   - evaluation on 10k images;
#   - FedAvg of 100 updates of 1M parameters: candle's streaming accumulator vs NumPy's
#     stack-and-average (target >= 2x), and peak memory for 10 vs 100 updates.
#
# PyTorch goes into a throwaway venv (default .venv-bench, gitignored; never used by CI).
# PyPI's Linux torch wheel is a CUDA build that will not import without its CUDA runtime
# wheels, so those come along (a few GB, once); the benchmark itself runs on the CPU.
#
# Usage: scripts/bench-learn.sh [--quick] [--threads "1 2"]
#   --quick    fewer images (a smoke run of the script, not for reporting)
#   --threads  thread counts to measure (candle: RAYON_NUM_THREADS; torch.set_num_threads)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
quick=0
threads="1 2"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --threads) threads="$2"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

mnist="${QUACKMESH_MNIST_DIR:-$root/data/mnist}"
if ! scripts/fetch-mnist.sh "$mnist"; then
  echo "warning: full MNIST unavailable; using the committed 10k subset" >&2
  mnist="$root/node/testdata/mnist"
fi
export QUACKMESH_MNIST_DIR="$mnist"

venv="${BENCH_VENV:-$root/.venv-bench}"
if ! "$venv/bin/python" -c "import torch, numpy" >/dev/null 2>&1; then
  echo "installing torch and numpy into $venv (throwaway, not for CI)..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install -q torch numpy >&2
  "$venv/bin/python" -c "import torch; torch.ones(1) @ torch.ones(1)" \
    || { echo "error: torch does not import in $venv" >&2; exit 1; }
fi
py="$venv/bin/python"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
echo "building the candle benchmark (release)..." >&2
cargo bench -p quackmesh --features test-utils --bench learn --no-run >&2
for t in $threads; do
  echo "candle, $t thread(s)..." >&2
  RAYON_NUM_THREADS=$t BENCH_QUICK=$quick BENCH_ONLY=train,federated,eval \
    cargo bench -q -p quackmesh --features test-utils --bench learn 2>/dev/null >>"$out/candle.jsonl"
  echo "pytorch, $t thread(s)..." >&2
  OMP_NUM_THREADS=$t "$py" scripts/bench_learn_torch.py "$mnist" "$t" "$quick" >>"$out/torch.jsonl"
done
echo "candle fedavg..." >&2
BENCH_ONLY=fedavg cargo bench -q -p quackmesh --features test-utils --bench learn 2>/dev/null \
  >>"$out/candle.jsonl"
echo "numpy fedavg..." >&2
OMP_NUM_THREADS=1 "$py" scripts/bench_fedavg_numpy.py >"$out/numpy.jsonl"

"$py" - "$out" <<'PY'
import json, os, sys
d = sys.argv[1]
def rows(name):
    with open(os.path.join(d, name)) as f:
        return [json.loads(l) for l in f if l.strip().startswith("{")]
candle, torch, numpy = rows("candle.jsonl"), rows("torch.jsonl"), rows("numpy.jsonl")
def find(rs, **kw):
    for r in rs:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
print("\n== training throughput, 1 epoch, SGD (samples/s; ratio = candle / PyTorch)")
print(f"{'model':5} {'batch':>5} {'thr':>3} {'images':>7} {'candle':>10} {'pytorch':>10} {'ratio':>6}")
for c in [r for r in candle if r["bench"] == "train"]:
    t = find(torch, bench="train", model=c["model"], batch=c["batch"], threads=c["threads"])
    ratio = c["samples_per_sec"] / t["samples_per_sec"] if t else float("nan")
    print(f"{c['model']:5} {c['batch']:>5} {c['threads']:>3} {c['samples']:>7} "
          f"{c['samples_per_sec']:>10.0f} {t['samples_per_sec'] if t else float('nan'):>10.0f} {ratio:>5.2f}x")
print("\n== federated hot path: MLP, batch 32, SGD lr 0.05, 1 epoch")
for c in [r for r in candle if r["bench"] == "federated"]:
    t = find(torch, bench="federated", threads=c["threads"])
    print(f"{c['threads']} thread(s), {c['samples']} images: candle {c['secs']:.3f} s wall, "
          f"{c['cpu_secs']:.2f} s CPU, {c['samples_per_sec']:.0f} samples/s, test acc "
          f"{c['test_accuracy']:.4f} | pytorch {t['secs']:.3f} s wall, {t['cpu_secs']:.2f} s CPU "
          f"| ratio {t['secs'] / c['secs']:.2f}x")
print("\n== evaluation, 10k images (samples/s)")
for c in [r for r in candle if r["bench"] == "eval"]:
    t = find(torch, bench="eval", model=c["model"], threads=c["threads"])
    print(f"{c['model']:5} {c['threads']} thread(s): candle {c['samples_per_sec']:.0f}, "
          f"pytorch {t['samples_per_sec']:.0f}, ratio {c['samples_per_sec'] / t['samples_per_sec']:.2f}x")
print("\n== FedAvg of N updates of 1M parameters (speedup = numpy time / candle time)")
print("   candle adds updates one at a time (batch 1) or 10 per pass (batch 10); it sums on up")
print("   to 2 threads once a batch holds >= 4M values; numpy is single-threaded here")
for c in [r for r in candle if r["bench"] == "fedavg"]:
    n = find(numpy, bench="fedavg", updates=c["updates"])
    print(f"{c['updates']:>3} updates, batch {c['batch']:>2}: candle {c['secs']*1e3:.1f} ms, "
          f"peak +{c['peak_extra_bytes']/2**20:.1f} MiB | numpy stack+mean {n['secs']*1e3:.1f} ms "
          f"(weighted {n['weighted_secs']*1e3:.1f} ms), peak +{n['peak_extra_bytes']/2**20:.1f} MiB "
          f"| speedup {n['secs'] / c['secs']:.2f}x")
PY
