#!/usr/bin/env bash
# Builds, here (no GPU needed; CUDA 13.0), everything the GPU suite runs and copies it with the
# fixtures into third_party/prebuilt (git-ignored), stripped, and packs that into
# third_party/carry.tar.xz (the device tool carries at most 64 MiB with the tree), for one call:
#   device tool: command "PREBUILT=1 bash tests/gpu/run-on-device.sh", carry ["third_party/carry.tar.xz"]
# Usage: bash scripts/gpu-prebuild.sh [BUILD_DIR]   (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
b=${1:-build}
[ -f "$b/CMakeCache.txt" ] || cmake -S . -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSV4_CUDA=ON
targets=(dsv4_gpu_tests test_gemv_ref bench_gemv dsv4)
[ -f benchmarks/dsv4_bench.cpp ] && targets+=(dsv4-bench)
# Every CUDA micro-benchmark (benchmarks/bench_*.cu).
for f in benchmarks/bench_*.cu; do targets+=("$(basename "${f%.cu}")"); done
cmake --build "$b" -j"$(nproc)" --target "${targets[@]}"
out=third_party/prebuilt
mkdir -p "$out"
cp "$b/tests/dsv4_gpu_tests" "$b/tests/test_gemv_ref" "$b/dsv4" "$out/"
for f in benchmarks/bench_*.cu; do cp "$b/benchmarks/$(basename "${f%.cu}")" "$out/"; done
[ -f "$b/benchmarks/dsv4-bench" ] && cp "$b/benchmarks/dsv4-bench" "$out/"
shared=${DSV4_SHARED_DIR:-../shared}
if [ -d "$shared/fixtures" ]; then
  mkdir -p "$out/shared"
  rm -rf "$out/shared/fixtures"
  cp -r "$shared/fixtures" "$out/shared/"
fi
# Shared libraries the GPU machine lacks for `dsv4` (cpp-httplib and its brotli; `dsv4 serve`):
# copied from this machine into prebuilt/lib, which the device scripts put on LD_LIBRARY_PATH.
mkdir -p "$out/lib"
ldd "$b/dsv4" | awk '/=> \// {print $3}' | grep -E 'libcpp-httplib|libbrotli' | while read -r so; do
  cp -L "$so" "$out/lib/"
done
du -sh "$out"
# Debug info and symbols are not needed on the device; the archive keeps the carry small.
(cd "$out" && strip --strip-all dsv4_gpu_tests test_gemv_ref dsv4 dsv4-bench bench_* 2>/dev/null || true)
tar -C third_party -cf - prebuilt | xz -T0 -6 > third_party/carry.tar.xz
ls -la third_party/carry.tar.xz
