#!/usr/bin/env bash
# Packs what a GPU check needs on the lent device machine into .device/ (git-ignored through
# .git/info/exclude): that machine has no Node.js, no npm registry and no ../shared, so this carries
# Node's own binary (xz), the runtime npm packages the CLI imports, and the golden models. Run after
# `npm ci` (dist/ and the addon built here travel as carried paths; see tools/cuda/device-check.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
rm -rf .device && mkdir -p .device/node_modules
xz -T0 -6 -c "$(readlink -f "$(command -v node)")" > .device/node.xz
for p in @huggingface ws onnx-proto long @protobufjs; do cp -r "node_modules/$p" .device/node_modules/; done
# protobufjs without its prebuilt bundles and CLI (onnx-proto needs only its sources).
mkdir -p .device/node_modules/protobufjs
(cd node_modules/protobufjs && cp -r package.json index.js minimal.js light.js src google ../../.device/node_modules/protobufjs/)
cp -r "${HIRE_GOLDEN_DIR:-../shared/golden}" .device/golden
du -sh .device
