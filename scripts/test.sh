#!/usr/bin/env bash
# Sets up (apt/pip), builds and runs every test through CTest. GPU tests skip (exit 77, shown as
# "Skipped" by CTest) when no CUDA device is present. Extra arguments go to ctest.
# Then the hostile-input checks (docs/testing.md, "Hostile input"): a short run of every libFuzzer
# target (DSV4_FUZZ_SECONDS each, default 60; skipped with a message when clang is absent) and the
# AddressSanitizer + UndefinedBehaviorSanitizer build of the CPU suite in build-asan
# (DSV4_SKIP_SANITIZERS=1 skips that one). DSV4_HOSTILE=0 skips both.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
bash scripts/setup.sh
# NVLink multicast stays off on these machines (docs/expert-parallel.md §6): no source may use it.
if grep -rnE "cuMulticastCreate|multimem\." lib include; then
  echo "error: lib/ or include/ uses NVLink multicast (cuMulticastCreate / multimem.*)" >&2
  exit 1
fi
bash scripts/build.sh
(cd build && ctest --output-on-failure -j"$(nproc)" "$@")
if [ "${DSV4_HOSTILE:-1}" = 1 ]; then
  bash scripts/fuzz.sh "${DSV4_FUZZ_SECONDS:-60}"
  bash scripts/sanitize.sh
fi
