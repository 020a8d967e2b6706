#!/usr/bin/env bash
# Runs on the GPU machine (device tool, carry ["third_party/carry.tar.xz"] from scripts/gpu-prebuild.sh):
# Nsight Compute per-kernel tables of one batch-1 decode step and of a prefill chunk, on synthetic
# full-width weights (dsv4-bench), plus the 43-layer decode figure; logs and CSVs in $OUT. Turn the
# CSVs into tables with benchmarks/ncu-kernel-table.py (--order N: launches in order).
#   LAYERS (default 4: two sliding, one CSA, one HCA layer), PREFILL (default 8192; empty = none)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
B=third_party/prebuilt
[ -d "$B" ] || tar -xJf third_party/carry.tar.xz -C third_party
L=${LAYERS:-4}
"$B/dsv4-bench" --layers 43 --experts 192 --top-k 4 --decode-steps 16 --batches "" --prefill "" >"$OUT/decode43.txt" 2>&1
sed -n '/^metric/,$p' "$OUT/decode43.txt"
ncu --clock-control none --metrics gpu__time_duration.sum --csv "$B/dsv4-bench" --layers "$L" --experts 192 --top-k 4 \
  --context 512 --decode-steps 2 --batches "" --prefill "" >"$OUT/ncu-decode.csv" 2>&1
if [ -n "${PREFILL-8192}" ]; then
  timeout 300 ncu --clock-control none --metrics gpu__time_duration.sum --csv "$B/dsv4-bench" --layers 1 --experts 192 \
    --top-k 4 --context 32 --decode-steps 1 --batches "" --prefill "${PREFILL-8192}" >"$OUT/ncu-prefill.csv" 2>&1
fi
ls -la "$OUT"
