#!/usr/bin/env bash
# Runs on the GPU machine (device tool, carry=["third_party"]): configures and builds with CUDA for
# sm_90a against the PCRE2 sysroot from scripts/carry-deps.sh, runs the GPU and GEMV tests through
# CTest and the GEMV benchmark, and leaves logs + JSON in $OUT. With PREBUILT=1 it skips the build
# and runs binaries carried in third_party/prebuilt (built here from the same tree) to save time.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/find-nccl.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv >"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
rc=0
if [ "${PREBUILT:-0}" = 1 ]; then
  bin=third_party/prebuilt
  # scripts/gpu-prebuild.sh packs the binaries (the carry limit): unpack once.
  [ -d "$bin" ] || tar -xJf third_party/carry.tar.xz -C third_party
  # The fixtures travel with the binaries (scripts/gpu-prebuild.sh copies ../shared/fixtures).
  [ -d "$bin/shared" ] && export DSV4_SHARED_DIR=$PWD/$bin/shared
  "$bin/test_gemv_ref" 2>&1 | tail -3 | tee "$OUT/tests.log" || rc=1
  # Every GPU test case: kernels (dense, attention, GEMV) and the CUDA forward end to end.
  "$bin/dsv4_gpu_tests" ${GPU_TEST_FILTER:-} 2>&1 | tee -a "$OUT/tests.log" | grep -v "^moe\|^fp8" | tail -${TAIL:-60}
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  if [ "${SANITIZE:-0}" = 1 ]; then
    # compute-sanitizer over the kernel tests, and memcheck over the tiny-a forward cases (the
    # 2300-token runs are too slow under it); each tool's summary to stdout, the logs to $OUT.
    for tool in memcheck racecheck initcheck; do
      timeout "${SANITIZE_TIMEOUT:-300}" compute-sanitizer --tool $tool --error-exitcode 9 "$bin/dsv4_gpu_tests" \
        "${SANITIZE_FILTER:-[dense],[attention]}" >"$OUT/sanitize-$tool.log" 2>&1 || rc=1
      echo "compute-sanitizer $tool: $(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|test cases" "$OUT/sanitize-$tool.log" | tr '\n' ' ')"
    done
    timeout "${SANITIZE_TIMEOUT:-300}" compute-sanitizer --tool memcheck --error-exitcode 9 "$bin/dsv4_gpu_tests" \
      '[forward]~[slow]' >"$OUT/sanitize-memcheck-forward.log" 2>&1 || rc=1
    echo "compute-sanitizer memcheck, tiny-a forward: $(grep -E "ERROR SUMMARY|test cases" "$OUT/sanitize-memcheck-forward.log" | tr '\n' ' ')"
  fi
  bench=$bin/bench_gemv
  if [ "${NOBENCH:-0}" != 1 ]; then
    # Every CUDA micro-benchmark (kernel vs the path it replaces, same run), then dsv4-bench end to
    # end (synthetic full-width weights in device memory) and, with HF=1, the transformers peer.
    for b in "$bin"/bench_*; do
      n=$(basename "$b")
      [ "$n" = bench_gemv ] && continue
      timeout "${BENCH_TIMEOUT:-300}" "$b" --json "$OUT/$n.json" >"$OUT/$n.txt" 2>&1 || rc=1
      echo "== $n"; tail -${BENCH_TAIL:-14} "$OUT/$n.txt"
    done
    # shellcheck disable=SC2086
    timeout "${BENCH_TIMEOUT:-300}" "$bin/dsv4-bench" ${DSV4_BENCH_ARGS:-} --json "$OUT/dsv4-bench.json" \
      >"$OUT/dsv4-bench.txt" 2>&1 || rc=1
    echo "== dsv4-bench"; sed -n '/^metric/,$p' "$OUT/dsv4-bench.txt"
    if [ "${HF:-0}" = 1 ]; then
      # shellcheck disable=SC2086
      timeout "${BENCH_TIMEOUT:-300}" python3 benchmarks/bench_hf.py ${HF_ARGS:-} --json "$OUT/hf.json" \
        >"$OUT/hf.txt" 2>&1 || rc=1
      echo "== bench_hf"; tail -12 "$OUT/hf.txt"
    fi
  fi
else
  root=$PWD/third_party/sysroot
  [ -d "$root" ] || { echo "missing $root: run scripts/carry-deps.sh here first" >&2; exit 2; }
  # The .pc files say prefix=/usr; PKG_CONFIG_SYSROOT_DIR re-roots their -I/-L paths.
  export PKG_CONFIG_PATH=$root/usr/lib/x86_64-linux-gnu/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$root
  export CMAKE_PREFIX_PATH=$root/usr
  bdir=build-device
  cmake -S . -B $bdir -G Ninja -DDSV4_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DCMAKE_BUILD_TYPE=Release >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 3; }
  cmake --build $bdir -j"$(nproc)" --target dsv4_gpu_tests test_gemv_ref bench_gemv >"$OUT/build.log" 2>&1 ||
    { grep -E "error|FAILED" "$OUT/build.log" | head -40; exit 4; }
  (cd $bdir && ctest -R "gpu_kernels|test_gemv_ref" -V) >"$OUT/tests.log" 2>&1 || rc=1
  grep -E "tests passed|Failed|FAILED|assertions|Passed|worst" "$OUT/tests.log" | tail -25
  bench=$bdir/benchmarks/bench_gemv
fi
if [ "${PROFILE:-0}" = 1 ]; then
  # Nsight Compute on the --probe launches (clocks left alone); a digest goes to stdout.
  ncu --clock-control none -k "${NCU_KERNELS:-regex:fp8_direct|gemv_kernel|ring_kernel}" --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --section WarpStateStats --section LaunchStats --section Occupancy \
    --section SchedulerStats ${NCU_EXTRA:-} --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
    "$bench" --probe >"$OUT/ncu.txt" 2>&1 || rc=1
  # digest: kernel, duration, DRAM %, issue activity, the five largest stall reasons
  awk '/\(([0-9]+), 1, 1\)x\(/{if(k!="")print k; k=$0; next}
       /Duration/{k=k" | dur "$NF} /DRAM Throughput/{k=k" | dram% "$NF} /Issued Warp Per Scheduler/{k=k" | ipc/sched "$NF}
       /smsp__average_warps_issue_stalled_/{split($1,a,"stalled_"); sub("_per_issue_active.ratio","",a[2]); if($NF+0>0.3)k=k" | "a[2]"="$NF}
       END{print k}' "$OUT/ncu.txt" | sed 's/(.*Params) //; s/  */ /g' | cut -c1-400
fi
[ "${NOBENCH:-0}" = 1 ] || { "$bench" "$OUT/bench_gemv.json" 2>&1 | tee "$OUT/bench.txt" || rc=1; }
exit $rc
