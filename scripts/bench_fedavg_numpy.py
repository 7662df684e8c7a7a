#!/usr/bin/env python3
"""NumPy side of scripts/bench-learn.sh: FedAvg of N updates of 1M float32 parameters as a
plain stack-and-average (`np.stack(updates).mean(0)`), timed, with the peak memory of that
step from tracemalloc (NumPy reports its buffers to it). A sample-weighted variant
(`np.average(..., weights=...)`, what FedAvg computes) is timed too, for reference.

Usage: bench_fedavg_numpy.py
"""
import json
import time
import tracemalloc

import numpy as np

PARAMS = 1_000_000
rng = np.random.default_rng(0)
for count in (10, 100):
    updates = [rng.random(PARAMS, dtype=np.float32) - 0.5 for _ in range(count)]
    weights = np.arange(100, 100 + count, dtype=np.float64)
    np.stack(updates[:2]).mean(0)  # warm-up
    tracemalloc.start()
    t0 = time.perf_counter()
    avg = np.stack(updates).mean(0)
    secs = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del avg
    t0 = time.perf_counter()
    np.average(np.stack(updates), axis=0, weights=weights)
    weighted = time.perf_counter() - t0
    print(json.dumps({"bench": "fedavg", "impl": "numpy", "updates": count, "params": PARAMS,
                      "secs": round(secs, 4), "weighted_secs": round(weighted, 4),
                      "updates_per_sec": round(count / secs, 1), "peak_extra_bytes": peak}),
          flush=True)
