// The per-sequence state of spec §4.1, described independently of where it lives: for every layer
// (and the MTP layer) the window ring buffer, the append-only compressed entries and indexer keys,
// and the partial compression windows. Backends size their own storage from this description; the
// numbers are also what a scheduler needs to budget memory. Pure arithmetic on the config.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "dsv4/config.hpp"

namespace dsv4 {

struct CompressorShape {
  int ratio = 0;   // m: 4 (CSA, with overlap) or the HCA ratio; 0 = no compressor
  int dim = 0;     // d: entry width (head_dim main, index_head_dim indexer)
  int rows = 0;    // partial-window rows kept: 8 for CSA (previous + current window), m for HCA
  int width = 0;   // c·d: features per raw row (2d with overlap, d without)
};

struct LayerStateShape {
  int window = 0;        // ring-buffer slots (slot = position mod window)
  int kv_dim = 0;        // width of a window / compressed entry (head_dim; K = V)
  CompressorShape main;  // main compressor (CSA and HCA layers)
  CompressorShape index; // indexer compressor (CSA layers only)
};

// One entry per decoder layer, plus the MTP layer at index num_layers when present.
std::vector<LayerStateShape> state_layout(const ModelConfig& cfg);

// f32 bytes of the fixed part (windows + partial compressor rows) and per token (entries + keys,
// amortised) of one sequence.
size_t state_fixed_bytes_f32(const ModelConfig& cfg);
double state_bytes_per_token_f32(const ModelConfig& cfg);

}  // namespace dsv4
