#!/usr/bin/env bash
# `dsv4 serve` with the CUDA backend on the GPU machine (device tool, carry ["third_party/carry.tar.xz"]
# from scripts/gpu-prebuild.sh): benchmarks/bench_server.py against its own server on (1) the tiny
# random model (server + scheduler + CUDA launch overhead), (2) a full-width (Flash) model of
# $FLASH_LAYERS layers × $FLASH_EXPERTS experts made by `dsv4 make-model` on the machine's disk, and
# (3) the null backend in the same run (server overhead alone). Tables and JSON in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/find-nccl.sh"
B=third_party/prebuilt
[ -d "$B" ] || tar -xJf third_party/carry.tar.xz -C third_party
export LD_LIBRARY_PATH=$PWD/$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export DSV4_CLI=$PWD/$B/dsv4
CONC=${CONC:-1,8,32}
tmp=$(mktemp -d)
for be in cuda null; do
  timeout 300 python3 benchmarks/bench_server.py --backend $be --concurrency "$CONC" --json "$OUT/serve-tiny-$be.json" \
    >"$OUT/serve-tiny-$be.txt" 2>&1
  echo "== tiny, $be (rc=$?)"; tail -6 "$OUT/serve-tiny-$be.txt"
done
L=${FLASH_LAYERS:-2} E=${FLASH_EXPERTS:-32}
t0=$(date +%s)
"$DSV4_CLI" make-model --preset flash --layers "$L" --experts "$E" --seed 5 \
  --tokenizer data/tokenizer/tokenizer.json --out "$tmp/flash" >"$OUT/make-model.txt" 2>&1
echo "make-model flash ${L}x${E}: rc=$? in $(( $(date +%s) - t0 )) s, $(du -sh "$tmp/flash" | cut -f1)"
timeout 400 python3 benchmarks/bench_server.py --backend cuda --model "$tmp/flash" --concurrency "$CONC" \
  --json "$OUT/serve-flash-cuda.json" >"$OUT/serve-flash-cuda.txt" 2>&1
echo "== flash ${L}x${E}, cuda (rc=$?)"; tail -6 "$OUT/serve-flash-cuda.txt"
rm -rf "$tmp"
