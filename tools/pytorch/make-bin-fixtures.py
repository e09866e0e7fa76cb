#!/usr/bin/env python3
"""Make the PyTorch checkpoint fixtures of test/pytorch (checked in; rerun only to change them).

Reads the bf16 model `hire make-model --arch llama --dtype bf16 --seed 1` writes (model.safetensors)
and saves its state dict with torch.save (Debian's python3-torch; run with /usr/bin/python3), as
transformers' save_pretrained(safe_serialization=False) does:
  single/   pytorch_model.bin, one storage per tensor;
  sharded/  pytorch_model-00001-of-00002.bin, -00002-of-00002.bin and pytorch_model.bin.index.json,
            with layer 0's q_proj, k_proj and v_proj views of one fused storage (offsets into it) and
            an int64 buffer (position ids) that a loader skips;
  bad/      checkpoints an import must refuse: evil.bin (its pickle calls os.system, as a malicious
            file would), strided.bin (a transposed view), f64.bin (a float64 tensor).
Usage: node bin/hire.js make-model --arch llama --dtype bf16 --seed 1 --out /tmp/pt-src
       /usr/bin/python3 tools/pytorch/make-bin-fixtures.py /tmp/pt-src
"""
import json
import os
import struct
import sys
from collections import OrderedDict

import torch

src = sys.argv[1]
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "test", "pytorch")

with open(os.path.join(src, "model.safetensors"), "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
    data = f.read()
dtypes = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
state = OrderedDict()
for name, e in header.items():
    if name == "__metadata__":
        continue
    a, b = e["data_offsets"]
    state[name] = torch.frombuffer(bytearray(data[a:b]), dtype=dtypes[e["dtype"]]).reshape(e["shape"]).clone()

os.makedirs(os.path.join(out, "single"), exist_ok=True)
torch.save(state, os.path.join(out, "single", "pytorch_model.bin"))

# Sharded, with views of one storage and a non-float buffer.
p = "model.layers.0.self_attn."
fused = torch.cat([state[p + "q_proj.weight"], state[p + "k_proj.weight"], state[p + "v_proj.weight"]])
q, k, v = fused.split([state[p + x + "_proj.weight"].shape[0] for x in "qkv"])
state[p + "q_proj.weight"], state[p + "k_proj.weight"], state[p + "v_proj.weight"] = q, k, v
state["model.position_ids"] = torch.arange(16, dtype=torch.int64)
names = list(state)
half = len(names) // 2
shards = [names[:half], names[half:]]
os.makedirs(os.path.join(out, "sharded"), exist_ok=True)
weight_map = {}
for i, part in enumerate(shards):
    file = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
    torch.save(OrderedDict((k, state[k]) for k in part), os.path.join(out, "sharded", file))
    weight_map.update({k: file for k in part})
with open(os.path.join(out, "sharded", "pytorch_model.bin.index.json"), "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
    f.write("\n")

# Checkpoints to refuse.
import io
import pickle
import zipfile

bad = os.path.join(out, "bad")
os.makedirs(bad, exist_ok=True)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


with zipfile.ZipFile(os.path.join(bad, "evil.bin"), "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", pickle.dumps(OrderedDict([("x", Evil())]), protocol=2))
    z.writestr("archive/version", "3\n")
w = state["model.norm.weight"]
torch.save(OrderedDict([("model.embed_tokens.weight", state["model.embed_tokens.weight"].t())]), os.path.join(bad, "strided.bin"))
torch.save(OrderedDict([("model.norm.weight", w.to(torch.float64))]), os.path.join(bad, "f64.bin"))
