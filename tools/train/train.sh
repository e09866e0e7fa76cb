#!/usr/bin/env bash
# Reproduce the built-in default model from scratch (data, tokenizer, training, export, checks).
#   bash tools/train/train.sh [--minutes 60] [--threads 2] [--out assets/models/hire-brown-6m] [more train.py flags]
# Needs Debian's PyTorch: apt-get install -y python3-torch python3-regex libopenblas0-openmp
set -euo pipefail
cd "$(dirname "$0")/../.."
exec /usr/bin/python3 tools/train/train.py all "$@"
