#!/usr/bin/env python3
"""Checks that a safetensors file written by a QuackMesh node loads in Python's `safetensors`
with exactly the values the node meant to write.

Usage: check-safetensors.py MODEL.safetensors EXPECTED.json

EXPECTED.json maps each tensor name to {"shape": [...], "bits": [...]}, the IEEE-754 bit
patterns of its f32 values (as u32, row-major), so the comparison is exact.
Exit codes: 0 match, 1 mismatch, 2 missing dependency or bad usage.
"""
import json
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import numpy as np
        from safetensors.numpy import load_file
    except ImportError as e:
        print(f"missing Python module ({e}); run: pip install safetensors numpy", file=sys.stderr)
        return 2

    tensors = load_file(sys.argv[1])
    with open(sys.argv[2]) as f:
        expected = json.load(f)

    problems = []
    if sorted(tensors) != sorted(expected):
        problems.append(f"names differ: file {sorted(tensors)} vs expected {sorted(expected)}")
    values = 0
    for name, want in expected.items():
        got = tensors.get(name)
        if got is None:
            continue
        if got.dtype != np.float32:
            problems.append(f"{name}: dtype {got.dtype}, expected float32")
            continue
        if list(got.shape) != want["shape"]:
            problems.append(f"{name}: shape {list(got.shape)}, expected {want['shape']}")
            continue
        bits = np.array(want["bits"], dtype=np.uint32).reshape(got.shape)
        diff = np.count_nonzero(got.view(np.uint32) != bits)
        if diff:
            problems.append(f"{name}: {diff} of {got.size} values differ")
        values += got.size

    if problems:
        for p in problems:
            print("MISMATCH", p, file=sys.stderr)
        return 1
    print(f"ok: {len(tensors)} tensors, {values} values match bit for bit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
