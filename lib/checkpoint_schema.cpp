// Tensor inventory (spec §2.4) and checkpoint validation (contract in checkpoint_schema.hpp).
#include "dsv4/checkpoint_schema.hpp"

#include "dsv4/quant.hpp"

#include <fmt/format.h>

#include <map>
#include <cstring>
#include <set>

namespace dsv4 {
namespace {

struct Builder {
  const ModelConfig& c;
  std::vector<TensorSpec>* out;  // null: only count
  size_t count = 0;
  void add(std::string name, DType dt, std::vector<int64_t> shape, TensorRole role, int64_t fan_in = 0) {
    ++count;
    if (out) out->push_back({std::move(name), dt, std::move(shape), role, fan_in});
  }
  void fp8(const std::string& p, int64_t o, int64_t i) {
    add(p + ".weight", DType::F8_E4M3, {o, i}, TensorRole::fp8_weight, i);
    add(p + ".scale", DType::F8_E8M0, {ceil_div(o, c.fp8_block_out), ceil_div(i, c.fp8_block_in)}, TensorRole::fp8_scale);
  }
  void fp4(const std::string& p, int64_t o, int64_t i) {
    add(p + ".weight", DType::I8, {o, i / 2}, TensorRole::fp4_weight, i);
    add(p + ".scale", DType::F8_E8M0, {o, ceil_div(i, c.fp4_block)}, TensorRole::fp4_scale);
  }
  void bf16(const std::string& n, int64_t o, int64_t i) { add(n, DType::BF16, {o, i}, TensorRole::linear_bf16, i); }
  void norm(const std::string& n, int64_t d) { add(n, DType::BF16, {d}, TensorRole::norm); }
  void hc(const std::string& p, int64_t mix, int n_scale) {
    const int64_t flat = static_cast<int64_t>(c.hc_mult) * c.hidden_size;
    add(p + "fn", DType::F32, {mix, flat}, TensorRole::hc_fn, flat);
    add(p + "base", DType::F32, {mix}, TensorRole::hc_base);
    add(p + "scale", DType::F32, {n_scale}, TensorRole::hc_scale);
  }
  void compressor(const std::string& p, int ratio, int64_t d) {
    const int64_t cd = (ratio == 4 ? 2 : 1) * d;  // CSA overlaps two windows: A and B halves
    bf16(p + "wkv.weight", cd, c.hidden_size);
    bf16(p + "wgate.weight", cd, c.hidden_size);
    add(p + "ape", DType::F32, {ratio, cd}, TensorRole::ape);
    norm(p + "norm.weight", d);
  }
  void block(const std::string& p, const LayerSpec& l, int tid2eid_cols) {
    const int64_t D = c.hidden_size, mix = c.hc_mix_dim();
    norm(p + "attn_norm.weight", D);
    norm(p + "ffn_norm.weight", D);
    hc(p + "hc_attn_", mix, 3);
    hc(p + "hc_ffn_", mix, 3);
    fp8(p + "attn.wq_a", c.q_lora_rank, D);
    norm(p + "attn.q_norm.weight", c.q_lora_rank);
    fp8(p + "attn.wq_b", static_cast<int64_t>(c.num_heads) * c.head_dim, c.q_lora_rank);
    fp8(p + "attn.wkv", c.head_dim, D);
    norm(p + "attn.kv_norm.weight", c.head_dim);
    fp8(p + "attn.wo_a", static_cast<int64_t>(c.o_groups) * c.o_lora_rank,
        static_cast<int64_t>(c.num_heads) * c.head_dim / c.o_groups);
    fp8(p + "attn.wo_b", D, static_cast<int64_t>(c.o_groups) * c.o_lora_rank);
    add(p + "attn.attn_sink", DType::F32, {c.num_heads}, TensorRole::sink);
    if (l.attn != AttnKind::sliding) compressor(p + "attn.compressor.", l.compress_ratio, c.head_dim);
    if (l.attn == AttnKind::csa) {
      fp8(p + "attn.indexer.wq_b", static_cast<int64_t>(c.index_n_heads) * c.index_head_dim, c.q_lora_rank);
      bf16(p + "attn.indexer.weights_proj.weight", c.index_n_heads, D);
      compressor(p + "attn.indexer.compressor.", 4, c.index_head_dim);
    }
    bf16(p + "ffn.gate.weight", c.n_routed_experts, D);
    if (l.hash_routing)
      add(p + "ffn.gate.tid2eid", DType::I64, {c.vocab_size, tid2eid_cols}, TensorRole::tid2eid);
    else
      add(p + "ffn.gate.bias", DType::F32, {c.n_routed_experts}, TensorRole::router_bias);
    if (!out) count += 6 * static_cast<size_t>(c.n_routed_experts);  // counting: names not built
    for (int e = 0; out && e < c.n_routed_experts; ++e) {
      const std::string ep = fmt::format("{}ffn.experts.{}.", p, e);
      fp4(ep + "w1", c.moe_intermediate_size, D);
      fp4(ep + "w2", D, c.moe_intermediate_size);
      fp4(ep + "w3", c.moe_intermediate_size, D);
    }
    fp8(p + "ffn.shared_experts.w1", c.moe_intermediate_size, D);
    fp8(p + "ffn.shared_experts.w2", D, c.moe_intermediate_size);
    fp8(p + "ffn.shared_experts.w3", c.moe_intermediate_size, D);
  }
};

void build_inventory(Builder& b, const ModelConfig& c, int tid2eid_cols) {
  const int64_t D = c.hidden_size;
  b.add("embed.weight", DType::BF16, {c.vocab_size, D}, TensorRole::embedding);
  b.bf16("head.weight", c.vocab_size, D);
  b.norm("norm.weight", D);
  b.hc("hc_head_", c.hc_mult, 1);
  for (int l = 0; l < c.num_layers; ++l) b.block(fmt::format("layers.{}.", l), c.layers[static_cast<size_t>(l)], tid2eid_cols);
  if (c.num_mtp_layers == 1) {
    const std::string p = "mtp.0.";
    b.block(p, c.mtp_layer(), tid2eid_cols);
    b.fp8(p + "e_proj", D, D);
    b.fp8(p + "h_proj", D, D);
    b.norm(p + "enorm.weight", D);
    b.norm(p + "hnorm.weight", D);
    b.norm(p + "norm.weight", D);
    b.hc(p + "hc_head_", c.hc_mult, 1);
  }
}

size_t expected_tensor_count(const ModelConfig& c) {
  Builder b{c, nullptr};
  build_inventory(b, c, c.experts_per_token);
  return b.count;
}
}  // namespace

std::vector<TensorSpec> expected_tensors(const ModelConfig& c, int tid2eid_cols) {
  if (tid2eid_cols < 0) tid2eid_cols = c.experts_per_token;
  std::vector<TensorSpec> out;
  Builder b{c, &out};
  build_inventory(b, c, tid2eid_cols);
  return out;
}

ValidationReport validate_checkpoint(const Checkpoint& ckpt, const ModelConfig& cfg) {
  ValidationReport rep;
  // The inventory is sized by the config alone (layers × experts); a config far larger than the
  // checkpoint is reported as such instead of listing (and allocating) every missing tensor.
  const size_t want = expected_tensor_count(cfg), have = ckpt.names().size();
  if (want > 2 * have + 4096) {
    rep.problems.push_back(fmt::format(
        "the config describes {} tensors ({} layers, {} experts) but the checkpoint holds {}: wrong config.json?", want,
        cfg.num_layers + cfg.num_mtp_layers, cfg.n_routed_experts, have));
    return rep;
  }
  std::set<std::string> expected_names;
  for (const TensorSpec& s : expected_tensors(cfg)) {
    expected_names.insert(s.name);
    const TensorView* t = ckpt.find(s.name);
    if (!t) {
      rep.problems.push_back(fmt::format("missing tensor '{}' (expected {} [{}])", s.name, dtype_name(s.dtype), fmt::join(s.shape, ", ")));
      continue;
    }
    if (s.role == TensorRole::tid2eid) {
      // The 4-Expert variant ships [V, 4]; a [V, 6] table is cut to its first K' columns at load.
      if (t->dtype != DType::I64 && t->dtype != DType::I32)
        rep.problems.push_back(fmt::format("tensor '{}': dtype {} (expected I64 or I32)", s.name, dtype_name(t->dtype)));
      else if (t->shape.size() != 2 || t->shape[0] != cfg.vocab_size || t->shape[1] < cfg.experts_per_token)
        rep.problems.push_back(fmt::format("tensor '{}': shape {} (expected [{}, K] with K ≥ {} experts per token)", s.name,
                                           t->shape_str(), cfg.vocab_size, cfg.experts_per_token));
      else {
        const int64_t rows = t->shape[0], cols = t->shape[1];
        int64_t bad = 0, repeated = 0;
        for (int64_t r = 0; r < rows; ++r) {
          std::set<int64_t> seen;
          for (int64_t k = 0; k < cfg.experts_per_token; ++k) {
            int64_t v;
            if (t->dtype == DType::I64) {
              std::memcpy(&v, t->data + (r * cols + k) * 8, 8);
            } else {
              int32_t v32;
              std::memcpy(&v32, t->data + (r * cols + k) * 4, 4);
              v = v32;
            }
            if (v < 0 || v >= cfg.n_routed_experts) ++bad;
            else if (!seen.insert(v).second) ++repeated;
          }
        }
        if (bad) rep.problems.push_back(fmt::format("tensor '{}': {} expert ids outside [0, {})", s.name, bad, cfg.n_routed_experts));
        if (repeated) rep.notes.push_back(fmt::format("tensor '{}': {} repeated expert ids within rows (applied once each)", s.name, repeated));
      }
      continue;
    }
    if (t->dtype != s.dtype)
      rep.problems.push_back(fmt::format("tensor '{}': dtype {} (expected {})", s.name, dtype_name(t->dtype), dtype_name(s.dtype)));
    if (t->shape != s.shape)
      rep.problems.push_back(fmt::format("tensor '{}': shape {} (expected [{}])", s.name, t->shape_str(), fmt::join(s.shape, ", ")));
  }
  for (const std::string& n : ckpt.names())
    if (!expected_names.count(n)) rep.problems.push_back(fmt::format("unexpected tensor '{}'", n));
  return rep;
}

}  // namespace dsv4
