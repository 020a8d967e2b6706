// The CPU backend's view of the checkpoint: every tensor of spec §2.4 resolved once at load, small
// vectors (norms, HC, sinks, ape, biases) upcast to f32, linear weights kept either as exact f32
// dequantisations (when the model is small enough) or as zero-copy views of the mmap'd FP8 / FP4 /
// BF16 data that are dequantised row by row at use (spec §2.3; exact either way). The Checkpoint
// must outlive the weights. Immutable after load.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dsv4/config.hpp"
#include "dsv4/safetensors.hpp"
#include "dsv4/weight_view.hpp"

namespace dsv4::cpu {

// y = x · Wᵀ with W [out, in] in checkpoint format.
struct Linear {
  using Format = WeightFormat;  // one enum for the CPU backend, the CUDA backend and the tests
  std::string name;
  int64_t out = 0, in = 0;
  Format format = Format::f32;
  const uint8_t* data = nullptr;   // checkpoint bytes (row-major [out, in] or [out, in/2] packed)
  const uint8_t* scale = nullptr;  // e8m0 scales (fp8: [ceil(out/128), ceil(in/128)]; fp4: [out, in/32])
  int64_t scale_cols = 0;
  int block_out = 128, block_in = 128;  // fp8 block, fp4 uses block_in (32)
  std::vector<float> dense;        // exact f32 [out, in] when pre-dequantised; else empty

  // Writes row o of W as f32 into dst[in] (or returns the dense row without copying).
  const float* row(int64_t o, float* dst) const;
  void dequant_row(int64_t o, float* dst) const;  // always decodes from `data` into dst[in]
  // The checkpoint bytes as a WeightView (host pointers into the mmap; the CUDA loader copies them).
  WeightView view() const { return {format, out, in, data, scale, scale_cols, block_out, block_in}; }
  size_t logical_params() const { return static_cast<size_t>(out) * static_cast<size_t>(in); }
};

struct HcWeights {
  std::vector<float> fn;     // [mix, hc·D]
  std::vector<float> base;   // [mix]
  std::vector<float> scale;  // [3] (block) or [1] (head)
};

struct CompressorWeights {
  Linear wkv, wgate;          // [c·d, D] each
  std::vector<float> ape;     // [m, c·d]
  std::vector<float> norm;    // [d]
};

struct AttnWeights {
  Linear wq_a, wq_b, wkv, wo_a, wo_b;
  std::vector<float> q_norm, kv_norm, sink;
  bool has_compressor = false, has_indexer = false;
  CompressorWeights compressor;          // main (CSA and HCA)
  Linear idx_wq_b, idx_weights_proj;     // indexer (CSA)
  CompressorWeights idx_compressor;
};

struct ExpertWeights { Linear w1, w2, w3; };

struct MoeWeights {
  std::vector<float> gate;      // [E, D] f32
  std::vector<float> bias;      // [E] (score-routed layers) or empty
  std::vector<int32_t> tid2eid; // [V, tid2eid_cols] (hash layers) or empty
  int tid2eid_cols = 0;
  std::vector<ExpertWeights> experts;
  ExpertWeights shared;
};

struct LayerWeights {
  LayerSpec spec;
  int index = 0;                     // layer id (num_layers for MTP)
  std::vector<float> attn_norm, ffn_norm;
  HcWeights hc_attn, hc_ffn;
  AttnWeights attn;
  MoeWeights moe;
};

struct MtpWeights {
  Linear e_proj, h_proj;
  std::vector<float> enorm, hnorm, norm;
  HcWeights hc_head;
  LayerWeights block;
};

struct ModelWeights {
  const Checkpoint* ckpt = nullptr;
  const uint8_t* embed = nullptr;   // [V, D] BF16 (or F32) rows, zero-copy
  DType embed_dtype = DType::BF16;
  Linear head;                      // [V, D]
  std::vector<float> norm;          // [D]
  HcWeights hc_head;
  std::vector<LayerWeights> layers;
  std::unique_ptr<MtpWeights> mtp;  // null without an MTP layer

  void embed_row(int32_t token, float* dst) const;  // dst[D]
};

// Resolves every tensor; throws Error(format) naming the tensor on a missing tensor or a shape /
// dtype mismatch. Linear weights are pre-dequantised when all of them fit in `dense_budget_bytes`.
ModelWeights load_weights(const Checkpoint& ckpt, const ModelConfig& cfg, size_t dense_budget_bytes);

}  // namespace dsv4::cpu
