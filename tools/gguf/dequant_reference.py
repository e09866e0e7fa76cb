#!/usr/bin/env python3
"""Reference dequantization of a GGUF file's tensors by gguf-py (llama.cpp's own Python package),
for test/gguf-import.test.ts: per tensor its ggml type, the float64 sum and sum of squares of all
its values, and 128 values at fixed positions (numpy's RandomState(0) per tensor).

    PYTHONPATH=/path/to/llama.cpp/gguf-py python3 tools/gguf/dequant_reference.py FILE.gguf > expected.json
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def main(path: str) -> None:
    reader = GGUFReader(path)
    out = {}
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1)
        rng = np.random.RandomState(0)
        idx = np.sort(rng.choice(values.size, size=min(128, values.size), replace=False))
        out[t.name] = {
            "type": t.tensor_type.name,
            "n": int(values.size),
            "sum": float(values.sum()),
            "sumsq": float((values * values).sum()),
            "samples": [[int(i), float(values[i])] for i in idx],
        }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
