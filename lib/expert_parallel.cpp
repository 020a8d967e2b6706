// Expert-parallel sharding plan and the CPU combine (contract: dsv4/expert_parallel.hpp).
#include "dsv4/expert_parallel.hpp"

#include <algorithm>
#include <cstring>

#include "dsv4/error.hpp"
#include "dsv4/safetensors.hpp"

namespace dsv4 {

int ep_owner(int64_t e, int64_t n_experts, int world) {
  // floor(e·W/E): blocks of ⌊E/W⌋ or ⌈E/W⌉ experts, rank order = expert order.
  return static_cast<int>(e * world / n_experts);
}

int64_t routed_expert_of(const std::string& name) {
  static constexpr const char kKey[] = "ffn.experts.";
  const size_t at = name.find(kKey);
  if (at == std::string::npos) return -1;
  size_t i = at + sizeof(kKey) - 1;
  int64_t e = 0;
  const size_t start = i;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && i - start < 9) e = e * 10 + (name[i++] - '0');
  if (i == start || i >= name.size() || name[i] != '.') return -1;
  return e;
}

EpPlan make_ep_plan(const ModelConfig& cfg, int world) {
  const int64_t E = cfg.n_routed_experts;
  if (E < 1) fail(Status::invalid_argument, "expert parallelism: the config has {} routed experts", E);
  if (world < 1 || world > kMaxEpWorld || world > E)
    fail(Status::invalid_argument, "expert parallelism: world size {} (expected 1 … {}: at most one rank per routed expert)",
         world, std::min<int64_t>(E, kMaxEpWorld));
  EpPlan p;
  p.world = world;
  p.n_experts = E;
  p.owner.resize(static_cast<size_t>(E));
  p.first.assign(static_cast<size_t>(world), -1);
  p.count.assign(static_cast<size_t>(world), 0);
  for (int64_t e = 0; e < E; ++e) {
    const int r = ep_owner(e, E, world);
    p.owner[static_cast<size_t>(e)] = r;
    if (p.first[static_cast<size_t>(r)] < 0) p.first[static_cast<size_t>(r)] = e;
    ++p.count[static_cast<size_t>(r)];
  }
  return p;
}

EpPlan make_ep_plan(const ModelConfig& cfg, const Checkpoint& ck, int world) {
  EpPlan p = make_ep_plan(cfg, world);
  p.reads.assign(static_cast<size_t>(world), {});
  p.bytes.assign(static_cast<size_t>(world), 0);
  p.expert_bytes.assign(static_cast<size_t>(world), 0);
  for (const std::string& name : ck.names()) {  // sorted
    const TensorView& t = ck.get(name);
    const int64_t e = routed_expert_of(name);
    if (e >= p.n_experts)
      fail(Status::format, "tensor '{}': routed expert {} outside the config's {} experts", name, e, p.n_experts);
    EpRead rd{name, t.file ? *t.file : ck.dir(), t.nbytes};
    for (int r = 0; r < world; ++r) {
      if (e >= 0 && p.owner[static_cast<size_t>(e)] != r) continue;
      p.reads[static_cast<size_t>(r)].push_back(rd);
      p.bytes[static_cast<size_t>(r)] += t.nbytes;
      if (e >= 0) p.expert_bytes[static_cast<size_t>(r)] += t.nbytes;
    }
  }
  return p;
}

EpCombineCpu::EpCombineCpu(EpCombine mode, int world, int64_t rows, int64_t width, bool f32)
    : mode_(mode), world_(world), rows_(rows), width_(width), f32_(f32), contributed_(static_cast<size_t>(world), 0) {
  if (world < 1 || rows < 0 || width < 1)
    fail(Status::invalid_argument, "ep combine: world {}, rows {}, width {}", world, rows, width);
  if (mode == EpCombine::partial) partials_.assign(static_cast<size_t>(world), {});
}

void EpCombineCpu::contribute_partial(int rank, std::span<const double> partial) {
  if (mode_ != EpCombine::partial || rank < 0 || rank >= world_ || contributed_[static_cast<size_t>(rank)] ||
      partial.size() != static_cast<size_t>(rows_ * width_))
    fail(Status::internal, "ep combine: bad partial contribution from rank {} ({} values)", rank, partial.size());
  partials_[static_cast<size_t>(rank)].assign(partial.begin(), partial.end());
  contributed_[static_cast<size_t>(rank)] = 1;
}

void EpCombineCpu::contribute_slot(int rank, int64_t row, int64_t expert, std::span<const double> values) {
  if (mode_ != EpCombine::exact || rank < 0 || rank >= world_ || row < 0 || row >= rows_ ||
      values.size() != static_cast<size_t>(width_))
    fail(Status::internal, "ep combine: bad slot contribution from rank {} (row {}, expert {})", rank, row, expert);
  slots_.push_back({row, expert, slot_values_.size()});
  slot_values_.insert(slot_values_.end(), values.begin(), values.end());
  contributed_[static_cast<size_t>(rank)] = 1;
}

void EpCombineCpu::reduce(std::span<double> out) const {
  if (out.size() != static_cast<size_t>(rows_ * width_)) fail(Status::internal, "ep combine: output of {} values", out.size());
  const size_t n = out.size();
  if (mode_ == EpCombine::partial) {
    for (int r = 0; r < world_; ++r)
      if (!contributed_[static_cast<size_t>(r)]) fail(Status::internal, "ep combine: rank {} did not contribute", r);
    for (size_t i = 0; i < n; ++i) {
      if (f32_) {
        float acc = 0.0f;
        for (int r = 0; r < world_; ++r) acc += static_cast<float>(partials_[static_cast<size_t>(r)][i]);
        out[i] = acc;
      } else {
        double acc = 0.0;
        for (int r = 0; r < world_; ++r) acc += partials_[static_cast<size_t>(r)][i];
        out[i] = acc;
      }
    }
    return;
  }
  // exact: every row's slots in ascending expert id (a token's experts are distinct), from +0.
  std::vector<size_t> order(slots_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return slots_[a].row != slots_[b].row ? slots_[a].row < slots_[b].row : slots_[a].expert < slots_[b].expert;
  });
  std::fill(out.begin(), out.end(), 0.0);
  std::vector<float> accf(static_cast<size_t>(width_));
  size_t k = 0;
  while (k < order.size()) {
    const int64_t row = slots_[order[k]].row;
    double* o = out.data() + row * width_;
    std::fill(accf.begin(), accf.end(), 0.0f);
    for (; k < order.size() && slots_[order[k]].row == row; ++k) {
      const double* v = slot_values_.data() + slots_[order[k]].offset;
      for (int64_t d = 0; d < width_; ++d) {
        if (f32_) accf[static_cast<size_t>(d)] += static_cast<float>(v[d]);
        else o[d] += v[d];
      }
    }
    if (f32_)
      for (int64_t d = 0; d < width_; ++d) o[d] = accf[static_cast<size_t>(d)];
  }
}

}  // namespace dsv4
