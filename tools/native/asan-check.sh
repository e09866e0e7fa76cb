#!/usr/bin/env bash
# The native addon under AddressSanitizer: rebuilds core/native with -fsanitize=address, runs the
# tests that drive native code (kernels, sparse kernels, GGUF dequantization, mixtures, sessions,
# loaders, golden models) and, given a count, that many corrupt-model fuzz cases, with node
# preloading libasan; then rebuilds the addon as usual, whatever happened. Not run by CI (a few
# minutes, and the rebuilds). Usage: tools/native/asan-check.sh [FUZZ_CASES]   (after `npm run build:ts`)
set -euo pipefail
cd "$(dirname "$0")/../.."
rebuild() { (cd core/native && npx node-gyp rebuild >/dev/null); }
trap 'echo "rebuilding the addon without ASan"; unset CFLAGS CXXFLAGS LDFLAGS; rebuild' EXIT
(
  cd core/native
  CFLAGS="-fsanitize=address -fno-omit-frame-pointer" CXXFLAGS="-fsanitize=address -fno-omit-frame-pointer" \
    LDFLAGS="-fsanitize=address" npx node-gyp rebuild >/dev/null
)
export LD_PRELOAD="$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0
node --test dist/test/{kernels,sparse-kernels,gguf-import,gguf,moe,sparse,session,loader,golden,weight-release,kv-ring}.test.js
if [ -n "${1:-}" ]; then node tools/fuzz/loaders.mjs "$1" 9000 | grep -v '^case'; fi
