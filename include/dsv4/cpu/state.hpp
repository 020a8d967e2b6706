// One sequence's state in host memory (the CPU layout of include/dsv4/kv_cache.hpp, all f32):
// per layer the window ring buffer, append-only compressed entries / indexer keys, and the partial
// compression windows (kv = 0, gate = −∞ initially, spec §4.1–4.2). Plain value type: copying it
// forks the sequence.
#pragma once
#include <cstdint>
#include <vector>

#include "dsv4/kv_cache.hpp"

namespace dsv4::cpu {

struct CompressorState {
  std::vector<float> kv, gate;  // [rows, width] each
};

struct LayerState {
  std::vector<float> window;    // [window, kv_dim], slot = position mod window
  std::vector<float> entries;   // [n, kv_dim] compressed KV entries (append-only)
  std::vector<float> idx_keys;  // [n, index_head_dim] indexer keys (CSA)
  CompressorState main, index;
};

struct SequenceState {
  int64_t position = 0;      // main-model tokens processed
  int64_t mtp_position = 0;  // MTP-layer tokens processed
  int64_t max_context = 0;
  std::vector<LayerState> layers;  // num_layers (+ MTP at the end when present)

  static SequenceState create(const std::vector<LayerStateShape>& layout, int64_t max_context);
  void reset(const std::vector<LayerStateShape>& layout);
  size_t bytes() const;
};

}  // namespace dsv4::cpu
