"""Randomized differential test: libdsv4's tokenizer (through `dsv4 tokenize`) against Hugging Face
`tokenizers` on generated strings mixing scripts, digits, whitespace runs, emoji, combining marks and
added-token texts. Compares ids without and with special tokens, and decode(ids) with the original.

Runs under pytest (skips when `tokenizers` or the dsv4 binary is missing) or as a script for CTest
(exit 77 = skipped):
    python3 tests/python/test_tokenizer_diff.py --cli build/dsv4 [--count 3000] [--seed 1]
Environment for pytest: DSV4_CLI (path of dsv4), DSV4_DIFF_COUNT, DSV4_DIFF_SEED.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(ROOT, "data", "tokenizer")
TOKENIZER_FILES = ["tokenizer.json", "tokenizer-v4-reconstructed.json"]

# Character pools; each generated string draws runs from several of them.
POOLS = {
    "ascii": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "digits": "0123456789" + "٠١٢٣٤٥٦٧٨٩" + "０１２３４５" + "²³¹½⅓Ⅻ" + "߀१२३",
    "space": [" ", " ", " ", "  ", "\t", "\n", "\n\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2009", "\u0085",
              "\u180e", "\u200b", "\u2028", "\x0b", "\x0c", "\ufeff"],
    "punct": list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["。", "、", "「", "」", "—", "…", "«", "»", "¿", "¡",
                                                         "€", "£", "©", "°", "±", "→", "∑", "√"],
    "cjk": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年日本語漢字カタカナひらがなゟ゠ヿ龥龦",
    "hangul": "한국어토큰화테스트똠방각하",
    "cyrillic": "приветмирЁЖЩ",
    "greek": "αβγδεζηθΩΣ",
    "arabic": "مرحبابالعالم",
    "devanagari": "नमस्तेदुनियाक्षत्रज्ञ",
    "thai": "สวัสดีชาวโลก",
    "combining": ["e\u0301", "a\u0308", "n\u0303", "\u0301", "\u0308\u0308", "o\u0338", "Z\u0335\u0317\u0350"],
    "emoji": ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "🤖", "🧪", "✨", "🏳️‍🌈", "\U0001F9D1\u200D\U0001F4BB"],
    "code": ["def f(x):", "    return x+1", "if (a && b) {", "}", "int main()", "std::vector<int>", "->", "=>",
             "x = [1, 2, 3]", "#include <stdio.h>", "// comment", "'s", "'ll", "n't", "http://a.b/c?d=e"],
}


def added_token_texts(spec):
    texts = [t["content"] for t in spec["added_tokens"]]
    random.Random(0).shuffle(texts)
    sample = texts[:40] + ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
                           "<think>", "</think>", "｜DSML｜", "<｜tool▁calls▁begin｜>"]
    # Near misses: prefixes and fragments of added tokens.
    sample += ["<｜User", "<think", "｜DSML", "<｜", "｜>", "</", "<|", "<｜begin▁of"]
    return sample


def gen_string(rng, tokens):
    parts = []
    for _ in range(rng.randint(1, 12)):
        kind = rng.choice(list(POOLS) + ["added", "added", "digits_run", "space_run"])
        if kind == "added":
            parts.append(rng.choice(tokens))
        elif kind == "digits_run":
            parts.append("".join(rng.choice("0123456789") for _ in range(rng.randint(1, 9))))
        elif kind == "space_run":
            parts.append("".join(rng.choice(POOLS["space"]) for _ in range(rng.randint(1, 6))))
        else:
            pool = POOLS[kind]
            parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
    return "".join(parts)


def variant_with_flags(spec):
    """A copy of the tokenizer whose added tokens exercise lstrip / rstrip / single_word / normalized."""
    spec = json.loads(json.dumps(spec))
    flags = [("lstrip", True), ("rstrip", True), ("single_word", True), ("normalized", True),
             ("normalized", False)]
    for i, t in enumerate(spec["added_tokens"]):
        if t["content"] in ("<｜begin▁of▁sentence｜>",):
            continue
        key, val = flags[i % len(flags)]
        t[key] = val
    # New tokens take the next free ids (`tokenizers` renumbers added tokens that leave a gap).
    next_id = max(t["id"] for t in spec["added_tokens"]) + 1
    spec["added_tokens"].append({"id": next_id, "content": "qzword", "single_word": True,
                                 "lstrip": True, "rstrip": False, "normalized": True, "special": False})
    spec["added_tokens"].append({"id": next_id + 1, "content": " sp ", "single_word": False,
                                 "lstrip": False, "rstrip": True, "normalized": False, "special": True})
    return spec


def run_cli(cli, tok_path, lines, *flags):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
        for x in lines:
            f.write(json.dumps(x, ensure_ascii=False) + "\n")
        name = f.name
    try:
        args = [cli, "tokenize", "--tokenizer", tok_path, *flags, name]
        out = subprocess.run(args, capture_output=True, text=True, encoding="utf-8")
        if out.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {out.stderr}")
        # split on "\n" only: str.splitlines() also breaks at U+2028, U+0085, \f ...
        return [json.loads(l) for l in out.stdout.split("\n") if l]
    finally:
        os.unlink(name)


def diff_one(cli, tok_path, spec_path, count, seed, log):
    from tokenizers import Tokenizer
    hf = Tokenizer.from_file(spec_path)
    spec = json.load(open(spec_path, encoding="utf-8"))
    rng = random.Random(seed)
    tokens = added_token_texts(spec) + ["qzword", " sp ", "aqzword b", "qzwordy", " sp  x", "qzword"]
    texts = [gen_string(rng, tokens) for _ in range(count)] + ["", " ", "\n", "qzword", " sp "]
    ours = [r["ids"] for r in run_cli(cli, tok_path, [{"text": t} for t in texts], "--jsonl")]
    ours_sp = [r["ids"] for r in run_cli(cli, tok_path, [{"text": t} for t in texts], "--add-special", "--jsonl")]
    ours_dec = [r["text"] for r in run_cli(cli, tok_path, [{"ids": ids} for ids in ours], "--decode-jsonl")]
    failures = 0
    for t, ids, ids_sp, dec in zip(texts, ours, ours_sp, ours_dec):
        ref = hf.encode(t, add_special_tokens=False).ids
        ref_sp = hf.encode(t, add_special_tokens=True).ids
        ref_dec = hf.decode(ref, skip_special_tokens=False)
        problems = []
        if ids != ref:
            problems.append(f"ids\n    ours {ids}\n    hf   {ref}")
        if ids_sp != ref_sp:
            problems.append(f"ids with special\n    ours {ids_sp}\n    hf   {ref_sp}")
        if dec != ref_dec:
            problems.append(f"decode\n    ours {dec!r}\n    hf   {ref_dec!r}")
        if problems:
            failures += 1
            if failures <= 10:
                log(f"MISMATCH {os.path.basename(tok_path)} text={t!r}: " + "; ".join(problems))
    log(f"{os.path.basename(tok_path)}: {len(texts) - failures}/{len(texts)} identical to tokenizers")
    return failures


def run_all(cli, count, seed, log=print):
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in TOKENIZER_FILES:
            path = os.path.join(DATA, name)
            failures += diff_one(cli, path, path, count, seed, log)
        spec = variant_with_flags(json.load(open(os.path.join(DATA, "tokenizer.json"), encoding="utf-8")))
        vpath = os.path.join(tmp, "tokenizer-flags.json")
        json.dump(spec, open(vpath, "w", encoding="utf-8"), ensure_ascii=False)
        failures += diff_one(cli, vpath, vpath, count, seed + 1, log)
    return failures


def find_cli():
    cli = os.environ.get("DSV4_CLI")
    if cli:
        return cli
    for d in ("build", "build-tok", "build-release"):
        p = os.path.join(ROOT, d, "dsv4")
        if os.path.exists(p):
            return p
    return None


def test_tokenizer_matches_hf():
    import pytest
    pytest.importorskip("tokenizers")
    cli = find_cli()
    if not cli:
        pytest.skip("dsv4 binary not found (set DSV4_CLI)")
    count = int(os.environ.get("DSV4_DIFF_COUNT", "2000"))
    seed = int(os.environ.get("DSV4_DIFF_SEED", "1"))
    assert run_all(cli, count, seed) == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", default=find_cli())
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        print("SKIP: the `tokenizers` package is not installed (pip install tokenizers)")
        return 77
    if not a.cli or not os.path.exists(a.cli):
        print("SKIP: dsv4 binary not found (pass --cli)")
        return 77
    return 1 if run_all(a.cli, a.count, a.seed) else 0


if __name__ == "__main__":
    sys.exit(main())
