#!/usr/bin/env python3
"""bench_hf: the Hugging Face `transformers` peer figure for dsv4-bench (benchmarks/dsv4_bench.cpp).

A FULL-WIDTH DeepSeek-V4-Flash (the real Flash config, fewer layers) is built in fp32 (the only
precision HF's deepseek_v4 runs this model in) directly in device memory with HF's default random
init, and timed with HF's own modelling code (eager attention, its default experts kernel):
- batch-1 decode ms/token at `--context` tokens: prefill `--context` random ids (use_cache=True),
  one untimed warm-up step, then `--decode-steps` greedy steps feeding the argmax back;
- prefill tokens/s (= time to first token: the forward plus the argmax of the last row) at each
  `--prefill` length, for the first `--top-k` only (as dsv4-bench), after one untimed warm-up run
  of the same length; an out-of-memory prints "OOM" instead of a figure.
Top-k is a load-time setting in HF (each router copies config.num_experts_per_tok into `top_k`;
the hash routers' `tid2eid` has top_k columns), so the model is built once with the largest
top-k and, per top-k, every router's `top_k` is set and each `tid2eid` is cut to its first k
columns (the rule of the 4-expert Flash variant: first k of the 6, order kept); the weights do
not depend on k. tid2eid (zeros after HF's init, which would send every token to expert 0) is
filled with k distinct random experts per token id.
Every per-token figure is also printed as its 43-layer equivalent exactly as dsv4-bench prints
it (ms/token x 43 / layers; tokens/s / (43 / layers)), under the same metric names, so the two
tables divide row by row. A table, never an assertion.

Usage (GPU, one H200):
  python3 benchmarks/bench_hf.py --layers 3 --experts 256 --json $OUT/hf.json
Anywhere (smoke test, CPU, tiny widths):
  python3 benchmarks/bench_hf.py --device cpu --tiny
Options: --layers 3 --experts 256 --context 512 --decode-steps 16 --prefill 1024,8192 --top-k 4,6
         --json FILE --config FILE --experts-impl default|eager|grouped_mm|batched_mm --seed 7
"""
import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

# DeepSeek-V4-Flash, upstream-style config (hf_config_json of shared/spec/dsv4-flash-config.json),
# the fields dsv4_hf.hf_config reads; used when that file is not found.
FLASH = {
    "vocab_size": 129280, "hidden_size": 4096, "num_hidden_layers": 43, "num_attention_heads": 64,
    "num_key_value_heads": 1, "head_dim": 512, "qk_rope_head_dim": 64, "q_lora_rank": 1024,
    "o_groups": 8, "o_lora_rank": 1024, "sliding_window": 128, "num_hash_layers": 3,
    "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 6, "moe_intermediate_size": 2048,
    "index_n_heads": 64, "index_head_dim": 128, "index_topk": 512, "hc_mult": 4, "hc_sinkhorn_iters": 20,
    "hc_eps": 1e-06, "rms_norm_eps": 1e-06, "routed_scaling_factor": 1.5, "scoring_func": "sqrtsoftplus",
    "norm_topk_prob": True, "swiglu_limit": 10.0, "rope_theta": 10000, "compress_rope_theta": 160000,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 16, "original_max_position_embeddings": 65536,
                     "type": "yarn"},
    "max_position_embeddings": 1048576, "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 1,
    "compress_ratios": [0, 0] + [4, 128] * 20 + [4, 0],
}
CONFIG_CANDIDATES = [
    os.path.join(ROOT, "..", "shared", "spec", "dsv4-flash-config.json"),
    os.path.join(ROOT, "shared", "spec", "dsv4-flash-config.json"),
]


def int_list(s):
    return [int(x) for x in s.split(",") if x.strip()]


def load_upstream_config(path):
    """(upstream-style config dict, where it came from)."""
    cands = [path] if path else [os.environ.get("DSV4_FLASH_CONFIG")] + CONFIG_CANDIDATES
    for p in cands:
        if p and os.path.isfile(p):
            with open(p) as f:
                d = json.load(f)
            return dict(d.get("hf_config_json", d)), os.path.abspath(p)
        if path:
            raise FileNotFoundError(path)
    return dict(FLASH), "embedded (bench_hf.py FLASH)"


def hf_config_from(c):
    try:
        from dsv4_hf import hf_config  # tests/python/dsv4_hf.py: the repo's one mapping
    except ImportError as e:
        raise SystemExit(f"bench_hf: cannot import tests/python/dsv4_hf.py ({e})")
    return hf_config(c)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=None, help="default 3 (--tiny: see below)")
    ap.add_argument("--experts", type=int, default=None, help="default 256 (--tiny: see below)")
    ap.add_argument("--context", type=int, default=None, help="default 512 (--tiny: see below)")
    ap.add_argument("--decode-steps", type=int, default=16)
    ap.add_argument("--prefill", default=None, help="default 1024,8192 (--tiny: 64,256)")
    ap.add_argument("--top-k", default="4,6")
    ap.add_argument("--json", default="")
    ap.add_argument("--config", default="", help="dsv4-flash-config.json (default: ../shared/spec, else embedded)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="hidden 256, 8 experts, 2 layers, vocab 1024 (smoke test)")
    ap.add_argument("--experts-impl", default="default",
                    help="HF experts kernel: default (HF's choice), eager, grouped_mm, batched_mm")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()

    import torch
    import transformers
    from transformers import DeepseekV4ForCausalLM

    c, config_src = load_upstream_config(a.config)
    if a.tiny:
        c.update(vocab_size=1024, hidden_size=256, num_attention_heads=4, head_dim=64, qk_rope_head_dim=16,
                 q_lora_rank=64, o_groups=2, o_lora_rank=64, moe_intermediate_size=128, index_n_heads=4,
                 index_head_dim=32, index_topk=16, sliding_window=16)
    dflt = dict(layers=2, experts=8, context=48, prefill="64,256") if a.tiny else \
        dict(layers=3, experts=256, context=512, prefill="1024,8192")
    for k, v in dflt.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    topks = int_list(a.top_k)
    prefills = int_list(a.prefill)
    L = a.layers
    if L < 1 or L > len(c["compress_ratios"]):
        raise SystemExit(f"bench_hf: --layers must be 1..{len(c['compress_ratios'])}")
    if max(topks) > a.experts:
        raise SystemExit("bench_hf: --top-k larger than --experts")
    c["num_hidden_layers"] = L
    c["n_routed_experts"] = a.experts
    c["num_experts_per_tok"] = max(topks)  # built once at the largest k, cut down per k below
    cfg = hf_config_from(c)

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("bench_hf: CUDA not available (use --device cpu --tiny for a smoke test)")
    torch.manual_seed(a.seed)
    gpu = torch.cuda.get_device_name(dev) if cuda else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {gpu}")
    print(f"config: {config_src}; {L} layers x {a.experts} experts, fp32, layer_types {cfg.layer_types}, "
          f"mlp_layer_types {cfg.mlp_layer_types}")

    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    with torch.device(dev):
        model = DeepseekV4ForCausalLM(cfg)
    model = model.eval()
    if a.experts_impl != "default":
        model.set_experts_implementation(a.experts_impl)
    nparams = sum(p.numel() for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())

    # Hash routers: k distinct random experts per token id (HF's init leaves tid2eid at zeros).
    hash_full, routers = {}, []
    g = torch.Generator(device=dev).manual_seed(a.seed)
    K = max(topks)
    for i, layer in enumerate(model.model.layers):
        gate = layer.mlp.gate
        routers.append(gate)
        if hasattr(gate, "tid2eid"):
            V = gate.tid2eid.shape[0]
            full = torch.empty(V, K, dtype=gate.tid2eid.dtype, device=dev)
            for r0 in range(0, V, 16384):  # argsort of [rows, E] random keys, in slices
                r1 = min(V, r0 + 16384)
                full[r0:r1] = torch.rand(r1 - r0, a.experts, generator=g, device=dev).argsort(dim=1)[:, :K]
            hash_full[i] = full

    def set_topk(k):
        for i, gate in enumerate(routers):
            gate.top_k = k
            if i in hash_full:
                gate.tid2eid = hash_full[i][:, :k].contiguous()  # registered buffer: replaced in place
        model.config.num_experts_per_tok = k
        model.num_experts_per_tok = k
        for i, gate in enumerate(routers):
            assert gate.top_k == k and (i not in hash_full or tuple(gate.tid2eid.shape) == (cfg.vocab_size, k))

    set_topk(K)

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    # Smoke forward: should HF's default experts kernel fail here (not for memory), use eager.
    impl_note = ""
    try:
        model(input_ids=torch.zeros(1, 8, dtype=torch.long, device=dev), use_cache=False, logits_to_keep=1)
        sync()
    except Exception as e:  # noqa: BLE001
        if isinstance(e, torch.cuda.OutOfMemoryError) or model.config._experts_implementation == "eager":
            raise
        impl_note = f"experts {model.config._experts_implementation} failed ({type(e).__name__}: {e}); using eager"
        print("bench_hf: " + impl_note)
        model.set_experts_implementation("eager")
    sync()
    build_s = time.perf_counter() - t0
    mem_gb = torch.cuda.memory_allocated(dev) / 1e9 if cuda else float("nan")
    print(f"built {nparams / 1e9:.2f} G parameters in {build_s:.1f} s ({mem_gb:.1f} GB allocated); "
          f"attention {model.config._attn_implementation}, experts {model.config._experts_implementation}")

    def ids(n):
        return torch.randint(0, cfg.vocab_size, (1, n), device=dev, generator=g)

    def prefill(n):
        """(past_key_values, next token [1,1], seconds to the first token)."""
        x = ids(n)
        sync()
        t = time.perf_counter()
        out = model(input_ids=x, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        sync()
        return out.past_key_values, nxt, time.perf_counter() - t

    def decode(pkv, nxt, steps):
        out = model(input_ids=nxt, past_key_values=pkv, use_cache=True)  # warm-up step, not timed
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        per = []
        if cuda:
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
            ev[0].record()
        sync()
        t = time.perf_counter()
        for s in range(steps):
            out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # fed back on the device
            if cuda:
                ev[s + 1].record()
        sync()
        wall = (time.perf_counter() - t) / steps
        if cuda:
            per = [ev[s].elapsed_time(ev[s + 1]) for s in range(steps)]
        return wall, per

    scale43 = 43.0 / L
    rows = []  # dsv4-bench's metric names and units; value = 43-layer equivalent
    class OOM(Exception):
        pass

    def guarded(fn, *args):
        """fn(*args), an out-of-memory (torch's, or one cuBLAS/cuDNN reports) raised as OOM."""
        try:
            return fn(*args)
        except (torch.cuda.OutOfMemoryError, MemoryError) as e:
            err = e
        except RuntimeError as e:
            if "out of memory" not in str(e).lower() and "ALLOC_FAILED" not in str(e):
                raise
            err = e
        msg = str(err).split("\n")[0][:200]
        del err
        if cuda:
            torch.cuda.empty_cache()
        raise OOM(msg)

    for k in topks:
        set_topk(k)
        print(f"== {L} layers x {a.experts} experts, top-{k} (43-layer equivalent = x {scale43:.3f}) ==")
        name = f"decode batch 1, top-{k} (ms/token, 43-layer eq.)"
        try:
            def run_decode():
                pkv, nxt, ttft = prefill(a.context)
                return (ttft,) + decode(pkv, nxt, a.decode_steps)
            ttft, t1, per = guarded(run_decode)
            r = {"metric": name, "value": t1 * 1e3 * scale43, "unit": "ms", "value_at_layers": t1 * 1e3,
                 "note": f"{t1 * 1e3:.2f} ms/token at {L} layers, context {a.context}, {a.decode_steps} steps"}
            if per:
                r["step_ms_cuda_events"] = per
            print(f"  decode: {t1 * 1e3:.2f} ms/token at {L} layers (prefill {a.context}: {ttft * 1e3:.1f} ms)")
        except OOM as e:
            r = {"metric": name, "value": "OOM", "unit": "ms", "value_at_layers": "OOM", "note": f"out of memory: {e}"}
            print("  decode: OOM")
        rows.append(r)
        if cuda:
            torch.cuda.empty_cache()
        if k != topks[0]:
            continue
        for n in prefills:
            name = f"prefill {n} tokens, top-{k} (tokens/s, 43-layer eq.)"
            try:
                guarded(lambda: prefill(n)[2])  # warm-up, not timed
                secs = guarded(lambda: prefill(n)[2])  # (the cache is dropped on return)
                r = {"metric": name, "value": n / (secs * scale43), "unit": "tok/s", "value_at_layers": n / secs,
                     "ttft_ms_at_layers": secs * 1e3, "note": f"TTFT {secs * 1e3:.1f} ms at {L} layers"}
                print(f"  prefill {n}: TTFT {secs * 1e3:.1f} ms at {L} layers, {n / secs:.1f} tok/s")
            except OOM as e:
                r = {"metric": name, "value": "OOM", "unit": "tok/s", "value_at_layers": "OOM",
                     "note": f"out of memory: {e}"}
                print(f"  prefill {n}: OOM")
            rows.append(r)
            if cuda:
                torch.cuda.empty_cache()

    print(f"\n{'metric':<52} {'value':>12} {'unit':<6} {'at ' + str(L) + ' layers':>14}  note")
    for r in rows:
        fmt = lambda v: f"{v:12.2f}" if isinstance(v, float) else f"{v:>12}"
        print(f"{r['metric']:<52} {fmt(r['value'])} {r['unit']:<6} {fmt(r['value_at_layers']):>14}  {r['note']}")

    if a.json:
        out = {
            "peer": "huggingface transformers DeepseekV4ForCausalLM (fp32, random weights)",
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "device": str(dev), "gpu": gpu, "cuda": torch.version.cuda,
            "synthetic": f"full-width DeepSeek-V4-Flash, {L} layers x {a.experts} experts, fp32, HF default init, "
                         f"built in device memory" + (" (TINY widths)" if a.tiny else ""),
            "args": {"layers": L, "experts": a.experts, "context": a.context, "decode_steps": a.decode_steps,
                     "prefill": prefills, "top_k": topks, "tiny": a.tiny, "seed": a.seed,
                     "experts_impl": a.experts_impl},
            "attn_implementation": model.config._attn_implementation,
            "experts_implementation": model.config._experts_implementation, "experts_impl_note": impl_note,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "hash_layers": cfg.mlp_layer_types.count("hash_moe"),
            "config_source": config_src, "upstream_config": c, "hf_config": cfg.to_dict(),
            "parameters": nparams, "allocated_gb_after_build": mem_gb, "build_s": build_s,
            "peak_allocated_gb": torch.cuda.max_memory_allocated(dev) / 1e9 if cuda else None,
            "scale_43": scale43, "rows": rows,
        }
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2, default=str)
            f.write("\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
