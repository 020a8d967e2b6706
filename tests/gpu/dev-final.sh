#!/usr/bin/env bash
# The session's closing device round (device tool, carry ["third_party/carry.tar.xz"]): kernel and
# forward tests, decode with and without the tensor-core decode linears, the full dsv4-bench, the
# FP8 rows of the linear benchmark, memcheck over the linear tests. Logs in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/find-nccl.sh"
B=third_party/prebuilt
[ -d "$B" ] || tar -xJf third_party/carry.tar.xz -C third_party
export DSV4_SHARED_DIR=$PWD/$B/shared
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
timeout 150 "$B/dsv4_gpu_tests" "[linear_small],[dense],[forward]~[slow]" >"$OUT/tests.txt" 2>&1
echo "tests rc=$?"; grep -E "FAILED|passed|failed" "$OUT/tests.txt" | head -8
for p in on off; do
  timeout 60 "$B/dsv4-bench" --layers 43 --experts 192 --top-k 4 --decode-steps 16 --batches "" --prefill "" \
    --params linear_mma=$p >"$OUT/decode-mma-$p.txt" 2>&1
  echo "linear_mma=$p: $(grep 'decode batch 1' "$OUT/decode-mma-$p.txt")"
done
timeout 200 "$B/dsv4-bench" --layers 43 --experts 192 --top-k 4,6 --decode-steps 16 --batches 8 --prefill 1024,8192 \
  --json "$OUT/dsv4-bench.json" ${BENCH_PARAMS:+--params $BENCH_PARAMS} >"$OUT/dsv4-bench.txt" 2>&1
echo "dsv4-bench rc=$?"; sed -n '/^metric/,$p' "$OUT/dsv4-bench.txt"
timeout 60 "$B/bench_linear_small" --only fp8 --reps 15 >"$OUT/bls.txt" 2>&1
grep -E "  1 |  4 " "$OUT/bls.txt"
timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$B/dsv4_gpu_tests" "[linear_small]" >"$OUT/memcheck.txt" 2>&1
echo "memcheck rc=$?: $(grep -E 'ERROR SUMMARY|test cases' "$OUT/memcheck.txt" | tr '\n' ' ')"
