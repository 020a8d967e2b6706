// Sizes of the per-sequence state (contract in include/dsv4/kv_cache.hpp, spec §4.1).
#include "dsv4/kv_cache.hpp"

namespace dsv4 {

std::vector<LayerStateShape> state_layout(const ModelConfig& cfg) {
  std::vector<LayerStateShape> out;
  for (const LayerSpec& l : cfg.layers) {
    LayerStateShape s;
    s.window = cfg.sliding_window;
    s.kv_dim = cfg.head_dim;
    if (l.attn == AttnKind::csa) {
      s.main = {4, cfg.head_dim, 8, 2 * cfg.head_dim};
      s.index = {4, cfg.index_head_dim, 8, 2 * cfg.index_head_dim};
    } else if (l.attn == AttnKind::hca) {
      s.main = {l.compress_ratio, cfg.head_dim, l.compress_ratio, cfg.head_dim};
    }
    out.push_back(s);
  }
  return out;
}

size_t state_fixed_bytes_f32(const ModelConfig& cfg) {
  size_t n = 0;
  for (const auto& s : state_layout(cfg)) {
    n += static_cast<size_t>(s.window) * s.kv_dim;
    n += 2 * static_cast<size_t>(s.main.rows) * s.main.width;
    n += 2 * static_cast<size_t>(s.index.rows) * s.index.width;
  }
  return n * sizeof(float);
}

double state_bytes_per_token_f32(const ModelConfig& cfg) {
  double n = 0;
  for (const auto& s : state_layout(cfg)) {
    if (s.main.ratio) n += static_cast<double>(s.main.dim) / s.main.ratio;
    if (s.index.ratio) n += static_cast<double>(s.index.dim) / s.index.ratio;
  }
  return n * sizeof(float);
}

}  // namespace dsv4
