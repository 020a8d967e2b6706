// Host-memory sequence state (contract in include/dsv4/cpu/state.hpp): sized from the layout,
// compressor rows initialised to kv = 0, gate = −∞ (an unfilled slot weighs nothing, spec §4.1).
#include "dsv4/cpu/state.hpp"

#include <cmath>

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
  layers.assign(layout.size(), LayerState{});
  for (size_t i = 0; i < layout.size(); ++i) {
    const LayerStateShape& sh = layout[i];
    LayerState& L = layers[i];
    L.window.assign(static_cast<size_t>(sh.window) * sh.kv_dim, 0.0f);
    auto init = [](CompressorState& c, const CompressorShape& cs) {
      c.kv.assign(static_cast<size_t>(cs.rows) * cs.width, 0.0f);
      c.gate.assign(static_cast<size_t>(cs.rows) * cs.width, -INFINITY);
    };
    init(L.main, sh.main);
    init(L.index, sh.index);
  }
}

size_t SequenceState::bytes() const {
  size_t n = 0;
  for (const auto& L : layers)
    n += L.window.size() + L.entries.size() + L.idx_keys.size() + L.main.kv.size() + L.main.gate.size() +
         L.index.kv.size() + L.index.gate.size();
  return n * sizeof(float);
}

}  // namespace dsv4::cpu
