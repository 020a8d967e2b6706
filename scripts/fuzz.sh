#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang (ASan + UBSan) into build-fuzz and runs each
# for SECONDS, one after the other (never in parallel).
#   scripts/fuzz.sh [SECONDS] [TARGET...]      targets: safetensors config tokenizer chat_encode chat_parse
#                                              server_request
# The corpus grows in build-fuzz/corpus/<target> (kept between runs); crashes, timeouts and
# out-of-memory inputs land in build-fuzz/artifacts/<target>/ and make the script fail (each one
# then becomes a regression test in tests/test_robustness_*.cpp). Seeds come from the repository's
# data (tests/fuzz/make_seeds.py; DSV4_FUZZ_MODEL=<dir of `dsv4 make-model`> adds a generated
# model's config and safetensors headers). Without clang or its libFuzzer runtime the script says
# so and exits 0. Env: DSV4_FUZZ_BUILD (folder), DSV4_FUZZ_ARGS (extra libFuzzer flags).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(safetensors config tokenizer chat_encode chat_parse server_request)
build=${DSV4_FUZZ_BUILD:-build-fuzz}

if ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz: clang++ not found: skipping the fuzz targets (Debian: apt-get install clang)"
  exit 0
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' >"$probe/p.cpp"
if ! clang++ -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" >/dev/null 2>&1; then
  echo "fuzz: clang++ cannot link -fsanitize=fuzzer (libFuzzer runtime missing): skipping the fuzz targets"
  exit 0
fi

gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
CC=clang CXX=clang++ cmake -S tests/fuzz -B "$build" "${gen[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}")
rm -rf "$build/seeds"
python3 tests/fuzz/make_seeds.py "$build/seeds" ${DSV4_FUZZ_MODEL:-}

# Per target: the longest input tried (long enough for the O(n²) shapes to show as timeouts).
declare -A max_len=([safetensors]=65536 [config]=16384 [tokenizer]=262144 [chat_encode]=65536 [chat_parse]=131072
                   [server_request]=65536)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  art="$build/artifacts/$t"
  mkdir -p "$corpus" "$art"
  dict=()
  [ -f "$build/seeds/$t.dict" ] && dict=(-dict="$build/seeds/$t.dict")
  echo "== fuzz_$t: ${secs}s"
  start=$(date +%s)
  # -timeout: one input running > 10 s is a hang; -malloc_limit_mb: one allocation > 1 GB from an
  # input this small is a finding too.
  if ! "$build/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=3072 -malloc_limit_mb=1024 \
      -max_len="${max_len[$t]}" -artifact_prefix="$art/" -print_final_stats=1 "${dict[@]}" ${DSV4_FUZZ_ARGS:-} \
      "$corpus" "$build/seeds/$t" >"$build/fuzz_$t.log" 2>&1; then
    status=1
    echo "fuzz_$t: FAILED after $(($(date +%s) - start))s; see $build/fuzz_$t.log and $art/"
    grep -E "ERROR|FUZZ_CHECK|SUMMARY|Test unit written" "$build/fuzz_$t.log" | head -20 || true
    continue
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$build/fuzz_$t.log" | grep -o '[0-9]*$' || echo '?')
  echo "fuzz_$t: ok, $runs inputs in $(($(date +%s) - start))s, corpus $(ls "$corpus" | wc -l) files"
done
exit $status
