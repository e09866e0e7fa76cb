#!/usr/bin/env bash
# Remakes test/gguf/tiny-llama-quants.gguf and its reference values (tiny-llama-quants.expected.json):
# a random tiny Llama (hidden 256 and FFN 512, so that every row is whole K-quant blocks) exported to
# an f32 GGUF, quantized by llama.cpp's own llama-quantize with a different ggml type per tensor (every
# type core/gguf/quants.ts reads), and dequantized by llama.cpp's gguf-py (dequant_reference.py).
#
#   tools/gguf/make-quant-fixture.sh LLAMA_CPP_DIR
#
# LLAMA_CPP_DIR: a llama.cpp checkout with build/bin/llama-quantize built (cmake -B build &&
# cmake --build build --target llama-quantize); its gguf-py/ needs numpy (Debian: python3-numpy).
set -euo pipefail
llama="$(cd "$1" && pwd)"
cd "$(dirname "$0")/../.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

node bin/hire.js make-model --arch llama --preset tiny-llama --hidden 256 --heads 4 --kv-heads 2 \
  --intermediate 512 --layers 2 --vocab 512 --dtype f32 --seed 7 --out "$work/model"
node bin/hire.js export --model "$work/model" --gguf "$work/f32.gguf" --dtype f32
types=(
  attn_q=q2_k attn_k=q3_k attn_v=q5_k blk.0.attn_output=q4_k blk.1.attn_output=iq4_xs
  blk.0.ffn_gate=q4_0 blk.0.ffn_up=q4_1 blk.0.ffn_down=q5_0
  blk.1.ffn_gate=q5_1 blk.1.ffn_up=q8_0 blk.1.ffn_down=q6_k
)
args=()
for t in "${types[@]}"; do args+=(--tensor-type "$t"); done
"$llama/build/bin/llama-quantize" "${args[@]}" --token-embedding-type iq4_nl --output-tensor-type q6_k \
  "$work/f32.gguf" test/gguf/tiny-llama-quants.gguf Q4_K_M 2
PYTHONPATH="$llama/gguf-py" python3 tools/gguf/dequant_reference.py test/gguf/tiny-llama-quants.gguf \
  > test/gguf/tiny-llama-quants.expected.json
