#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, generate a small random-weight checkpoint with the
# real DeepSeek tokenizer, and inspect it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
bash scripts/setup.sh
bash scripts/build.sh
model=build/models/tiny
[ -f "$model/config.json" ] || ./build/dsv4 make-model --preset tiny --seed 1 --out "$model"
./build/dsv4 inspect "$model"
# One chat turn on it through the C API host (random weights: the text is noise, the path is real).
./build/dsv4-chat "$model" --prompt "Hello! Who are you?" --max-new-tokens 32 --stats
