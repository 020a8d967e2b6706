#!/usr/bin/env python3
"""Seed corpora for the libFuzzer targets in tests/fuzz, built from the repository's own data:
chat vectors (tests/data/chat-vectors), the tokenizer files (data/tokenizer), the Flash config
(tests/data/dsv4-flash-config.json) and, when a generated model folder is given (`dsv4 make-model
--preset tiny`), its config.json and safetensors headers. Usage: make_seeds.py OUT_DIR [MODEL_DIR].
Writes OUT_DIR/<target>/<name> files; deterministic, a few MB in all."""
import hashlib
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out_root = sys.argv[1]
model_dir = sys.argv[2] if len(sys.argv) > 2 else None


def put(target, data, name=None):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(out_root, target)
    os.makedirs(d, exist_ok=True)
    name = name or hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors_bytes(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, nbytes)."""
    header, off = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, nbytes in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + nbytes]}
        off += nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (len(h) + 8) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + bytes(off)


# ---- safetensors (first byte even: one file; odd: an index over the fixed shards) ---------------
SIZES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "F8_E4M3": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "I16": 2,
         "I32": 4, "I64": 8, "BOOL": 1}
put("safetensors", b"\x00" + safetensors_bytes([("a", "F32", [2, 3], 24), ("b", "BF16", [4], 8)],
                                                {"format": "pt", "note": "seed"}), "small")
put("safetensors", b"\x00" + safetensors_bytes([("e", "I64", [0], 0), ("f", "U8", [3], 3)]), "empty-tensor")
put("safetensors", b"\x00" + safetensors_bytes([(f"t{i}", d, [i + 1], (i + 1) * SIZES[d])
                                                 for i, d in enumerate(SIZES)]), "all-dtypes")
index = {"metadata": {"total_size": 40},
         "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                        "c": "model-00002-of-00002.safetensors"}}
put("safetensors", b"\x01" + json.dumps(index, indent=2).encode(), "index")
put("safetensors", b"\x01" + json.dumps({"weight_map": {"a": "../outside.safetensors"}}).encode(), "index-escape")
if model_dir:
    for fn in sorted(os.listdir(model_dir)):
        p = os.path.join(model_dir, fn)
        if fn.endswith(".safetensors"):
            with open(p, "rb") as f:
                n = struct.unpack("<Q", f.read(8))[0]
                hdr = json.loads(f.read(n))
            meta = hdr.pop("__metadata__", None)
            small = [(k, v["dtype"], v["shape"], v["data_offsets"][1] - v["data_offsets"][0])
                     for k, v in hdr.items() if v["data_offsets"][1] - v["data_offsets"][0] <= 4096][:48]
            if small:
                put("safetensors", b"\x00" + safetensors_bytes(small, meta), "model-" + fn)
        elif fn == "model.safetensors.index.json":
            with open(p, "rb") as f:
                put("safetensors", b"\x01" + f.read(), "model-index")
        elif fn == "config.json":
            with open(p, "rb") as f:
                put("config", f.read(), "tiny-config.json")

# ---- config.json ---------------------------------------------------------------------------
with open(os.path.join(ROOT, "tests/data/dsv4-flash-config.json")) as f:
    spec = json.load(f)
hf = spec["hf_config_json"]
put("config", json.dumps(hf, indent=2), "flash-hf.json")
put("config", json.dumps(spec["inference_config_json"]), "flash-inference.json")
tr = {k: v for k, v in hf.items() if k not in ("compress_ratios", "num_hash_layers", "qk_rope_head_dim", "rope_scaling")}
tr.update({"layer_types": spec["derived"]["hf_layer_types"], "mlp_layer_types": spec["derived"]["hf_mlp_layer_types"],
           "compress_rates": spec["derived"]["hf_compress_rates"],
           "partial_rotary_factor": spec["derived"]["hf_partial_rotary_factor"],
           "rope_parameters": {"main": {"rope_theta": 10000},
                               "compress": {"rope_theta": 160000, "rope_type": "yarn", "factor": 16,
                                            "original_max_position_embeddings": 65536,
                                            "beta_fast": 32, "beta_slow": 1}}})
put("config", json.dumps(tr), "flash-transformers.json")
tiny = dict(hf, vocab_size=1024, hidden_size=256, num_hidden_layers=6, num_attention_heads=4, head_dim=128,
            q_lora_rank=256, o_groups=2, o_lora_rank=128, sliding_window=16, index_n_heads=4, index_topk=8,
            n_routed_experts=16, moe_intermediate_size=128, compress_ratios=[0, 0, 4, 16, 4, 16, 0])
put("config", json.dumps(tiny), "tiny-hf.json")
# Merge-patch inputs (byte 0 = base: even Flash, odd tiny; then a JSON patch).
for name, base, patch in [("patch-none", 0, {}), ("patch-window", 1, {"sliding_window": 4096}),
                          ("patch-sinkhorn", 0, {"hc_sinkhorn_iters": 1000}),
                          ("patch-prf", 1, {"qk_rope_head_dim": None, "partial_rotary_factor": 0.5}),
                          ("patch-rope", 0, {"rope_scaling": {"factor": 4, "type": "yarn"}, "rope_theta": 5e5}),
                          ("patch-layers", 1, {"layer_types": spec["derived"]["hf_layer_types"][:6],
                                               "compress_ratios": None,
                                               "compress_rates": {"heavily_compressed_attention": 8}}),
                          ("patch-mlp", 1, {"mlp_layer_types": ["hash_moe"] * 2 + ["moe"] * 4, "num_hash_layers": None})]:
    put("config", bytes([base]) + json.dumps(patch).encode(), name)

# ---- tokenizer (tokenizer JSON, NUL, text; or text alone for the real tokenizer) -------------
texts = ["Hello, world!", "  leading and trailing  ", "数字 12345 和汉字", "tabs\tand\nnewlines\r\n\r\n",
         "emoji 😀 and combining é", " " * 300 + "x", "\n" * 40, "<｜begin▁of▁sentence｜>hi<｜end▁of▁sentence｜>",
         "x" * 200, "'s 're 'll don't", "½ ⅓ ① ¹²³", "\u00a0\u2028\u3000 odd spaces"]
cases = os.path.join(ROOT, "tests/data/chat-vectors/chat-token-cases.jsonl")
if os.path.exists(cases):
    with open(cases, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"][:2000])
for i, t in enumerate(texts):
    put("tokenizer", t, f"text-{i:03d}")


def reduced_tokenizer(path, keep_ids, keep_added):
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    vocab = {t: i for t, i in j["model"]["vocab"].items() if i < keep_ids}
    merges = []
    for m in j["model"]["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    j["model"]["vocab"] = vocab
    j["model"]["merges"] = merges
    added = sorted(j.get("added_tokens") or [], key=lambda t: t["id"])[:keep_added]
    for k, t in enumerate(added):  # renumbered right after the kept vocabulary
        t["id"] = keep_ids + k
    j["added_tokens"] = added
    return json.dumps(j, ensure_ascii=False, separators=(",", ":"))


for fn, keep in (("tokenizer.json", 1500), ("tokenizer-v4-reconstructed.json", 800)):
    p = os.path.join(ROOT, "data/tokenizer", fn)
    if os.path.exists(p):
        tj = reduced_tokenizer(p, keep, 24)
        for i, t in enumerate(texts[:6]):
            put("tokenizer", tj + "\0" + t, f"reduced-{fn}-{i}")
tiny_tok = {"version": "1.0", "added_tokens": [{"id": 7, "content": "<s>", "special": True, "lstrip": False,
                                                "rstrip": False, "normalized": False, "single_word": False},
                                               {"id": 8, "content": " ab", "special": False, "lstrip": True,
                                                "rstrip": True, "normalized": True, "single_word": True}],
            "normalizer": {"type": "Sequence", "normalizers": []},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": "\\s+(?!\\S)|\\s+"}, "behavior": "MergedWithPrevious", "invert": False},
                {"type": "Split", "pattern": {"String": "c"}, "behavior": "Contiguous", "invert": True},
                {"type": "ByteLevel", "add_prefix_space": True, "use_regex": True}]},
            "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}],
                               "special_tokens": {"<s>": {"ids": [7]}}},
            "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4, "Ġa": 5, "abc": 6},
                      "merges": ["a b", "Ġ a", "ab c"]}}
put("tokenizer", json.dumps(tiny_tok) + "\0" + "ab abc c  ab<s>", "tiny")

# ---- chat: encode (request objects / message arrays) and parse (flags byte + completion) ------
vec_root = os.path.join(ROOT, "tests/data/chat-vectors")
for sub in ("official", "derived"):
    d = os.path.join(vec_root, sub)
    for fn in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if not fn.endswith(".json"):
            continue
        with open(os.path.join(d, fn), encoding="utf-8") as f:
            v = json.load(f)
        mode = (v.get("params") or {}).get("thinking_mode", "chat")
        if v.get("kind") == "encode":
            put("chat_encode", json.dumps(v, ensure_ascii=False), fn)
            put("chat_encode", json.dumps(v["messages"], ensure_ascii=False), "msgs-" + fn)
            prompt = v.get("expected_prompt")
            if prompt:  # a whole prompt is also a hard completion to parse
                put("chat_parse", bytes([2 if mode == "thinking" else 0]) + prompt.encode(), "prompt-" + fn)
        elif v.get("kind") == "parse":
            flag = 1 if mode == "thinking" else 0
            comp = v["completion"].encode()
            put("chat_parse", bytes([flag]) + comp, fn)
            put("chat_parse", bytes([flag | 0x50]) + comp, "split-" + fn)

# ---- server request bodies: selector byte (0 completions, 1 chat, 2 tokenize, 3 detokenize) + JSON
server_seeds = [
    (0, {"model": "m", "prompt": "Once upon a time,", "max_tokens": 8, "temperature": 0.5}),
    (0, {"prompt": [[1, 2, 3], [4, 5]], "n": 2, "stop": ["\n"], "logprobs": 2, "echo": True, "stream": True,
         "stream_options": {"include_usage": True}, "logit_bias": {"7": -100}, "seed": 3}),
    (1, {"model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
         "max_tokens": 4, "top_p": 0.9, "logprobs": True, "top_logprobs": 3}),
    (1, {"messages": [{"role": "user", "content": "weather?"}],
         "tools": [{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}],
         "tool_choice": {"type": "function", "function": {"name": "get"}}, "chat_template_kwargs": {"thinking": True}}),
    (2, {"prompt": "hello world", "add_special_tokens": False}),
    (2, {"messages": [{"role": "user", "content": "x"}]}),
    (3, {"tokens": [0, 1, 2, 100]}),
]
for i, (sel, body) in enumerate(server_seeds):
    put("server_request", bytes([sel]) + json.dumps(body, ensure_ascii=False).encode(), f"req{i}")

# ---- dictionaries (libFuzzer -dict): the tokens each format is made of ---------------------------


def dict_line(s):
    return '"' + "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "".join(f"\\x{b:02x}" for b in c.encode())
                         for c in s) + '"'


DSML = "｜DSML｜"
dicts = {
    "chat_parse": ["<think>", "</think>", "<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>", "\n\n<" + DSML + "tool_calls>",
                   "</" + DSML + "tool_calls>", "<" + DSML + "invoke name=\"", "</" + DSML + "invoke>",
                   "<" + DSML + "parameter name=\"", "\" string=\"true\">", "\" string=\"false\">",
                   "</" + DSML + "parameter>", DSML, "\">\n", "{\"a\": 1}"],
    "server_request": ["\"prompt\"", "\"messages\"", "\"max_tokens\"", "\"max_completion_tokens\"", "\"n\"",
                       "\"stream\"", "\"stop\"", "\"logprobs\"", "\"top_logprobs\"", "\"logit_bias\"", "\"tools\"",
                       "\"tool_choice\"", "\"temperature\"", "\"top_p\"", "\"seed\"", "\"tokens\"", "\"echo\"",
                       "\"stream_options\"", "\"response_format\"", "1e308", "-1", "2147483648", "null"],
    "chat_encode": ["\"role\"", "\"content\"", "\"user\"", "\"assistant\"", "\"system\"", "\"developer\"", "\"tool\"",
                    "\"tools\"", "\"tool_calls\"", "\"function\"", "\"arguments\"", "\"name\"", "\"reasoning_content\"",
                    "\"thinking_mode\"", "\"thinking\"", "\"chat\"", "\"messages\"", "\"reasoning_effort\"", "\"max\"",
                    "\"tool_call_id\"", "\"latest_reminder\"", "\"direct_search_results\"", "\"task\"", "\"wo_eos\"",
                    "\"mask\"", "\"response_format\"", "\"drop_thinking\"", "\"context\"", "\"revision\"", "\"0731\"",
                    "\"params\"", "\"id\"", "\"type\"", "\"text\"", "\"tool_result\"", "\"tool_use_id\""],
    "config": ['"' + k + '"' for k in hf] + ['"' + k + '"' for k in tr] + ["1e308", "-1", "2147483648", "0.5", "null"],
    "safetensors": ["\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"", "\"weight_map\"", "\"F32\"",
                    "\"BF16\"", "\"F8_E4M3\"", "\"I64\"", "\"../outside.safetensors\"", "\"/etc/passwd\"",
                    "\"sub/nested.safetensors\"", "\"model-00002-of-00002.safetensors\"", "18446744073709551615"],
    "tokenizer": ["\"type\"", "\"Sequence\"", "\"Split\"", "\"ByteLevel\"", "\"pretokenizers\"", "\"Regex\"", "\"String\"",
                  "\"behavior\"", "\"Isolated\"", "\"Removed\"", "\"MergedWithPrevious\"", "\"MergedWithNext\"",
                  "\"Contiguous\"", "\"invert\"", "\"added_tokens\"", "\"special\"", "\"lstrip\"", "\"rstrip\"",
                  "\"single_word\"", "\"normalized\"", "\"TemplateProcessing\"", "\"RobertaProcessing\"", "\"merges\"",
                  "\"vocab\"", "\"unk_token\"", "\"byte_fallback\"", "\"ignore_merges\"", "\\\\s+(?!\\\\S)", "\\\\p{L}+",
                  " ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "<｜end▁of▁sentence｜>"],
}
for target, words in dicts.items():
    with open(os.path.join(out_root, target + ".dict"), "w") as f:
        f.write("\n".join(dict_line(w) for w in dict.fromkeys(words)) + "\n")
