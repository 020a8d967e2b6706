#!/usr/bin/env bash
# Sets up (apt/pip), builds and runs every test through CTest. GPU tests skip (exit 77, shown as
# "Skipped" by CTest) when no CUDA device is present. Extra arguments go to ctest.
# Then the hostile-input checks (docs/testing.md, "Hostile input"): a short run of every libFuzzer
# target (DSV4_FUZZ_SECONDS each, default 10; skipped with a message when clang is absent) and the
# AddressSanitizer + UndefinedBehaviorSanitizer build of the CPU suite in build-asan
# (DSV4_SKIP_SANITIZERS=1 skips it, for local runs).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
bash scripts/setup.sh
bash scripts/build.sh
(cd build && ctest --output-on-failure -j"$(nproc)" "$@")
bash scripts/fuzz.sh "${DSV4_FUZZ_SECONDS:-10}"
bash scripts/sanitize.sh
