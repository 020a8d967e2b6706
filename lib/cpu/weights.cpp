// Resolves the checkpoint's tensors into ModelWeights (contract in include/dsv4/cpu/weights.hpp).
// Shapes are checked here against the config, naming the tensor, so the ops can trust them.
// Linear weights stay zero-copy views into the mmap unless the whole set fits the dense budget.
#include "dsv4/cpu/weights.hpp"

#include <algorithm>
#include <array>
#include <cstring>

#include "dsv4/dtypes.hpp"
#include "dsv4/error.hpp"
#include "dsv4/quant.hpp"

namespace dsv4::cpu {
namespace {

const TensorView& get(const Checkpoint& ck, const std::string& name) { return ck.get(name); }


std::vector<float> vec_f32(const Checkpoint& ck, const std::string& name, int64_t n) {
  const TensorView& t = get(ck, name);
  if (t.numel() != n)
    fail(Status::format, "tensor '{}': shape {} has {} values, expected {}", name, t.shape_str(), t.numel(), n);
  return to_f32(t);
}

void expect_shape(const TensorView& t, std::initializer_list<int64_t> shape) {
  if (t.shape != std::vector<int64_t>(shape)) {
    std::string want = "[";
    for (auto v : shape) want += (want.size() > 1 ? ", " : "") + std::to_string(v);
    fail(Status::format, "tensor '{}': shape {} (expected {}])", t.name, t.shape_str(), want);
  }
}

// A linear layer `prefix.weight` [out, in]: FP8 + `.scale`, FP4-in-I8 + `.scale`, or BF16/F32.
Linear make_linear(const Checkpoint& ck, const ModelConfig& cfg, const std::string& prefix, int64_t out, int64_t in) {
  Linear l;
  l.name = prefix + ".weight";
  l.out = out;
  l.in = in;
  const TensorView& w = get(ck, l.name);
  l.data = w.data;
  switch (w.dtype) {
    case DType::F8_E4M3: {
      expect_shape(w, {out, in});
      const TensorView& s = get(ck, prefix + ".scale");
      l.format = Linear::Format::fp8;
      l.block_out = cfg.fp8_block_out;
      l.block_in = cfg.fp8_block_in;
      const int64_t so = (out + l.block_out - 1) / l.block_out, si = (in + l.block_in - 1) / l.block_in;
      if (s.dtype != DType::F8_E8M0) fail(Status::format, "tensor '{}': dtype {} (expected F8_E8M0)", s.name, dtype_name(s.dtype));
      expect_shape(s, {so, si});
      l.scale = s.data;
      l.scale_cols = si;
      break;
    }
    case DType::I8:
    case DType::U8: {
      expect_shape(w, {out, in / 2});
      const TensorView& s = get(ck, prefix + ".scale");
      l.format = Linear::Format::fp4;
      l.block_in = cfg.fp4_block;
      const int64_t si = (in + l.block_in - 1) / l.block_in;
      if (s.dtype != DType::F8_E8M0) fail(Status::format, "tensor '{}': dtype {} (expected F8_E8M0)", s.name, dtype_name(s.dtype));
      expect_shape(s, {out, si});
      l.scale = s.data;
      l.scale_cols = si;
      break;
    }
    case DType::BF16:
      expect_shape(w, {out, in});
      l.format = Linear::Format::bf16;
      break;
    case DType::F32:
      expect_shape(w, {out, in});
      l.format = Linear::Format::f32;
      break;
    default:
      fail(Status::format, "tensor '{}': dtype {} is not a supported weight format", l.name, dtype_name(w.dtype));
  }
  return l;
}

HcWeights make_hc(const Checkpoint& ck, const std::string& prefix, int64_t mix, int64_t width, int64_t nscale) {
  HcWeights h;
  h.fn = vec_f32(ck, prefix + "_fn", mix * width);
  h.base = vec_f32(ck, prefix + "_base", mix);
  h.scale = vec_f32(ck, prefix + "_scale", nscale);
  return h;
}

CompressorWeights make_compressor(const Checkpoint& ck, const ModelConfig& cfg, const std::string& prefix, int ratio,
                                  int64_t d) {
  CompressorWeights c;
  const int64_t width = (ratio == 4 ? 2 : 1) * d;
  c.wkv = make_linear(ck, cfg, prefix + ".wkv", width, cfg.hidden_size);
  c.wgate = make_linear(ck, cfg, prefix + ".wgate", width, cfg.hidden_size);
  c.ape = vec_f32(ck, prefix + ".ape", ratio * width);
  c.norm = vec_f32(ck, prefix + ".norm.weight", d);
  return c;
}

LayerWeights make_layer(const Checkpoint& ck, const ModelConfig& cfg, const std::string& p, const LayerSpec& spec,
                        int index) {
  LayerWeights L;
  L.spec = spec;
  L.index = index;
  const int64_t D = cfg.hidden_size, H = cfg.num_heads, hd = cfg.head_dim;
  L.attn_norm = vec_f32(ck, p + "attn_norm.weight", D);
  L.ffn_norm = vec_f32(ck, p + "ffn_norm.weight", D);
  const int64_t mix = cfg.hc_mix_dim(), width = static_cast<int64_t>(cfg.hc_mult) * D;
  L.hc_attn = make_hc(ck, p + "hc_attn", mix, width, 3);
  L.hc_ffn = make_hc(ck, p + "hc_ffn", mix, width, 3);

  AttnWeights& a = L.attn;
  a.wq_a = make_linear(ck, cfg, p + "attn.wq_a", cfg.q_lora_rank, D);
  a.q_norm = vec_f32(ck, p + "attn.q_norm.weight", cfg.q_lora_rank);
  a.wq_b = make_linear(ck, cfg, p + "attn.wq_b", H * hd, cfg.q_lora_rank);
  a.wkv = make_linear(ck, cfg, p + "attn.wkv", hd, D);
  a.kv_norm = vec_f32(ck, p + "attn.kv_norm.weight", hd);
  a.wo_a = make_linear(ck, cfg, p + "attn.wo_a", static_cast<int64_t>(cfg.o_groups) * cfg.o_lora_rank,
                       H * hd / cfg.o_groups);
  a.wo_b = make_linear(ck, cfg, p + "attn.wo_b", D, static_cast<int64_t>(cfg.o_groups) * cfg.o_lora_rank);
  a.sink = vec_f32(ck, p + "attn.attn_sink", H);
  if (spec.attn != AttnKind::sliding) {
    a.has_compressor = true;
    a.compressor = make_compressor(ck, cfg, p + "attn.compressor", spec.compress_ratio, hd);
  }
  if (spec.attn == AttnKind::csa) {
    a.has_indexer = true;
    a.idx_wq_b = make_linear(ck, cfg, p + "attn.indexer.wq_b",
                             static_cast<int64_t>(cfg.index_n_heads) * cfg.index_head_dim, cfg.q_lora_rank);
    a.idx_weights_proj = make_linear(ck, cfg, p + "attn.indexer.weights_proj", cfg.index_n_heads, D);
    a.idx_compressor = make_compressor(ck, cfg, p + "attn.indexer.compressor", 4, cfg.index_head_dim);
  }

  MoeWeights& m = L.moe;
  const int64_t E = cfg.n_routed_experts, I = cfg.moe_intermediate_size;
  m.gate = vec_f32(ck, p + "ffn.gate.weight", E * D);
  if (spec.hash_routing) {
    const TensorView& t = get(ck, p + "ffn.gate.tid2eid");
    if (t.shape.size() != 2 || t.shape[0] != cfg.vocab_size || t.shape[1] < cfg.experts_per_token)
      fail(Status::format, "tensor '{}': shape {} (expected [{}, ≥{}])", t.name, t.shape_str(), cfg.vocab_size,
           cfg.experts_per_token);
    m.tid2eid = to_i32(t);
    m.tid2eid_cols = static_cast<int>(t.shape[1]);
    for (int32_t e : m.tid2eid)
      if (e < 0 || e >= E) fail(Status::format, "tensor '{}': expert id {} outside [0, {})", t.name, e, E);
  } else {
    m.bias = vec_f32(ck, p + "ffn.gate.bias", E);
  }
  m.experts.resize(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) {
    const std::string q = p + "ffn.experts." + std::to_string(e);
    m.experts[static_cast<size_t>(e)] = {make_linear(ck, cfg, q + ".w1", I, D), make_linear(ck, cfg, q + ".w2", D, I),
                                         make_linear(ck, cfg, q + ".w3", I, D)};
  }
  const int64_t Is = I * cfg.n_shared_experts;
  m.shared = {make_linear(ck, cfg, p + "ffn.shared_experts.w1", Is, D),
              make_linear(ck, cfg, p + "ffn.shared_experts.w2", D, Is),
              make_linear(ck, cfg, p + "ffn.shared_experts.w3", Is, D)};
  return L;
}

template <typename F> void for_each_linear(ModelWeights& w, F&& f) {
  auto layer = [&](LayerWeights& L) {
    AttnWeights& a = L.attn;
    for (Linear* l : {&a.wq_a, &a.wq_b, &a.wkv, &a.wo_a, &a.wo_b}) f(*l);
    if (a.has_compressor) { f(a.compressor.wkv); f(a.compressor.wgate); }
    if (a.has_indexer) {
      f(a.idx_wq_b); f(a.idx_weights_proj); f(a.idx_compressor.wkv); f(a.idx_compressor.wgate);
    }
    for (auto& e : L.moe.experts) { f(e.w1); f(e.w2); f(e.w3); }
    f(L.moe.shared.w1); f(L.moe.shared.w2); f(L.moe.shared.w3);
  };
  f(w.head);
  for (auto& L : w.layers) layer(L);
  if (w.mtp) {
    f(w.mtp->e_proj); f(w.mtp->h_proj);
    layer(w.mtp->block);
  }
}

}  // namespace

const float* Linear::row(int64_t o, float* dst) const {
  if (!dense.empty()) return dense.data() + o * in;
  dequant_row(o, dst);
  return dst;
}

void Linear::dequant_row(int64_t o, float* dst) const {
  switch (format) {
    case Format::f32:
      std::memcpy(dst, data + o * in * 4, static_cast<size_t>(in) * 4);
      break;
    case Format::bf16:
      decode_bf16_row(data + o * in * 2, in, dst);
      break;
    case Format::fp8:
      dequant_fp8_row(data + o * in, scale + (o / block_out) * scale_cols, in, block_in, dst);
      break;
    case Format::fp4:
      dequant_fp4_row(data + o * (in / 2), scale + o * scale_cols, in, block_in, dst);
      break;
  }
}

void ModelWeights::embed_row(int32_t token, float* dst) const {
  const int64_t D = head.in;
  if (embed_dtype == DType::F32) {
    std::memcpy(dst, embed + static_cast<int64_t>(token) * D * 4, static_cast<size_t>(D) * 4);
    return;
  }
  decode_bf16_row(embed + static_cast<int64_t>(token) * D * 2, D, dst);
}

ModelWeights load_weights(const Checkpoint& ck, const ModelConfig& cfg, size_t dense_budget_bytes) {
  ModelWeights w;
  w.ckpt = &ck;
  const int64_t V = cfg.vocab_size, D = cfg.hidden_size;
  const TensorView& emb = get(ck, "embed.weight");
  if (emb.dtype != DType::BF16 && emb.dtype != DType::F32)
    fail(Status::format, "tensor 'embed.weight': dtype {} (expected BF16 or F32)", dtype_name(emb.dtype));
  expect_shape(emb, {V, D});
  w.embed = emb.data;
  w.embed_dtype = emb.dtype;
  w.head = make_linear(ck, cfg, "head", V, D);
  w.norm = vec_f32(ck, "norm.weight", D);
  w.hc_head = make_hc(ck, "hc_head", cfg.hc_mult, static_cast<int64_t>(cfg.hc_mult) * D, 1);
  for (int l = 0; l < cfg.num_layers; ++l)
    w.layers.push_back(make_layer(ck, cfg, "layers." + std::to_string(l) + ".", cfg.layers.at(static_cast<size_t>(l)), l));
  if (cfg.num_mtp_layers > 0) {
    auto m = std::make_unique<MtpWeights>();
    m->e_proj = make_linear(ck, cfg, "mtp.0.e_proj", D, D);
    m->h_proj = make_linear(ck, cfg, "mtp.0.h_proj", D, D);
    m->enorm = vec_f32(ck, "mtp.0.enorm.weight", D);
    m->hnorm = vec_f32(ck, "mtp.0.hnorm.weight", D);
    m->norm = vec_f32(ck, "mtp.0.norm.weight", D);
    m->hc_head = make_hc(ck, "mtp.0.hc_head", cfg.hc_mult, static_cast<int64_t>(cfg.hc_mult) * D, 1);
    m->block = make_layer(ck, cfg, "mtp.0.", cfg.mtp_layer(), cfg.num_layers);
    w.mtp = std::move(m);
  }
  // Pre-dequantise only when everything fits: a half-dense model would make speed unpredictable.
  size_t total = 0;
  for_each_linear(w, [&](Linear& l) { total += l.logical_params() * sizeof(float); });
  if (total <= dense_budget_bytes) {
    for_each_linear(w, [&](Linear& l) {
      l.dense.resize(l.logical_params());
      for (int64_t o = 0; o < l.out; ++o) l.dequant_row(o, l.dense.data() + o * l.in);
    });
  }
  return w;
}

}  // namespace dsv4::cpu
