#!/usr/bin/env python3
"""Oracle property test: random tiny DeepSeek-V4 configurations built in Hugging Face
`transformers` (CPU, float64), saved in the upstream on-disk format (FP8/FP4 with power-of-two
scales, so the stored values dequantise exactly to what HF runs), compared with `dsv4 eval-logits`.

Semantics: HF's shared-expert clamp is removed (official code, as the fixtures); only HF's full
forward pass is used (its cached decode ignores the CSA top-k); eval-logits runs with
`--indexer-ties torch-cpu`, the tie rule of torch's CPU topk.

Usage: python3 tests/python/oracle_hf.py --cli build/dsv4 [--configs 6] [--seed 1] [--keep DIR]
Exit status: 0 all match (max |Δlogit| ≤ 1e-3), 1 a mismatch, 77 torch/transformers missing (skip).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

try:
    import torch
    import transformers  # noqa: F401
    from safetensors.torch import load_file, save_file
except ImportError as e:  # CTest treats 77 as "skipped"
    print(f"oracle_hf: skipped, {e.name} is not installed (pip install torch transformers)")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsv4_hf  # noqa: E402

TOL = 1e-3


def random_config(rng):
    L = rng.randint(3, 5)
    hca = rng.choice([8, 16])
    ratios = [0] + [rng.choice([0, 4, 4, hca]) for _ in range(L - 1)]
    if 4 not in ratios:
        ratios[rng.randrange(1, L)] = 4
    if hca not in ratios:
        ratios[-1] = hca
    hd = rng.choice([32, 64])
    E = rng.choice([4, 6, 8])
    return {
        "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
        "vocab_size": rng.choice([256, 384]), "hidden_size": rng.choice([128, 256]),
        "num_hidden_layers": L, "num_attention_heads": rng.choice([2, 4]), "num_key_value_heads": 1,
        "head_dim": hd, "qk_rope_head_dim": rng.choice([8, 16]), "q_lora_rank": 64, "o_groups": 2,
        "o_lora_rank": 32, "sliding_window": rng.choice([4, 8, 16]), "compress_ratios": ratios + [0],
        "num_hash_layers": rng.randint(0, 2), "n_routed_experts": E, "n_shared_experts": 1,
        "num_experts_per_tok": rng.randint(1, 3), "moe_intermediate_size": 64,
        "index_n_heads": rng.choice([2, 4]), "index_head_dim": rng.choice([32, 64]),
        "index_topk": rng.choice([2, 3, 4]), "hc_mult": rng.choice([2, 4]),
        "hc_sinkhorn_iters": rng.choice([3, 20]), "hc_eps": 1e-6, "rms_norm_eps": 1e-6,
        "routed_scaling_factor": 1.5, "norm_topk_prob": True, "scoring_func": "sqrtsoftplus",
        "topk_method": "noaux_tc", "swiglu_limit": 10.0, "hidden_act": "silu",
        "rope_theta": 10000, "compress_rope_theta": 160000,
        "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 16,
                         "original_max_position_embeddings": 65536, "type": "yarn"},
        "max_position_embeddings": 1048576, "num_nextn_predict_layers": 1, "tie_word_embeddings": False,
        "bos_token_id": 0, "eos_token_id": 1, "attention_bias": False, "attention_dropout": 0.0,
        "torch_dtype": "bfloat16", "expert_dtype": "fp4",
        "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                "scale_fmt": "ue8m0", "weight_block_size": [128, 128]},
    }


def randomize(model, c, g):
    """Random weights of a sensible scale (HF's init leaves some tensors at zero)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / p.shape[-1] ** 0.5)
            elif "norm" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            elif name.endswith("sinks"):
                p.copy_(2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.3 * torch.randn(b.shape, generator=g, dtype=b.dtype))
            elif name.endswith("tid2eid"):
                E = c["n_routed_experts"]
                rows = [torch.randperm(E, generator=g)[: b.shape[1]] for _ in range(b.shape[0])]
                b.copy_(torch.stack(rows))


def run_one(cli, idx, seed, workdir):
    rng = random.Random(seed)
    c = random_config(rng)
    cfg = dsv4_hf.hf_config(c)
    cfg._experts_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.DeepseekV4ForCausalLM(cfg).to(torch.float64).eval()
    g = torch.Generator().manual_seed(seed)
    randomize(model, c, g)
    mdir = os.path.join(workdir, f"model{idx}")
    dsv4_hf.save_upstream(model, c, mdir)  # also snaps HF's weights to the stored values
    dsv4_hf.unclamp_shared_expert(model)
    ref = {}
    lengths = [1, rng.randint(5, 20), rng.randint(40, 90)]
    for i, T in enumerate(lengths):
        ids = torch.randint(0, c["vocab_size"], (T,), generator=g)
        with torch.no_grad():
            logits = model(input_ids=ids[None], use_cache=False).logits[0]
        ref[f"prompt{i}.input_ids"] = ids.to(torch.int32)
        ref[f"prompt{i}.logits"] = logits.to(torch.float32)
    ref_path = os.path.join(workdir, f"ref{idx}.safetensors")
    out_path = os.path.join(workdir, f"out{idx}.safetensors")
    save_file(ref, ref_path)
    cmd = [cli, "eval-logits", "--model", mdir, "--input", ref_path, "--out", out_path,
           "--indexer-ties", "torch-cpu"]
    subprocess.run(cmd, check=True, env={**os.environ, "DSV4_LOG_LEVEL": "warn"})
    got = load_file(out_path)
    worst = 0.0
    for i in range(len(lengths)):
        d = (got[f"prompt{i}.logits"].double() - ref[f"prompt{i}.logits"].double()).abs().max().item()
        worst = max(worst, d)
    summary = (f"config {idx}: layers {c['compress_ratios'][:-1]} window {c['sliding_window']} "
               f"topk {c['index_topk']} E{c['n_routed_experts']}/K{c['num_experts_per_tok']} "
               f"hash {c['num_hash_layers']} hc {c['hc_mult']}x{c['hc_sinkhorn_iters']} D {c['hidden_size']} "
               f"hd {c['head_dim']}/{c['qk_rope_head_dim']}: max|dlogit| {worst:.3g}")
    print(summary, flush=True)
    return worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--configs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", default="")
    a = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    work = a.keep or tempfile.mkdtemp(prefix="dsv4_oracle_")
    os.makedirs(work, exist_ok=True)
    bad = 0
    for k in range(a.configs):
        if run_one(a.cli, k, a.seed * 1000 + k, work) > TOL:
            bad += 1
    print(f"oracle_hf: {a.configs - bad}/{a.configs} configurations within {TOL}")
    if not a.keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
