// Host-memory sequence state (contract in include/dsv4/cpu/state.hpp), sized from the layout.
#include "dsv4/cpu/state.hpp"

#include <algorithm>

namespace dsv4::cpu {

SequenceState SequenceState::create(const std::vector<LayerStateShape>& layout, int64_t max_context) {
  SequenceState s;
  s.max_context = max_context;
  s.reset(layout);
  return s;
}

void SequenceState::reset(const std::vector<LayerStateShape>& layout) {
  position = 0;
  mtp_position = 0;
  tokens.clear();
  last_sample = -1;
  failure.clear();
  layers.resize(layout.size());
  for (size_t i = 0; i < layout.size(); ++i) {
    const LayerStateShape& sh = layout[i];
    LayerState& L = layers[i];
    // Rings are read only at positions already written, so their initial contents never matter;
    // zero them anyway so that two fresh sequences are identical byte for byte.
    L.window.assign(static_cast<size_t>(sh.window_ring) * sh.kv_dim, 0.0f);
    L.entries.clear();
    L.idx_keys.clear();
    auto init = [](CompressorState& c, const CompressorShape& cs) {
      c.kv.assign(static_cast<size_t>(cs.ring) * cs.width, 0.0f);
      c.gate.assign(static_cast<size_t>(cs.ring) * cs.width, 0.0f);
    };
    init(L.main, sh.main);
    init(L.index, sh.index);
  }
}

void SequenceState::truncate(const std::vector<LayerStateShape>& layout, int num_main_layers, int64_t to) {
  if (to == 0) {
    const int64_t keep_ctx = max_context;
    const size_t keep_reserved = reserved;
    reset(layout);
    max_context = keep_ctx;
    reserved = keep_reserved;
    return;
  }
  const int64_t mtp_to = std::min(mtp_position, to);
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerStateShape& sh = layout[i];
    LayerState& L = layers[i];
    const int64_t n = static_cast<int>(i) < num_main_layers ? to : mtp_to;  // the MTP layer has its own count
    L.entries.resize(std::min(L.entries.size(), static_cast<size_t>(entries_after(n, sh.main.ratio)) * sh.main.dim));
    L.idx_keys.resize(
        std::min(L.idx_keys.size(), static_cast<size_t>(entries_after(n, sh.index.ratio)) * sh.index.dim));
  }
  position = to;
  mtp_position = mtp_to;
  tokens.resize(static_cast<size_t>(to));
  last_sample = -1;
}

}  // namespace dsv4::cpu
