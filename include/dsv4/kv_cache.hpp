// The per-sequence state of spec §4.1, described independently of where it lives: for every layer
// (and the MTP layer) the window ring buffer, the append-only compressed entries and indexer keys,
// and the partial compression windows. Backends size their own storage from this description; the
// scheduler budgets memory with the same numbers. Pure arithmetic on the config, plus StatePool,
// the byte budget every backend draws sequence state from.
//
// Rollback (Backend::truncate_sequence): every ring keeps `rollback` extra slots, so the last
// `rollback` tokens can be taken back in O(1) — the window ring holds W + R keys and each
// compressor keeps the raw (kv, gate) rows of its last rows + R tokens, from which the partial
// window of any of those positions is exact (spec §4.2). The device (CUDA) layout the accounting
// follows (spec §4.1, lossless compact forms):
//   window keys and compressed entries: non-rope dims FP8 e4m3 + e8m0 per 64, rope dims bf16;
//   indexer keys: FP4 e2m1 (two per byte) + e8m0 per 32; partial compressor rows: f32 kv + gate.
// Pages: 128 tokens (= 1 HCA-128 entry, 32 CSA entries + 32 indexer keys per CSA layer), so long
// and short sequences draw whole pages from one budget.
#pragma once
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "dsv4/config.hpp"

namespace dsv4 {

struct CompressorShape {
  int ratio = 0;   // m: 4 (CSA, with overlap) or the HCA ratio; 0 = no compressor
  int dim = 0;     // d: entry width (head_dim main, index_head_dim indexer)
  int rows = 0;    // raw rows a window close reads: 8 for CSA (previous + current window), m for HCA
  int width = 0;   // c·d: features per raw row (2d with overlap, d without)
  int ring = 0;    // raw rows kept: rows + rollback
};

struct LayerStateShape {
  int window = 0;        // W: keys a query sees (current token included)
  int window_ring = 0;   // W + rollback slots (slot = position mod window_ring)
  int kv_dim = 0;        // width of a window / compressed entry (head_dim; K = V)
  CompressorShape main;  // main compressor (CSA and HCA layers)
  CompressorShape index; // indexer compressor (CSA layers only)
};

// One entry per decoder layer, plus the MTP layer at index num_layers when present.
std::vector<LayerStateShape> state_layout(const ModelConfig& cfg, int rollback = 0);

// Bytes by storage type (the device layout above).
struct StateBytes {
  size_t fp8 = 0, e8m0 = 0, bf16 = 0, fp4 = 0, f32 = 0;
  size_t total() const { return fp8 + e8m0 + bf16 + fp4 + f32; }
  StateBytes& operator+=(const StateBytes& o);
};

// What one sequence costs: a fixed part (window rings + partial compressor rows, every layer) and
// one page per started 128 tokens (compressed entries + indexer keys).
struct StateCost {
  int page_tokens = 128;
  int rollback = 0;
  StateBytes fixed, page;
  int64_t pages_for(int64_t tokens) const { return (tokens + page_tokens - 1) / page_tokens; }
  size_t bytes_for(int64_t tokens) const { return fixed.total() + static_cast<size_t>(pages_for(tokens)) * page.total(); }
};
StateCost state_cost(const ModelConfig& cfg, int rollback);

// The byte budget sequence state is drawn from (thread-safe). Backends reserve a sequence's fixed
// part at creation and a page whenever a chunk starts one; the scheduler asks free() before
// admitting. budget 0 = unlimited (free() reports SIZE_MAX).
class StatePool {
 public:
  StatePool(const StateCost& cost, size_t budget) : cost_(cost), budget_(budget) {}
  const StateCost& cost() const { return cost_; }
  size_t budget() const { return budget_; }
  size_t used() const;
  size_t free() const;
  bool try_reserve(size_t bytes);  // false (nothing reserved) when it does not fit
  void release(size_t bytes);

 private:
  StateCost cost_;
  size_t budget_;
  mutable std::mutex mu_;
  size_t used_ = 0;
};

}  // namespace dsv4
