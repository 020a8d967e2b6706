// Expert parallelism over W ranks in one process (docs/expert-parallel.md §5: one host thread per
// rank): W CudaBackends, rank r on devices[r], each holding the replicated weights and its block of
// routed experts (make_ep_plan), exchanging the MoE partials through an EpGroup (nccl or host).
// Every call is made on every rank, steps concurrently on the rank threads, and rank 0 answers.
//
// Replicas. Every rank computes the same step on the same inputs; the MoE's only cross-rank sum is
// in rank order on every rank (ep_reduce), so all replicas hold the same bits. That is checked at
// every step where it is visible: sampled ids, and the logits rows whenever the caller asks for
// them — a mismatch fails the chunk with an error (a bug, never silently one replica's answer).
// Ranks ≠ 0 sample with copies of the caller's sampler state, so the state advances once.
//
// Failure. A rank whose chunk fails aborts the group (the others' exchanges then fail instead of
// waiting); the chunk is reported failed or rolled back as the worst rank reports it, and the group
// refuses every later step with the first failure's text. Bookkeeping calls (create, fork, reset,
// truncate, snapshots) run on every rank in turn; their handles agree because every rank numbers
// them the same way — checked.
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include "cuda_backend.hpp"
#include "dsv4/expert_parallel.hpp"
#include "ep_backend.hpp"
#include "ep_transport.hpp"

namespace dsv4::cuda {
namespace {

// One host thread per rank: run(fn) executes fn on it and returns its future.
class RankThread {
 public:
  RankThread() : t_([this] { loop(); }) {}
  ~RankThread() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    t_.join();
  }
  std::future<void> run(std::function<void()> fn) {
    std::packaged_task<void()> task(std::move(fn));
    std::future<void> f = task.get_future();
    {
      std::lock_guard<std::mutex> lk(mu_);
      q_.push_back(std::move(task));
    }
    cv_.notify_all();
    return f;
  }

 private:
  void loop() {
    for (;;) {
      std::packaged_task<void()> task;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
        if (q_.empty()) return;
        task = std::move(q_.front());
        q_.erase(q_.begin());
      }
      task();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::packaged_task<void()>> q_;
  bool stop_ = false;
  std::thread t_;
};

class EpBackend final : public Backend {
 public:
  EpBackend(const std::string& dir, const ModelConfig& cfg, const BackendOptions& opt, const Logger& log,
            const EpSettings& ep)
      : cfg_(cfg), log_(log) {
    const int W = ep.ranks;
    const EpPlan plan = make_ep_plan(cfg, W);
    std::vector<int> devices;
    for (int r = 0; r < W; ++r) devices.push_back(ep.devices[static_cast<size_t>(r) % ep.devices.size()]);
    group_ = EpGroup::make(ep.transport, devices);
    log_.info("expert parallelism: {} ranks, {}; experts per rank {}", W, group_->describe(),
              fmt::join(plan.count, "/"));
    for (int r = 0; r < W; ++r) threads_.push_back(std::make_unique<RankThread>());
    ranks_.resize(static_cast<size_t>(W));
    // The ranks load concurrently (each uploads its replicated weights and its experts).
    on_all([&](int r) {
      BackendOptions o = opt;
      o.device_ids = {devices[static_cast<size_t>(r)]};
      o.params = ep.rank_params;
      EpRank er;
      er.rank = r;
      er.world = W;
      er.first = static_cast<int>(plan.first[static_cast<size_t>(r)]);
      er.count = static_cast<int>(plan.count[static_cast<size_t>(r)]);
      er.transport = &group_->rank(r);
      ranks_[static_cast<size_t>(r)] = std::make_unique<CudaBackend>(dir, cfg, o, log, er);
    });
  }
  ~EpBackend() override {
    threads_.clear();  // joins (no task is running between calls)
    ranks_.clear();
  }

  std::string name() const override { return "cuda"; }
  const ModelConfig& config() const override { return cfg_; }

  SeqHandle create_sequence(int64_t max_context) override {
    return same_handle("create_sequence", [&](CudaBackend& b) { return b.create_sequence(max_context); });
  }
  void release_sequence(SeqHandle seq) override {
    for (auto& b : ranks_) b->release_sequence(seq);
  }
  SeqHandle fork_sequence(SeqHandle seq) override {
    return same_handle("fork_sequence", [&](CudaBackend& b) { return b.fork_sequence(seq); });
  }
  void reset_sequence(SeqHandle seq) override {
    for (auto& b : ranks_) b->reset_sequence(seq);
  }
  int64_t sequence_position(SeqHandle seq) const override { return ranks_[0]->sequence_position(seq); }
  std::vector<int32_t> sequence_tokens(SeqHandle seq) const override { return ranks_[0]->sequence_tokens(seq); }
  int64_t sequence_max_context(SeqHandle seq) const override { return ranks_[0]->sequence_max_context(seq); }
  void truncate_sequence(SeqHandle seq, int64_t position) override {
    ranks_[0]->truncate_sequence(seq, position);  // validates: the others then cannot fail
    for (size_t r = 1; r < ranks_.size(); ++r) ranks_[r]->truncate_sequence(seq, position);
  }
  SnapshotHandle snapshot_sequence(SeqHandle seq) override {
    return same_handle("snapshot_sequence", [&](CudaBackend& b) { return b.snapshot_sequence(seq); });
  }
  SeqHandle restore_snapshot(SnapshotHandle snap, int64_t max_context) override {
    return same_handle("restore_snapshot", [&](CudaBackend& b) { return b.restore_snapshot(snap, max_context); });
  }
  void release_snapshot(SnapshotHandle snap) override {
    for (auto& b : ranks_) b->release_snapshot(snap);
  }
  StateMemory memory() const override { return ranks_[0]->memory(); }

  StepId submit(std::span<const ForwardChunk> batch) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (done_.size() >= static_cast<size_t>(kMaxStepsInFlight))
      fail(Status::invalid_argument, "submit: {} steps are already in flight (wait for one first)", done_.size());
    if (!broken_.empty()) fail(Status::backend, "expert-parallel backend: a rank failed earlier ({}); reload", broken_);
    const size_t W = ranks_.size();
    // Ranks ≠ 0: the same chunks with their own outputs, samplers and sampler-state copies.
    struct Side {
      std::vector<ForwardChunk> chunks;
      std::vector<std::vector<float>> logits;
      std::vector<std::optional<Sampler>> samplers;
      std::vector<SamplerState> states;
    };
    std::vector<Side> side(W);
    for (size_t r = 1; r < W; ++r) {
      Side& s = side[r];
      s.chunks.assign(batch.begin(), batch.end());
      s.logits.resize(batch.size());
      s.samplers.resize(batch.size());
      s.states.reserve(batch.size());
      for (size_t i = 0; i < batch.size(); ++i) {
        ForwardChunk& c = s.chunks[i];
        c.logits_out = c.logits_out ? &s.logits[i] : nullptr;
        c.hidden_out = nullptr;
        c.final_streams_out = nullptr;
        if (c.sampler) {
          s.samplers[i].emplace(c.sampler->params());
          s.states.push_back(*c.sampler_state);
          c.sampler = &*s.samplers[i];
          c.sampler_state = &s.states.back();
        }
      }
    }
    std::vector<StepResult> res(W);
    std::vector<std::exception_ptr> err(W);
    on_all_catch(err, [&](int r) {
      CudaBackend& b = *ranks_[static_cast<size_t>(r)];
      const std::span<const ForwardChunk> mine = r == 0 ? batch : std::span<const ForwardChunk>(side[static_cast<size_t>(r)].chunks);
      res[static_cast<size_t>(r)] = b.wait(b.submit(mine));
    });
    // submit() validates before it changes anything, identically on every rank: a validation error
    // is thrown by all of them. Anything else (one rank threw, others ran) breaks the group.
    size_t threw = 0;
    for (auto& e : err) threw += e != nullptr;
    if (threw == W) std::rethrow_exception(err[0]);
    if (threw) {
      for (size_t r = 0; r < W; ++r)
        if (err[r]) {
          try {
            std::rethrow_exception(err[r]);
          } catch (const std::exception& e) {
            broken_ = fmt::format("rank {}: {}", r, e.what());
          }
          break;
        }
      fail(Status::backend, "expert-parallel backend: {}", broken_);
    }
    StepResult out = std::move(res[0]);
    for (size_t i = 0; i < out.chunks.size(); ++i) {
      ChunkResult& c = out.chunks[i];
      for (size_t r = 1; r < W; ++r) {
        const ChunkResult& o = res[r].chunks.at(i);
        if (o.status != ChunkStatus::ok && c.status != ChunkStatus::failed) {
          c.status = o.status;
          c.error_status = o.error_status;
          c.error = fmt::format("rank {}: {}", r, o.error);
        }
        if (c.status != ChunkStatus::ok) continue;
        const std::string why = replica_mismatch(batch[i], c, side[r], i, o);
        if (!why.empty()) {
          c.status = ChunkStatus::failed;
          c.error_status = Status::internal;
          c.error = fmt::format("expert-parallel replicas differ: rank {} {} (a bug; please report)", r, why);
        }
      }
      if (c.status != ChunkStatus::ok && broken_.empty()) broken_ = c.error;
    }
    const StepId id = next_step_++;
    done_.emplace(id, std::move(out));
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
  void forward_mtp(SeqHandle seq, std::span<const float> final_streams, std::span<const int32_t> next_tokens,
                   std::vector<float>& logits_out) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (!broken_.empty()) fail(Status::backend, "expert-parallel backend: a rank failed earlier ({}); reload", broken_);
    std::vector<std::vector<float>> other(ranks_.size());
    std::vector<std::exception_ptr> err(ranks_.size());
    on_all_catch(err, [&](int r) {
      ranks_[static_cast<size_t>(r)]->forward_mtp(seq, final_streams, next_tokens,
                                                  r == 0 ? logits_out : other[static_cast<size_t>(r)]);
    });
    for (auto& e : err)
      if (e) std::rethrow_exception(e);
    for (size_t r = 1; r < ranks_.size(); ++r)
      if (other[r] != logits_out)
        fail(Status::internal, "expert-parallel replicas differ: rank {}'s MTP logits (a bug; please report)", r);
  }

 private:
  void on_all(const std::function<void(int)>& fn) {
    std::vector<std::exception_ptr> err(ranks_.size());
    on_all_catch(err, fn);
    for (auto& e : err)
      if (e) std::rethrow_exception(e);
  }
  // fn(r) on every rank thread at once. A rank that throws aborts the group, so that no other rank
  // waits for it at an exchange.
  void on_all_catch(std::vector<std::exception_ptr>& err, const std::function<void(int)>& fn) {
    std::vector<std::future<void>> f;
    for (size_t r = 0; r < threads_.size(); ++r)
      f.push_back(threads_[r]->run([&, r] {
        try {
          fn(static_cast<int>(r));
        } catch (const std::exception& e) {
          group_->rank(static_cast<int>(r)).abort(e.what());
          throw;
        }
      }));
    for (size_t r = 0; r < f.size(); ++r) {
      try {
        f[r].get();
      } catch (...) {
        err[r] = std::current_exception();
      }
    }
  }
  template <class F> uint64_t same_handle(const char* what, F&& fn) {
    const uint64_t h = fn(*ranks_[0]);
    for (size_t r = 1; r < ranks_.size(); ++r) {
      const uint64_t hr = fn(*ranks_[r]);
      if (hr != h) {
        broken_ = fmt::format("{}: rank {} returned handle {}, rank 0 {}", what, r, hr, h);
        fail(Status::internal, "expert-parallel backend: {}", broken_);
      }
    }
    return h;
  }
  static std::string replica_mismatch(const ForwardChunk& c0, const ChunkResult& r0, const auto& side, size_t i,
                                      const ChunkResult& ro) {
    if (c0.sampler && ro.sample.id != r0.sample.id)
      return fmt::format("sampled id {} where rank 0 sampled {}", ro.sample.id, r0.sample.id);
    if (c0.logits_out) {
      const std::vector<float>& a = *c0.logits_out;
      const std::vector<float>& b = side.logits[i];
      if (a.size() != b.size() || (!a.empty() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) != 0))
        return "logits";
    }
    return {};
  }

  ModelConfig cfg_;
  Logger log_;
  std::unique_ptr<EpGroup> group_;
  std::vector<std::unique_ptr<RankThread>> threads_;
  std::vector<std::unique_ptr<CudaBackend>> ranks_;
  mutable std::mutex mu_;
  std::map<StepId, StepResult> done_;
  StepId next_step_ = 1;
  std::string broken_;
};

}  // namespace

std::unique_ptr<Backend> make_ep_backend(const std::string& dir, const ModelConfig& cfg, const BackendOptions& opt,
                                         const Logger& log, const EpSettings& ep) {
  return std::make_unique<EpBackend>(dir, cfg, opt, log, ep);
}

}  // namespace dsv4::cuda

namespace dsv4::cuda {

std::optional<EpSettings> ep_settings(const BackendOptions& opt) {
  EpSettings s;
  s.devices = opt.device_ids.empty() ? std::vector<int>{0} : opt.device_ids;
  bool asked = s.devices.size() > 1;
  std::optional<int> ranks;
  std::optional<EpTransportKind> transport;
  for (const auto& [k, v] : opt.params) {
    if (k == "ep_ranks") {
      int n = 0;
      const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      if (ec != std::errc() || p != v.data() + v.size() || n < 1 || n > kMaxEpWorld)
        fail(Status::invalid_argument, "cuda backend: ep_ranks={} (expected an integer in [1, {}])", v, kMaxEpWorld);
      ranks = n;
      asked = true;
    } else if (k == "ep_transport") {
      if (v != "nccl" && v != "host")
        fail(Status::invalid_argument, "cuda backend: ep_transport={} (expected nccl or host)", v);
      transport = v == "nccl" ? EpTransportKind::nccl : EpTransportKind::host;
      asked = true;
    } else {
      s.rank_params.emplace_back(k, v);
    }
  }
  if (!asked) return std::nullopt;
  s.ranks = ranks.value_or(static_cast<int>(s.devices.size()));
  const bool shared = s.ranks > static_cast<int>(s.devices.size());
  s.transport = transport.value_or(shared ? EpTransportKind::host : EpTransportKind::nccl);
  return s;
}

}  // namespace dsv4::cuda
