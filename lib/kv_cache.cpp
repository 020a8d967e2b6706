// Sizes of the per-sequence state and the byte pool (contract in include/dsv4/kv_cache.hpp,
// spec §4.1).
#include "dsv4/kv_cache.hpp"

#include <cstdint>

namespace dsv4 {

std::vector<LayerStateShape> state_layout(const ModelConfig& cfg, int rollback) {
  std::vector<LayerStateShape> out;
  for (const LayerSpec& l : cfg.layers) {
    LayerStateShape s;
    s.window = cfg.sliding_window;
    s.window_ring = cfg.sliding_window + rollback;
    s.kv_dim = cfg.head_dim;
    if (l.attn == AttnKind::csa) {
      s.main = {4, cfg.head_dim, 8, 2 * cfg.head_dim, 8 + rollback};
      s.index = {4, cfg.index_head_dim, 8, 2 * cfg.index_head_dim, 8 + rollback};
    } else if (l.attn == AttnKind::hca) {
      s.main = {l.compress_ratio, cfg.head_dim, l.compress_ratio, cfg.head_dim, l.compress_ratio + rollback};
    }
    out.push_back(s);
  }
  return out;
}

StateBytes& StateBytes::operator+=(const StateBytes& o) {
  fp8 += o.fp8;
  e8m0 += o.e8m0;
  bf16 += o.bf16;
  fp4 += o.fp4;
  f32 += o.f32;
  return *this;
}

namespace {
// One window key or compressed entry in its compact form: FP8 non-rope dims + e8m0 per 64, bf16 rope.
StateBytes entry_bytes(const ModelConfig& cfg, size_t n) {
  const size_t nope = static_cast<size_t>(cfg.head_dim - cfg.rope_dim);
  StateBytes b;
  b.fp8 = n * nope;
  b.e8m0 = n * ((nope + 63) / 64);
  b.bf16 = n * 2 * static_cast<size_t>(cfg.rope_dim);
  return b;
}
StateBytes index_key_bytes(const ModelConfig& cfg, size_t n) {
  const size_t d = static_cast<size_t>(cfg.index_head_dim);
  StateBytes b;
  b.fp4 = n * ((d + 1) / 2);
  b.e8m0 = n * ((d + 31) / 32);
  return b;
}
StateBytes compressor_bytes(const CompressorShape& c) {
  StateBytes b;
  b.f32 = 2 * static_cast<size_t>(c.ring) * static_cast<size_t>(c.width) * sizeof(float);  // kv + gate
  return b;
}
}  // namespace

StateCost state_cost(const ModelConfig& cfg, int rollback) {
  StateCost c;
  c.rollback = rollback;
  for (const auto& s : state_layout(cfg, rollback)) {
    c.fixed += entry_bytes(cfg, static_cast<size_t>(s.window_ring));
    if (s.main.ratio) {
      c.fixed += compressor_bytes(s.main);
      // An over-estimate when the ratio does not divide the page (never the case in the released configs).
      c.page += entry_bytes(cfg, static_cast<size_t>((c.page_tokens + s.main.ratio - 1) / s.main.ratio));
    }
    if (s.index.ratio) {
      c.fixed += compressor_bytes(s.index);
      c.page += index_key_bytes(cfg, static_cast<size_t>((c.page_tokens + s.index.ratio - 1) / s.index.ratio));
    }
  }
  return c;
}

size_t StatePool::used() const {
  std::lock_guard<std::mutex> lk(mu_);
  return used_;
}

size_t StatePool::free() const {
  std::lock_guard<std::mutex> lk(mu_);
  if (budget_ == 0) return SIZE_MAX;
  return used_ >= budget_ ? 0 : budget_ - used_;
}

bool StatePool::try_reserve(size_t bytes) {
  std::lock_guard<std::mutex> lk(mu_);
  if (budget_ != 0 && (used_ > budget_ || bytes > budget_ - used_)) return false;
  used_ += bytes;
  return true;
}

void StatePool::release(size_t bytes) {
  std::lock_guard<std::mutex> lk(mu_);
  used_ = bytes > used_ ? 0 : used_ - bytes;
}

}  // namespace dsv4
