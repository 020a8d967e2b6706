#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build of the CPU test suite in its own folder
# (build-asan: GCC, -DDSV4_CUDA=OFF -DDSV4_PYTHON=OFF, no benchmarks) and ctest on it. Any ASan
# report, UB or leak fails the test that hit it. Extra arguments go to ctest.
#   DSV4_SKIP_SANITIZERS=1   skip (local runs)
#   DSV4_ASAN_BUILD=dir      build folder (default build-asan)
# Excluded: c_embed.installed, which builds a plain C consumer against the installed library; an
# instrumented library cannot be loaded by a program without the ASan runtime. Everything else
# runs, the Python-driven tests included (they drive the instrumented binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${DSV4_SKIP_SANITIZERS:-0}" = 1 ]; then
  echo "sanitize: skipped (DSV4_SKIP_SANITIZERS=1)"
  exit 0
fi
build=${DSV4_ASAN_BUILD:-build-asan}
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
start=$(date +%s)
cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DDSV4_CUDA=OFF -DDSV4_PYTHON=OFF \
  -DDSV4_BENCHMARKS=OFF -DCMAKE_CXX_FLAGS="$san -g1" -DCMAKE_C_FLAGS="$san -g1" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  >/dev/null
cmake --build "$build" -j"$(nproc)"
built=$(date +%s)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
(cd "$build" && ctest --output-on-failure -j"$(nproc)" -E '^c_embed\.installed$' "$@")
echo "sanitize: build $((built - start))s, tests $(($(date +%s) - built))s"
