"""Parity of `hire generate --backend cuda` with Hugging Face transformers on random models.

Runs on the device machine (tools/cuda/device-check.sh), where PyTorch and transformers are
installed: for each model folder made by `hire make-model`, our CUDA backend decodes 8 greedy tokens
with top-5 log-probabilities; transformers (PyTorch, float32 on the CPU, weights upcast exactly)
then scores the same ids step by step. A step passes when our greedy id is its argmax (or the two
best are within 1e-3 of each other) and our five log-probabilities are within 1e-3 of its values.
Exit status 1 when any model fails.

    python3 tools/cuda/hf-parity.py MODEL_DIR...
"""

import json
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM


def check(folder: str) -> bool:
    run = subprocess.run(
        ["node", "bin/hire.js", "generate", "--backend", "cuda", "--model", folder, "--prompt", "The quick brown fox",
         "--max-tokens", "8", "--temperature", "0", "--logprobs", "5", "--ignore-eos", "--json"],
        capture_output=True, text=True, check=True)
    ours = json.loads(run.stdout)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = list(ours["prompt_ids"])
    worst, agree, steps = 0.0, True, 0
    with torch.no_grad():
        for step, our_id in enumerate(ours["ids"]):
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)
            top = torch.topk(lp, 2)
            margin = float(top.values[0] - top.values[1])
            for tid, tlp in ours["steps"][step]["top_logprobs"]:
                worst = max(worst, abs(float(lp[tid]) - tlp))
            if int(top.indices[0]) != our_id and margin > 1e-3:
                agree = False
            steps += 1
            ids.append(our_id)  # both continue from our tokens
    ok = agree and worst < 1e-3
    arch = model.config.architectures[0] if model.config.architectures else type(model).__name__
    print(f"{'ok  ' if ok else 'FAIL'} {arch:24} {steps} steps, greedy ids {'agree' if agree else 'DIFFER'}, "
          f"max |log-prob difference| {worst:.2e}  ({folder})")
    return ok


if __name__ == "__main__":
    results = [check(f) for f in sys.argv[1:]]
    sys.exit(0 if all(results) else 1)
