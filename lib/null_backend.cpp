// The null backend (contract in include/dsv4/null_backend.hpp): bookkeeping only.
#include "dsv4/null_backend.hpp"

#include <map>
#include <mutex>
#include <unordered_map>

#include "dsv4/error.hpp"
#include "dsv4/rng.hpp"

namespace dsv4 {

int32_t null_backend_sample(int32_t last_token, int64_t position, int32_t vocab) {
  uint64_t s = (static_cast<uint64_t>(static_cast<uint32_t>(last_token)) << 32) ^ static_cast<uint64_t>(position);
  return static_cast<int32_t>(splitmix64(s) % static_cast<uint64_t>(vocab));
}

namespace {

struct NullSeq {
  int64_t max_context = 0;
  std::vector<int32_t> tokens;
  int32_t last_sample = -1;
  size_t reserved = 0;
};

class NullBackend final : public Backend {
 public:
  NullBackend(const ModelConfig& cfg, const BackendOptions& opt) : cfg_(cfg) {
    check_params(opt, "null", {});
    const StateCost cost = state_cost(cfg_, opt.rollback_tokens);
    pool_ = std::make_unique<StatePool>(cost, state_budget(opt, cost));
  }
  std::string name() const override { return "null"; }
  const ModelConfig& config() const override { return cfg_; }

  SeqHandle create_sequence(int64_t max_context) override {
    if (max_context <= 0) fail(Status::invalid_argument, "create_sequence: max_context {} must be ≥ 1", max_context);
    std::lock_guard<std::mutex> lk(mu_);
    NullSeq s;
    s.max_context = max_context;
    return add(std::move(s));
  }
  void release_sequence(SeqHandle h) override {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = seqs_.find(h);
    if (it == seqs_.end()) return;
    pool_->release(it->second.reserved);
    seqs_.erase(it);
  }
  SeqHandle fork_sequence(SeqHandle h) override {
    std::lock_guard<std::mutex> lk(mu_);
    NullSeq c = get(h);
    return add(std::move(c));
  }
  void reset_sequence(SeqHandle h) override { truncate_sequence(h, 0); }
  int64_t sequence_position(SeqHandle h) const override {
    std::lock_guard<std::mutex> lk(mu_);
    return static_cast<int64_t>(get(h).tokens.size());
  }
  std::vector<int32_t> sequence_tokens(SeqHandle h) const override {
    std::lock_guard<std::mutex> lk(mu_);
    return get(h).tokens;
  }
  int64_t sequence_max_context(SeqHandle h) const override {
    std::lock_guard<std::mutex> lk(mu_);
    return get(h).max_context;
  }
  void truncate_sequence(SeqHandle h, int64_t position) override {
    std::lock_guard<std::mutex> lk(mu_);
    NullSeq& s = get(h);
    const int64_t pos = static_cast<int64_t>(s.tokens.size());
    if (position < 0 || position > pos) fail(Status::invalid_argument, "truncate: position {} outside [0, {}]", position, pos);
    if (position != 0 && pos - position > pool_->cost().rollback)
      fail(Status::invalid_argument, "truncate: {} tokens back exceeds the rollback bound of {} tokens", pos - position,
           pool_->cost().rollback);
    s.tokens.resize(static_cast<size_t>(position));
    s.last_sample = -1;
    const size_t keep = pool_->cost().bytes_for(position);
    if (s.reserved > keep) {
      pool_->release(s.reserved - keep);
      s.reserved = keep;
    }
  }
  SnapshotHandle snapshot_sequence(SeqHandle h) override {
    std::lock_guard<std::mutex> lk(mu_);
    const NullSeq& s = get(h);
    if (s.tokens.size() % static_cast<size_t>(pool_->cost().page_tokens) != 0)
      fail(Status::invalid_argument, "snapshot: position {} is not a page boundary", s.tokens.size());
    const size_t need = pool_->cost().bytes_for(static_cast<int64_t>(s.tokens.size()));
    if (!pool_->try_reserve(need)) fail(Status::out_of_memory, "snapshot: {} bytes needed, {} free", need, pool_->free());
    NullSeq c = s;
    c.reserved = need;
    const SnapshotHandle id = next_++;
    snaps_[id] = std::move(c);
    return id;
  }
  SeqHandle restore_snapshot(SnapshotHandle id, int64_t max_context) override {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = snaps_.find(id);
    if (it == snaps_.end()) fail(Status::invalid_argument, "unknown snapshot handle {}", id);
    NullSeq c = it->second;
    if (max_context > 0) c.max_context = max_context;
    return add(std::move(c));
  }
  void release_snapshot(SnapshotHandle id) override {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = snaps_.find(id);
    if (it == snaps_.end()) return;
    pool_->release(it->second.reserved);
    snaps_.erase(it);
  }
  StateMemory memory() const override {
    std::lock_guard<std::mutex> lk(mu_);
    return memory_report(*pool_, static_cast<int64_t>(seqs_.size()), static_cast<int64_t>(snaps_.size()));
  }

  StepId submit(std::span<const ForwardChunk> batch) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (done_.size() >= static_cast<size_t>(kMaxStepsInFlight))
      fail(Status::invalid_argument, "submit: {} steps are already in flight", done_.size());
    check_distinct(batch);
    const StateCost& cost = pool_->cost();
    size_t pages = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      const ForwardChunk& c = batch[i];
      const NullSeq& s = get(c.seq);
      const int64_t pos = static_cast<int64_t>(s.tokens.size());
      if (c.from_last_sample) {
        if (s.last_sample < 0) fail(Status::invalid_argument, "forward: sequence {} has no sampled token", c.seq);
        check_chunk({&s.last_sample, 1}, pos, s.max_context, cfg_.vocab_size);
      } else {
        check_chunk(c.tokens, pos, s.max_context, cfg_.vocab_size);
      }
      if ((c.sampler == nullptr) != (c.sampler_state == nullptr))
        fail(Status::invalid_argument, "forward: chunk {} sets only one of sampler and sampler_state", i);
      const int64_t n = c.from_last_sample ? 1 : static_cast<int64_t>(c.tokens.size());
      pages += static_cast<size_t>(cost.pages_for(pos + n) - cost.pages_for(pos));
    }
    if (pages && !pool_->try_reserve(pages * cost.page.total()))
      fail(Status::out_of_memory, "forward: the step starts {} pages; {} bytes free", pages, pool_->free());
    StepResult r;
    r.chunks.resize(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      const ForwardChunk& c = batch[i];
      NullSeq& s = get(c.seq);
      const int64_t pos = static_cast<int64_t>(s.tokens.size());
      const int32_t last = s.last_sample;
      const std::span<const int32_t> tok = c.from_last_sample ? std::span<const int32_t>(&last, 1) : c.tokens;
      const int64_t n = static_cast<int64_t>(tok.size());
      s.reserved += static_cast<size_t>(cost.pages_for(pos + n) - cost.pages_for(pos)) * cost.page.total();
      if (c.logits_out) {
        const int64_t rows = c.logits == LogitsMode::none ? 0 : c.logits == LogitsMode::last ? 1 : n;
        c.logits_out->resize(static_cast<size_t>(rows * cfg_.vocab_size));
        for (int64_t row = 0; row < rows; ++row) {
          const int64_t t = n - rows + row;
          const int32_t best = null_backend_sample(tok[static_cast<size_t>(t)], pos + t, cfg_.vocab_size);
          float* o = c.logits_out->data() + row * cfg_.vocab_size;
          for (int32_t v = 0; v < cfg_.vocab_size; ++v) o[v] = v == best ? 1.0f : 0.0f;
        }
      }
      s.tokens.insert(s.tokens.end(), tok.begin(), tok.end());
      if (c.sampler) {
        const int32_t id = null_backend_sample(tok.back(), pos + n - 1, cfg_.vocab_size);
        c.sampler_state->add_generated(id);
        r.chunks[i].sample.id = id;
        s.last_sample = id;
      }
    }
    const StepId id = next_step_++;
    done_.emplace(id, std::move(r));
    return id;
  }
  StepResult wait(StepId id) override {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = done_.find(id);
    if (it == done_.end()) fail(Status::invalid_argument, "wait: unknown or already waited-for step {}", id);
    StepResult r = std::move(it->second);
    done_.erase(it);
    return r;
  }
  void forward_mtp(SeqHandle, std::span<const float>, std::span<const int32_t>, std::vector<float>&) override {
    fail(Status::unsupported, "the null backend has no MTP layer");
  }

 private:
  NullSeq& get(SeqHandle h) const {
    auto it = seqs_.find(h);
    if (it == seqs_.end()) fail(Status::invalid_argument, "unknown sequence handle {}", h);
    return const_cast<NullSeq&>(it->second);
  }
  SeqHandle add(NullSeq s) {
    const size_t need = pool_->cost().bytes_for(static_cast<int64_t>(s.tokens.size()));
    if (!pool_->try_reserve(need))
      fail(Status::out_of_memory, "sequence state: {} bytes needed, {} free", need, pool_->free());
    s.reserved = need;
    const SeqHandle h = next_++;
    seqs_.emplace(h, std::move(s));
    return h;
  }

  ModelConfig cfg_;
  std::unique_ptr<StatePool> pool_;
  mutable std::mutex mu_;
  std::unordered_map<SeqHandle, NullSeq> seqs_;
  std::unordered_map<SnapshotHandle, NullSeq> snaps_;
  std::map<StepId, StepResult> done_;
  uint64_t next_ = 1;
  StepId next_step_ = 1;
};

}  // namespace

std::unique_ptr<Backend> make_null_backend(const std::string&, const ModelConfig& cfg, const BackendOptions& opt,
                                           const Logger&) {
  return std::make_unique<NullBackend>(cfg, opt);
}

}  // namespace dsv4
