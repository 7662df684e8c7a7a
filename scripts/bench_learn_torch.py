#!/usr/bin/env python3
"""PyTorch side of scripts/bench-learn.sh: the same MLP (784-128-10) and CNN (conv 1->16 k5,
pool, conv 16->32 k5, pool, linear 512->10) trained for one epoch with SGD at batch 32 and
128 on the same MNIST images, at the same thread count; prints JSON lines like the Rust bench.

Usage: bench_learn_torch.py MNIST_DIR THREADS [QUICK]
"""
import gzip
import json
import os
import sys
import time


def load_idx(path, header):
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        return f.read()[header:]


def find(dir_, names):
    for n in names:
        for cand in (n, n + ".gz"):
            p = os.path.join(dir_, cand)
            if os.path.isfile(p):
                return p
    raise SystemExit(f"no {names[0]} in {dir_}")


def main():
    data_dir, threads = sys.argv[1], int(sys.argv[2])
    quick = len(sys.argv) > 3 and sys.argv[3] == "1"
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    imgs = np.frombuffer(
        load_idx(find(data_dir, ["train-images-idx3-ubyte", "train-images.idx3-ubyte"]), 16),
        np.uint8,
    ).reshape(-1, 784)
    labels = np.frombuffer(
        load_idx(find(data_dir, ["train-labels-idx1-ubyte", "train-labels.idx1-ubyte"]), 8),
        np.uint8,
    )
    x_all = torch.from_numpy(((imgs.astype(np.float32) / 255.0) - 0.1307) / 0.3081)
    y_all = torch.from_numpy(labels.astype(np.int64))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(x)))

    class Cnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 5)
            self.conv2 = nn.Conv2d(16, 32, 5)
            self.fc = nn.Linear(512, 10)

        def forward(self, x):
            x = x.view(-1, 1, 28, 28)
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            return self.fc(x.flatten(1))

    def epoch(model, n, batch):
        # Same work as the Rust side: shuffle, gather each batch, forward, backward, SGD step.
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        x, y = x_all[:n], y_all[:n]
        perm = torch.randperm(n)
        total = 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        return time.perf_counter() - t0, time.process_time() - c0, total / n

    epoch(Mlp(), 2000, 32)  # warm-up
    for name, cls, n in (("mlp", Mlp, 10000 if quick else 60000), ("cnn", Cnn, 2000 if quick else 10000)):
        n = min(n, len(x_all))
        for batch in (32, 128):
            secs, cpu, loss = epoch(cls(), n, batch)
            print(json.dumps({"bench": "train", "impl": "pytorch", "model": name, "batch": batch,
                              "threads": threads, "samples": n, "secs": round(secs, 4),
                              "cpu_secs": round(cpu, 3), "samples_per_sec": round(n / secs, 1),
                              "loss": round(loss, 4)}), flush=True)
    n = min(10000 if quick else 30000, len(x_all))
    secs, cpu, _ = epoch(Mlp(), n, 32)
    print(json.dumps({"bench": "federated", "impl": "pytorch", "model": "mlp", "batch": 32,
                      "threads": threads, "samples": n, "secs": round(secs, 4),
                      "cpu_secs": round(cpu, 3), "samples_per_sec": round(n / secs, 1)}), flush=True)
    with torch.no_grad():
        for name, cls in (("mlp", Mlp), ("cnn", Cnn)):
            m = cls().eval()
            xt = x_all[:10000]
            t0 = time.perf_counter()
            for i in range(0, len(xt), 1000):
                m(xt[i : i + 1000]).argmax(1)
            secs = time.perf_counter() - t0
            print(json.dumps({"bench": "eval", "impl": "pytorch", "model": name, "threads": threads,
                              "samples": len(xt), "secs": round(secs, 4),
                              "samples_per_sec": round(len(xt) / secs, 1)}), flush=True)


if __name__ == "__main__":
    main()
