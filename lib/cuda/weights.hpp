// The CUDA backend's weights: every tensor of spec §2.4 in one device arena, in its checkpoint
// format (FP8 e4m3 + e8m0 128×128, FP4 e2m1 two per byte + e8m0 per 32, BF16 / F32 as stored;
// small vectors — norms, HC, sinks, ape, router gate and bias — as f32, tid2eid as int32). The
// tensors are resolved and validated by the CPU loader (lib/cpu/weights.cpp: one definition of
// names, shapes and formats), whose zero-copy views into the mmap are streamed to the device
// through pinned staging buffers with overlapped copies. A layer's routed experts are stacked
// (expert e at base + e · stride) so one launch serves any expert ids. Immutable after load.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "device_buffer.hpp"
#include "dsv4/config.hpp"
#include "dsv4/cpu/weights.hpp"
#include "dsv4/log.hpp"
#include "dsv4/weight_view.hpp"

namespace dsv4::cuda {

struct DevHc {
  const float* fn = nullptr;     // [mix, hc·D]
  const float* base = nullptr;
  const float* scale = nullptr;
  // fn stream-major as an f32 weight [hc·mix, D], row j·mix + i = fn_i[j·D, (j+1)·D): one grouped
  // linear over the HC streams computes every partial dot at once (HcParams::partials).
  WeightView fn_streams;
};

struct DevCompressor {
  WeightView wkv, wgate;
  const float* ape = nullptr;   // [ratio, width]
  const float* norm = nullptr;  // [d]
};

// Routed experts of one layer: views of expert 0, expert e at + e · *_stride bytes. w1 and w3 of
// an expert are stored back to back (data, and scales), so where their sizes keep the arena's
// alignment (has_w13: every real shape) w13 views them as one [2I, D] weight — one launch for
// both (its output row: g then u) — with the w1 strides.
struct DevExperts {
  // The global ids [first, first + count) this arena holds (all of them, or an expert-parallel
  // rank's block); kernels index the stack with local ids (global − first).
  int first = 0, count = 0;
  WeightView w1, w2, w3;
  int64_t w1_data_stride = 0, w1_scale_stride = 0, w2_data_stride = 0, w2_scale_stride = 0, w3_data_stride = 0,
          w3_scale_stride = 0;
  bool has_w13 = false;
  WeightView w13;
};

struct DevLayer {
  LayerSpec spec;
  int index = 0;
  const float* attn_norm = nullptr;
  const float* ffn_norm = nullptr;
  DevHc hc_attn, hc_ffn;
  WeightView wq_a, wq_b, wkv, wo_a, wo_b;
  const float* q_norm = nullptr;
  const float* kv_norm = nullptr;
  const float* sink = nullptr;
  bool has_compressor = false, has_indexer = false;
  DevCompressor compressor, idx_compressor;
  WeightView idx_wq_b, idx_weights_proj;
  const float* gate = nullptr;      // [E, D]
  const float* bias = nullptr;      // [E] or null (hash layers)
  const int32_t* tid2eid = nullptr; // [vocab, tid2eid_cols] or null
  int tid2eid_cols = 0;
  DevExperts experts;
  WeightView sh_w1, sh_w2, sh_w3;
  // Weights that read the same input stored back to back and, where the layout allows (see
  // DevExperts), viewed as one: wq_a|wkv (output: qr then kv) and the shared expert's w1|w3.
  bool has_wqkv = false, has_sh_w13 = false;
  WeightView wqkv, sh_w13;
};

struct DevMtp {
  WeightView e_proj, h_proj;
  const float* enorm = nullptr;
  const float* hnorm = nullptr;
  const float* norm = nullptr;
  DevHc hc_head;
  DevLayer block;
};

// Device bytes of the weights by storage type.
struct WeightBytes {
  size_t fp8 = 0, fp4 = 0, bf16 = 0, f32 = 0, scales = 0, other = 0;
  size_t total() const { return fp8 + fp4 + bf16 + f32 + scales + other; }
};

struct DeviceWeights {
  DeviceBuffer arena;
  WeightBytes bytes;
  const void* embed = nullptr;  // [vocab, D] BF16 or F32
  bool embed_f32 = false;
  WeightView head;
  const float* norm = nullptr;
  DevHc hc_head;
  std::vector<DevLayer> layers;
  std::optional<DevMtp> mtp;
  const float* inv_freq_sliding = nullptr;     // [rd/2]
  const float* inv_freq_compressed = nullptr;  // [rd/2]
};

// Uploads `host` (the CPU loader's views of the mmap'd checkpoint) to the current device; logs
// progress and the achieved GB/s. Error(out_of_memory) naming the arena size and the free memory.
// The routed experts uploaded: [first, first + count), count −1 = to the end (every expert).
struct ExpertRange {
  int first = 0, count = -1;
};
DeviceWeights upload_weights(const cpu::ModelWeights& host, const ModelConfig& cfg, const Logger& log,
                             ExpertRange experts = {});

}  // namespace dsv4::cuda
