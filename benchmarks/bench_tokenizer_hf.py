"""Hugging Face `tokenizers` side of benchmarks/bench_tokenizer.cpp: encodes the same corpus file
single-threaded and prints one JSON object (MB/s, tokens/s, token count, ids digest), both as one
string (`encode`) and as documents (`encode_batch`, which runs sequentially with one thread).
    python3 benchmarks/bench_tokenizer_hf.py --tokenizer T.json --text corpus.txt --docs docs.jsonl [--runs 5]
"""
import os

# Single thread, set before the library is imported.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402


def fnv1a(ids):
    h = 0xcbf29ce484222325
    for i in ids:
        h = ((h ^ (i & 0xffffffff)) * 0x100000001b3) & 0xffffffffffffffff
    return h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--docs", required=True, help="the same corpus as JSON lines {\"text\": ...}, one per document")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    try:
        import tokenizers
    except ImportError:
        print(json.dumps({"error": "tokenizers not installed"}))
        return 0
    tok = tokenizers.Tokenizer.from_file(a.tokenizer)
    # newline="" keeps \r and \r\n exactly as written (the C++ side reads bytes).
    text = open(a.text, encoding="utf-8", newline="").read()
    docs = [json.loads(l)["text"] for l in open(a.docs, encoding="utf-8")]
    nbytes = len(text.encode("utf-8"))

    def measure(fn):
        times, ids = [], []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            ids = fn()
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        return {"seconds": t, "mb_s": nbytes / t / 1e6, "tok_s": len(ids) / t, "tokens": len(ids),
                "digest": fnv1a(ids)}

    whole = measure(lambda: tok.encode(text, add_special_tokens=False).ids)
    batch = measure(lambda: [i for e in tok.encode_batch(docs, add_special_tokens=False) for i in e.ids])
    print(json.dumps({"engine": f"tokenizers {tokenizers.__version__}", "whole": whole, "docs": batch}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
