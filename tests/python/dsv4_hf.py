"""Bridge between the upstream DeepSeek-V4 checkpoint format (spec §2) and Hugging Face
`transformers`' deepseek_v4 classes, for the oracle test (oracle_hf.py).

- hf_config(cfg): a DeepseekV4Config from an upstream-style config dict (layer_types and
  compress_rates spelled out, so any HCA ratio works).
- load_upstream(dir, hf_model): dequantise the upstream shards exactly (FP8 e4m3 × e8m0 128×128,
  FP4 e2m1 × e8m0 1×32) and load them into the HF model under the spec §2.6 names.
- save_upstream(hf_model, cfg, dir): the inverse: quantise HF weights to the upstream format with
  power-of-two scales chosen so that the stored values dequantise exactly to what HF then runs.
- unclamp_shared_expert(model): the official semantics (no clamp on the shared expert).
"""
import json
import math
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

E2M1 = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=torch.float64)


def hf_config(c):
    from transformers import DeepseekV4Config

    L = c["num_hidden_layers"]
    ratios = c["compress_ratios"][:L]
    hca = [r for r in ratios if r not in (0, 4)]
    names = {0: "sliding_attention", 4: "compressed_sparse_attention"}
    layer_types = [names.get(r, "heavily_compressed_attention") for r in ratios]
    rs = c.get("rope_scaling") or {}
    kw = dict(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_hidden_layers=L,
        num_attention_heads=c["num_attention_heads"], num_key_value_heads=1, head_dim=c["head_dim"],
        qk_rope_head_dim=c["qk_rope_head_dim"], q_lora_rank=c["q_lora_rank"], o_groups=c["o_groups"],
        o_lora_rank=c["o_lora_rank"], sliding_window=c["sliding_window"], layer_types=layer_types,
        compress_rates={"compressed_sparse_attention": 4,
                        "heavily_compressed_attention": hca[0] if hca else 128},
        num_hash_layers=c["num_hash_layers"], n_routed_experts=c["n_routed_experts"],
        n_shared_experts=c.get("n_shared_experts", 1),
        num_experts_per_tok=c["num_experts_per_tok"], moe_intermediate_size=c["moe_intermediate_size"],
        index_n_heads=c["index_n_heads"], index_head_dim=c["index_head_dim"], index_topk=c["index_topk"],
        hc_mult=c["hc_mult"], hc_sinkhorn_iters=c["hc_sinkhorn_iters"], hc_eps=c.get("hc_eps", 1e-6),
        rms_norm_eps=c.get("rms_norm_eps", 1e-6), routed_scaling_factor=c["routed_scaling_factor"],
        swiglu_limit=c["swiglu_limit"], rope_theta=c["rope_theta"], compress_rope_theta=c["compress_rope_theta"],
        rope_scaling=rs or None, max_position_embeddings=c.get("max_position_embeddings", 1048576),
        tie_word_embeddings=False, bos_token_id=c.get("bos_token_id", 0), eos_token_id=c.get("eos_token_id", 1),
    )
    return DeepseekV4Config(**kw)


def _name_map(c):
    """upstream name → (hf name, kind); kind is 'plain', ('gate_up', e, part) or ('down', e)."""
    m = {"embed.weight": "model.embed_tokens.weight", "head.weight": "lm_head.weight",
         "norm.weight": "model.norm.weight", "hc_head_fn": "model.hc_head.hc_fn",
         "hc_head_base": "model.hc_head.hc_base", "hc_head_scale": "model.hc_head.hc_scale"}
    for l in range(c["num_hidden_layers"]):
        u, h = f"layers.{l}.", f"model.layers.{l}."
        m[u + "attn_norm.weight"] = h + "input_layernorm.weight"
        m[u + "ffn_norm.weight"] = h + "post_attention_layernorm.weight"
        for x in ("fn", "base", "scale"):
            m[u + f"hc_attn_{x}"] = h + f"attn_hc.{x}"
            m[u + f"hc_ffn_{x}"] = h + f"ffn_hc.{x}"
        a, ha = u + "attn.", h + "self_attn."
        for up, hf in (("wq_a", "q_a_proj"), ("wq_b", "q_b_proj"), ("wkv", "kv_proj"), ("wo_a", "o_a_proj"),
                       ("wo_b", "o_b_proj")):
            m[a + up + ".weight"] = ha + hf + ".weight"
        m[a + "q_norm.weight"] = ha + "q_a_norm.weight"
        m[a + "kv_norm.weight"] = ha + "kv_norm.weight"
        m[a + "attn_sink"] = ha + "sinks"
        for pre_u, pre_h in ((a + "compressor.", ha + "compressor."),
                             (a + "indexer.compressor.", ha + "compressor.indexer.")):
            m[pre_u + "wkv.weight"] = pre_h + "kv_proj.weight"
            m[pre_u + "wgate.weight"] = pre_h + "gate_proj.weight"
            m[pre_u + "ape"] = pre_h + "position_bias"
            m[pre_u + "norm.weight"] = pre_h + "kv_norm.weight"
        m[a + "indexer.wq_b.weight"] = ha + "compressor.indexer.q_b_proj.weight"
        m[a + "indexer.weights_proj.weight"] = ha + "compressor.indexer.scorer.weights_proj.weight"
        f, hf_ = u + "ffn.", h + "mlp."
        m[f + "gate.weight"] = hf_ + "gate.weight"
        m[f + "gate.bias"] = hf_ + "gate.e_score_correction_bias"
        m[f + "gate.tid2eid"] = hf_ + "gate.tid2eid"
        for up, hf in (("w1", "gate_proj"), ("w2", "down_proj"), ("w3", "up_proj")):
            m[f + f"shared_experts.{up}.weight"] = hf_ + f"shared_experts.{hf}.weight"
        for e in range(c["n_routed_experts"]):
            m[f + f"experts.{e}.w1.weight"] = (hf_ + "experts.gate_up_proj", ("gate_up", e, 0))
            m[f + f"experts.{e}.w3.weight"] = (hf_ + "experts.gate_up_proj", ("gate_up", e, 1))
            m[f + f"experts.{e}.w2.weight"] = (hf_ + "experts.down_proj", ("down", e))
    return m


def _dequant(w, s, name):
    if w.dtype == torch.float8_e4m3fn:
        wf = w.to(torch.float64)
        sf = s.to(torch.float32).to(torch.float64)
        sf = sf.repeat_interleave(128, 0)[: wf.shape[0]].repeat_interleave(128, 1)[:, : wf.shape[1]]
        return wf * sf
    if w.dtype in (torch.int8, torch.uint8):
        b = w.view(torch.uint8).to(torch.int64)
        codes = torch.stack((b & 15, b >> 4), dim=-1).reshape(b.shape[0], -1)
        wf = E2M1[codes]
        sf = s.to(torch.float32).to(torch.float64).repeat_interleave(32, 1)[:, : wf.shape[1]]
        return wf * sf
    raise ValueError(f"{name}: unexpected quantised dtype {w.dtype}")


def load_upstream(d, model):
    c = json.load(open(os.path.join(d, "config.json")))
    idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))["weight_map"]
    files = {f: safe_open(os.path.join(d, f), "pt") for f in set(idx.values())}
    get = lambda n: files[idx[n]].get_tensor(n)
    nm = _name_map(c)
    sd = model.state_dict()
    done = set()
    for n in idx:
        if n.endswith(".scale") and n[: -len(".scale")] + ".weight" in idx:
            continue
        if n.startswith("mtp."):
            continue
        t = get(n)
        if t.dtype in (torch.float8_e4m3fn, torch.int8, torch.uint8) and n.endswith(".weight"):
            t = _dequant(t, get(n[: -len(".weight")] + ".scale"), n)
        target = nm[n]
        if isinstance(target, tuple):
            hn, kind = target
            dst = sd[hn]
            if kind[0] == "gate_up":
                I = t.shape[0]
                dst[kind[1], kind[2] * I:(kind[2] + 1) * I] = t.to(dst.dtype)
            else:
                dst[kind[1]] = t.to(dst.dtype)
            done.add(hn)
        else:
            dst = sd[target]
            if target.endswith("tid2eid"):
                dst.copy_(t[:, : dst.shape[1]].to(dst.dtype))
            else:
                dst.copy_(t.to(dst.dtype).reshape(dst.shape))
            done.add(target)
    missing = [k for k in sd if k not in done]
    if missing:
        raise KeyError(f"HF tensors not filled from the checkpoint: {missing[:8]}")


def _pow2_scale(amax, maxcode):
    # Smallest power of two s with amax / s ≤ maxcode (so nothing saturates).
    if amax <= 0:
        return 1.0
    return 2.0 ** math.ceil(math.log2(amax / maxcode))


def quant_fp8(w):
    """f64 [out, in] → (e4m3 codes, e8m0 scales [ceil(out/128), ceil(in/128)]), values exactly representable."""
    out, inn = w.shape
    so, si = -(-out // 128), -(-inn // 128)
    scales = torch.empty(so, si, dtype=torch.float64)
    deq = torch.empty_like(w)
    for i in range(so):
        for j in range(si):
            blk = w[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128]
            s = _pow2_scale(blk.abs().max().item(), 448.0)
            scales[i, j] = s
            deq[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] = (blk / s).to(torch.float8_e4m3fn).to(torch.float64) * s
    codes = (deq / scales.repeat_interleave(128, 0)[:out].repeat_interleave(128, 1)[:, :inn]).to(torch.float8_e4m3fn)
    return codes, scales.to(torch.float32).to(torch.float8_e8m0fnu), deq


def quant_fp4(w):
    """f64 [out, in] → (I8 packed [out, in/2], e8m0 scales [out, in/32], exact dequantised values)."""
    out, inn = w.shape
    blocks = w.reshape(out, inn // 32, 32)
    amax = blocks.abs().amax(dim=-1)
    s = torch.where(amax > 0, torch.exp2(torch.ceil(torch.log2(amax / 6.0))), torch.ones_like(amax))
    x = blocks / s.unsqueeze(-1)
    mags = E2M1[:8]
    codes = (x.abs().unsqueeze(-1) - mags).abs().argmin(dim=-1)  # nearest grid magnitude
    codes = torch.where(x < 0, codes + 8, codes).reshape(out, inn)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8).view(torch.int8)
    deq = E2M1[codes] * s.repeat_interleave(32, 1)
    return packed, s.to(torch.float32).to(torch.float8_e8m0fnu), deq


def upstream_config(c_hf_dict):
    return c_hf_dict


def save_upstream(model, c, d, fp8_names=("wq_a", "wq_b", "wkv", "wo_a", "wo_b", "shared_experts")):
    """Quantise the HF model's weights into upstream shards in `d` (and copy the exact dequantised
    values back into the model so both sides run identical weights). `c` is the upstream config."""
    os.makedirs(d, exist_ok=True)
    nm = _name_map(c)
    sd = model.state_dict()
    out = {}
    for un, target in nm.items():
        if isinstance(target, tuple):
            hn, kind = target
            src = sd[hn]
            if kind[0] == "gate_up":
                I = src.shape[1] // 2
                w = src[kind[1], kind[2] * I:(kind[2] + 1) * I].to(torch.float64)
            else:
                w = src[kind[1]].to(torch.float64)
            packed, scale, deq = quant_fp4(w)
            out[un] = packed
            out[un[: -len(".weight")] + ".scale"] = scale
            if kind[0] == "gate_up":
                src[kind[1], kind[2] * I:(kind[2] + 1) * I] = deq.to(src.dtype)
            else:
                src[kind[1]] = deq.to(src.dtype)
            continue
        if target not in sd:
            continue
        t = sd[target]
        base = un.split(".")[-2] if un.endswith(".weight") else ""
        is_fp8 = un.endswith(".weight") and (base in fp8_names or ".shared_experts." in un) and "indexer.compressor" not in un \
            and ".compressor." not in un
        if un.endswith("indexer.wq_b.weight"):
            is_fp8 = True
        if is_fp8:
            codes, scale, deq = quant_fp8(t.to(torch.float64))
            out[un] = codes
            out[un[: -len(".weight")] + ".scale"] = scale
            t.copy_(deq.to(t.dtype))
        elif un.endswith("tid2eid"):
            out[un] = t.to(torch.int64).contiguous()
        elif un.endswith(".weight"):  # BF16 storage: round HF's weight to bf16 too
            b = t.to(torch.bfloat16)
            out[un] = b.contiguous()
            t.copy_(b.to(t.dtype))
        else:  # F32 vectors (hc, ape, sink, bias)
            f = t.to(torch.float32)
            out[un] = f.contiguous()
            t.copy_(f.to(t.dtype))
    # MTP tensors are required by the format; random, unchecked by the oracle.
    _add_mtp(out, c)
    names = sorted(out)
    half = len(names) // 2
    shards = [names[:half], names[half:]]
    wm = {}
    for i, group in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: out[n] for n in group}, os.path.join(d, fn))
        for n in group:
            wm[n] = fn
    json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(d, "model.safetensors.index.json"), "w"), indent=1)
    json.dump(c, open(os.path.join(d, "config.json"), "w"), indent=1)


def _add_mtp(out, c):
    g = torch.Generator().manual_seed(5)
    D, H, hd, E, I = c["hidden_size"], c["num_attention_heads"], c["head_dim"], c["n_routed_experts"], c["moe_intermediate_size"]
    hc = c["hc_mult"]
    mix = (2 + hc) * hc
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64) / math.sqrt(s[-1])

    def fp8(name, o, i):
        codes, scale, _ = quant_fp8(rnd(o, i))
        out[name + ".weight"], out[name + ".scale"] = codes, scale

    def fp4(name, o, i):
        p, s, _ = quant_fp4(rnd(o, i))
        out[name + ".weight"], out[name + ".scale"] = p, s

    p = "mtp.0."
    for n, o, i in (("e_proj", D, D), ("h_proj", D, D), ("attn.wq_a", c["q_lora_rank"], D),
                    ("attn.wq_b", H * hd, c["q_lora_rank"]), ("attn.wkv", hd, D),
                    ("attn.wo_a", c["o_groups"] * c["o_lora_rank"], H * hd // c["o_groups"]),
                    ("attn.wo_b", D, c["o_groups"] * c["o_lora_rank"]),
                    ("ffn.shared_experts.w1", I, D), ("ffn.shared_experts.w3", I, D), ("ffn.shared_experts.w2", D, I)):
        fp8(p + n, o, i)
    for e in range(E):
        fp4(p + f"ffn.experts.{e}.w1", I, D)
        fp4(p + f"ffn.experts.{e}.w3", I, D)
        fp4(p + f"ffn.experts.{e}.w2", D, I)
    for n, size in (("enorm.weight", D), ("hnorm.weight", D), ("norm.weight", D), ("attn_norm.weight", D),
                    ("ffn_norm.weight", D), ("attn.q_norm.weight", c["q_lora_rank"]), ("attn.kv_norm.weight", hd)):
        out[p + n] = torch.ones(size, dtype=torch.bfloat16)
    out[p + "ffn.gate.weight"] = rnd(E, D).to(torch.bfloat16)
    out[p + "ffn.gate.bias"] = torch.zeros(E, dtype=torch.float32)
    out[p + "attn.attn_sink"] = torch.zeros(H, dtype=torch.float32)
    for x in ("attn", "ffn"):
        out[p + f"hc_{x}_fn"] = rnd(mix, hc * D).to(torch.float32)
        out[p + f"hc_{x}_base"] = torch.zeros(mix, dtype=torch.float32)
        out[p + f"hc_{x}_scale"] = torch.ones(3, dtype=torch.float32)
    out[p + "hc_head_fn"] = rnd(hc, hc * D).to(torch.float32)
    out[p + "hc_head_base"] = torch.zeros(hc, dtype=torch.float32)
    out[p + "hc_head_scale"] = torch.ones(1, dtype=torch.float32)


def unclamp_shared_expert(model):
    """Replace each shared expert's forward by the unclamped SwiGLU (official semantics)."""
    import types

    def fwd(self, x):
        return self.down_proj(torch.nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))

    n = 0
    for layer in model.model.layers:
        se = layer.mlp.shared_experts
        se.forward = types.MethodType(fwd, se)
        n += 1
    return n
