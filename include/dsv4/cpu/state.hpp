// One sequence's state in host memory (the CPU layout of include/dsv4/kv_cache.hpp, all f32): per
// layer the window ring (W + rollback slots), the append-only compressed entries / indexer keys,
// and each compressor's ring of raw (kv, gate) rows of its last rows + rollback tokens (spec
// §4.1–4.2). Rings are indexed by absolute position (slot = position mod ring), so taking the
// last `rollback` tokens back is only a change of position plus a shrink of the entries. Plain
// value type: copying it forks the sequence.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsv4/kv_cache.hpp"

namespace dsv4::cpu {

struct CompressorState {
  std::vector<float> kv, gate;  // [ring, width] each: the raw rows (gate with ape added)
};

struct LayerState {
  std::vector<float> window;    // [window_ring, kv_dim], slot = position mod window_ring
  std::vector<float> entries;   // [n, kv_dim] compressed KV entries (append-only)
  std::vector<float> idx_keys;  // [n, index_head_dim] indexer keys (CSA)
  CompressorState main, index;
};

struct SequenceState {
  int64_t position = 0;      // main-model tokens processed
  int64_t mtp_position = 0;  // MTP-layer tokens processed
  int64_t max_context = 0;
  std::vector<int32_t> tokens;     // every main-model token, in order (the one owner)
  std::vector<LayerState> layers;  // num_layers (+ MTP at the end when present)
  int32_t last_sample = -1;        // the id the latest sampling step drew (ForwardChunk::from_last_sample)
  std::string failure;             // non-empty: a step failed and could not restore this sequence
  size_t reserved = 0;             // bytes held in the backend's StatePool

  static SequenceState create(const std::vector<LayerStateShape>& layout, int64_t max_context);
  void reset(const std::vector<LayerStateShape>& layout);
  // Back to `position` (caller checked position ≥ this->position − rollback, or 0): entries and
  // keys shrink to what `position` tokens emit (the MTP layer, after the first num_main_layers,
  // to what min(mtp_position, position) emit); rings need no change.
  void truncate(const std::vector<LayerStateShape>& layout, int num_main_layers, int64_t position);
};

// Entries a compressor of ratio m has emitted after `tokens` tokens.
inline int64_t entries_after(int64_t tokens, int ratio) { return ratio ? tokens / ratio : 0; }

}  // namespace dsv4::cpu
