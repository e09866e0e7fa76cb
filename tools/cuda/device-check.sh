#!/usr/bin/env bash
# The GPU evidence for the CUDA backend, in one run on the lent device machine (a bare machine with
# an NVIDIA GPU, Python and the CUDA toolkit, but no Node.js): unpacks the Node.js binary that
# tools/cuda/pack-device.sh put in .device/, then
#   1. lists the GPU (nvidia-smi, `hire gpus`),
#   2. runs test/cuda.test.ts (every op and every golden / random model against the CPU backend),
#      and compares our CUDA decode with Hugging Face transformers on random models (hf-parity.py),
#   3. times each kernel on llama-3.2-1b shapes (tools/cuda/kernel-bench.mjs),
#   4. benches a llama-3.2-1b-shaped bf16 model on the GPU: dense, HiRE + head and exact top-k,
#   5. prints one HiRE token's per-layer telemetry (`hire generate --json`).
# Logs go to $OUT. Needs dist/, the addon and .device/ carried along:
#   run(command="bash tools/cuda/device-check.sh", carry=[".device", "dist", "core/native/build/Release/hire_native.node"])
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/hire-device-out}
mkdir -p "$OUT" /tmp/nodebin
python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.device/node.xz'), open('/tmp/nodebin/node', 'wb'))"
chmod +x /tmp/nodebin/node
export PATH=/tmp/nodebin:$PATH
[ -e node_modules ] || ln -s .device/node_modules node_modules
export HIRE_GOLDEN_DIR=$PWD/.device/golden HIRE_CACHE_DIR=/tmp/hire-cache
MODEL=/tmp/llama-3.2-1b
step() { echo; echo "== $*"; }

step "GPU"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
node bin/hire.js gpus 2>&1 | tee -a "$OUT/gpu.txt"

# The 2.5 GB model is written on the CPU while the tests use the GPU.
( node bin/hire.js make-model --preset llama-3.2-1b --dtype bf16 --seed 1 --out "$MODEL" > "$OUT/make-model.log" 2>&1 ) &
maker=$!

step "test/cuda.test.ts"
timeout "${TEST_TIMEOUT:-200}" node --test --test-reporter=spec dist/test/cuda.test.js > "$OUT/cuda-test.log" 2>&1
echo "exit $?" >> "$OUT/cuda-test.log"
grep -E "^(✔|✖|﹣)|^ℹ (tests|pass|fail)|exit " "$OUT/cuda-test.log" | cut -c1-160
grep -B2 -A12 "✖" "$OUT/cuda-test.log" | grep -E "Error|GPU|CPU|want|got|expected|actual|at .*cuda" | head -40

step "parity with Hugging Face transformers (random models, every architecture)"
hf=()
for a in llama qwen2 gpt2 opt; do
  node bin/hire.js make-model --arch $a --dtype bf16 --seed 3 --out "/tmp/hf-$a" > /dev/null && hf+=("/tmp/hf-$a")
done
timeout 120 python3 tools/cuda/hf-parity.py "${hf[@]}" 2>&1 | grep -v Warning | tee "$OUT/hf-parity.txt"

step "kernels (GPU time per op, recorded in graphs)"
timeout 120 node tools/cuda/kernel-bench.mjs 2>&1 | tee "$OUT/kernels.txt"

wait $maker
step "bench (llama-3.2-1b shape, bf16)"
timeout "${BENCH_TIMEOUT:-180}" node bin/hire.js bench --backend cuda --model "$MODEL" --methods hire,topk-exact --ffn-k 0.1 \
  --oversample 2 --predictor int4 --head hire --prompt-tokens 32 --decode-tokens 64 --repeats 3 2>&1 | tee "$OUT/bench.txt"

step "one token per layer, dense and HiRE (GPU time from the recorded step's marks)"
for m in dense hire; do
  timeout 60 node bin/hire.js generate --backend cuda --model "$MODEL" --prompt "Hello" --max-tokens 6 --ffn $m --ffn-k 0.1 \
    $( [ $m = hire ] && echo --head hire || echo --trace ) --temperature 0 --json > "$OUT/generate-$m.json" 2> "$OUT/generate-$m.err"
  node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const s = r.steps[r.steps.length - 1];
const L = s.layers ?? [];
const sum = (f) => L.reduce((a, l) => a + (f(l) ?? 0), 0).toFixed(3);
console.log(process.argv[2], "layers", L.length, "attention ms", sum((l) => l.attention_ms), "ffn ms", sum((l) => l.ffn_ms),
  "predictor ms", sum((l) => l.predictor_ms), "exact ms", sum((l) => l.exact_ms), "down ms", sum((l) => l.down_ms),
  "output ms", s.output_ms, "timings", JSON.stringify(r.timings));
' "$OUT/generate-$m.json" $m 2>&1 || head -c 600 "$OUT/generate-$m.err"
done
