#!/usr/bin/env bash
# Sets up (apt/pip), builds and runs every test through CTest. GPU tests skip (exit 77, shown as
# "Skipped" by CTest) when no CUDA device is present. Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
bash scripts/setup.sh
bash scripts/build.sh
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
