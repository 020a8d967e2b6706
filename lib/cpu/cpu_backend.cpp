// CpuBackend construction, sequence bookkeeping and step execution (contract in
// include/dsv4/cpu/cpu_backend.hpp and include/dsv4/backend.hpp). Sequences and snapshots live in
// handle → state maps guarded by the backend mutex; each holds its bytes in the StatePool. The
// forward pass proper is in forward.cpp.
#include "dsv4/cpu/cpu_backend.hpp"

#include <algorithm>
#include <charconv>
#include <thread>

#include "dsv4/checkpoint_schema.hpp"
#include "dsv4/error.hpp"
#include "dsv4/numerics.hpp"

namespace dsv4::cpu {
namespace {
// Linear weights are pre-dequantised to f32 when they all fit in this much memory (tiny and test
// models); larger checkpoints (Flash) are dequantised row by row from the mmap at use.
constexpr size_t kDenseBudgetBytes = size_t{2} << 30;
constexpr int kMaxThreads = 1024;
constexpr const char* kKnownParams[] = {"threads", "indexer_ties", "ep_ranks", "ep_combine"};

int parse_threads(const BackendOptions& opt) {
  const std::string* v = find_param(opt, "threads");
  if (!v) return 0;
  int n = -1;
  const auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || p != v->data() + v->size() || n < 0 || n > kMaxThreads)
    fail(Status::invalid_argument, "cpu backend: threads '{}' must be an integer in [0, {}] (0 = all cores)", *v,
         kMaxThreads);
  return n;
}

bool torch_cpu_ties_requested(const BackendOptions& opt) {
  const std::string* v = find_param(opt, "indexer_ties");
  return v && *v == "torch-cpu";
}

bool parse_ties(const BackendOptions& opt) {
  const std::string* v = find_param(opt, "indexer_ties");
  if (!v || *v == "lowest") return false;
  if (*v == "torch-cpu") return true;
  fail(Status::invalid_argument, "cpu backend: indexer_ties '{}' must be 'lowest' or 'torch-cpu'", *v);
}

// Expert parallelism emulated on the CPU (dsv4/expert_parallel.hpp, docs/expert-parallel.md):
// ep_ranks=N (default 1 = off), ep_combine=partial|exact.
MoeEp parse_ep(const BackendOptions& opt, const ModelConfig& cfg) {
  MoeEp ep;
  if (const std::string* v = find_param(opt, "ep_ranks")) {
    int n = -1;
    const auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    const int64_t most = std::min<int64_t>(cfg.n_routed_experts, kMaxEpWorld);
    if (ec != std::errc() || p != v->data() + v->size() || n < 1 || n > most)
      fail(Status::invalid_argument, "cpu backend: ep_ranks '{}' must be an integer in [1, {}] (at most one rank per "
                                     "routed expert)", *v, most);
    ep.world = n;
  }
  if (const std::string* v = find_param(opt, "ep_combine")) {
    if (*v == "partial") ep.combine = EpCombine::partial;
    else if (*v == "exact") ep.combine = EpCombine::exact;
    else fail(Status::invalid_argument, "cpu backend: ep_combine '{}' must be 'partial' or 'exact'", *v);
  }
  if (ep.world > 1) ep.plan = make_ep_plan(cfg, ep.world);
  return ep;
}

}  // namespace

CpuBackend::CpuBackend(const std::string& dir, const ModelConfig& cfg, const BackendOptions& opt, const Logger& log)
    : cfg_(cfg), log_(log), official_(opt.numerics == Numerics::official) {
  check_params(opt, "cpu", kKnownParams);
  if (official_ && (cfg_.index_head_dim & (cfg_.index_head_dim - 1)) != 0)
    fail(Status::unsupported, "official numerics: index_head_dim {} is not a power of two (the Hadamard rotation)",
         cfg_.index_head_dim);
  if (official_ && torch_cpu_ties_requested(opt))
    fail(Status::invalid_argument, "cpu backend: indexer_ties=torch-cpu emulates the float64 fixtures' reference run; "
                                   "official numerics use the lowest-index rule");
  torch_cpu_ties_ = parse_ties(opt);
  ep_ = parse_ep(opt, cfg_);
  const int threads_opt = parse_threads(opt);
  if (opt.rollback_tokens < 0 || opt.rollback_tokens > 4096)
    fail(Status::invalid_argument, "rollback_tokens {} must be in [0, 4096]", opt.rollback_tokens);
  ckpt_ = std::make_unique<Checkpoint>(dir);
  const ValidationReport rep = validate_checkpoint(*ckpt_, cfg_);
  if (!rep.ok()) {
    std::string all;
    for (const auto& p : rep.problems) all += "\n  " + p;
    fail(Status::format, "checkpoint '{}' does not match its config ({} problems):{}", dir, rep.problems.size(), all);
  }
  for (const auto& n : rep.notes) log_.warn("{}", n);
  w_ = load_weights(*ckpt_, cfg_, kDenseBudgetBytes);
  layout_ = state_layout(cfg_, opt.rollback_tokens);
  const StateCost cost = state_cost(cfg_, opt.rollback_tokens);
  state_pool_ = std::make_unique<StatePool>(cost, state_budget(opt, cost));
  rope_sliding_.inv_freq = cfg_.rope_inv_freq(false);
  rope_compressed_.inv_freq = cfg_.rope_inv_freq(true);
  hc_ = HcShape{cfg_.hc_mult, cfg_.hidden_size, cfg_.hc_sinkhorn_iters, cfg_.hc_eps, cfg_.rms_norm_eps, official_};
  const int threads = threads_opt > 0 ? threads_opt : static_cast<int>(std::thread::hardware_concurrency());
  pool_ = std::make_unique<ThreadPool>(std::max(1, threads));
  log_.info("cpu backend ({} numerics): {} layers [{}], {} threads, weights {}, state {} B/sequence + {} B/page of "
            "{} tokens, budget {}",
            official_ ? "official" : "reference", cfg_.num_layers, cfg_.schedule_string(), pool_->size(),
            w_.head.dense.empty() ? "dequantised per row at use" : "pre-dequantised to f32", cost.fixed.total(),
            cost.page.total(), cost.page_tokens,
            state_pool_->budget() ? fmt::format("{} B", state_pool_->budget()) : std::string("unlimited"));
  if (ep_.world > 1)
    log_.info("cpu backend: expert parallelism emulated over {} ranks ({} combine; docs/expert-parallel.md)", ep_.world,
              ep_.combine == EpCombine::exact ? "exact" : "partial-sum");
}

CpuBackend::~CpuBackend() = default;

void CpuBackend::set_expert_usage(ExpertUsage* u) {
  std::lock_guard<std::mutex> lk(mu_);
  if (u && (u->layers != static_cast<int64_t>(cfg_.num_layers) + cfg_.num_mtp_layers ||
            u->experts != cfg_.n_routed_experts || u->counts.size() != static_cast<size_t>(u->layers * u->experts)))
    fail(Status::invalid_argument, "cpu backend: usage statistics of {} layers × {} experts for a model of {} × {}",
         u->layers, u->experts, cfg_.num_layers + cfg_.num_mtp_layers, cfg_.n_routed_experts);
  usage_ = u;
}

SequenceState& CpuBackend::seq_any(SeqHandle h) const {
  auto it = seqs_.find(h);
  if (it == seqs_.end()) fail(Status::invalid_argument, "unknown sequence handle {}", h);
  return *it->second;
}

SequenceState& CpuBackend::seq(SeqHandle h) const {
  SequenceState& st = seq_any(h);
  if (!st.failure.empty())
    fail(Status::backend, "sequence {} failed in an earlier step and cannot be used (release it): {}", h, st.failure);
  return st;
}

SeqHandle CpuBackend::add_sequence(SequenceState st) {
  const size_t need = state_pool_->cost().bytes_for(st.position);
  if (!state_pool_->try_reserve(need))
    fail(Status::out_of_memory, "sequence state: {} bytes needed for {} tokens, {} of the {}-byte budget free", need,
         st.position, state_pool_->free(), state_pool_->budget());
  st.reserved = need;
  auto p = std::make_unique<SequenceState>(std::move(st));
  const SeqHandle h = next_handle_++;
  seqs_[h] = std::move(p);
  return h;
}

SeqHandle CpuBackend::create_sequence(int64_t max_context) {
  if (max_context <= 0) fail(Status::invalid_argument, "create_sequence: max_context {} must be ≥ 1", max_context);
  std::lock_guard<std::mutex> lk(mu_);
  return add_sequence(SequenceState::create(layout_, max_context));
}

void CpuBackend::release_sequence(SeqHandle h) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = seqs_.find(h);
  if (it == seqs_.end()) return;
  state_pool_->release(it->second->reserved);
  seqs_.erase(it);
}

SeqHandle CpuBackend::fork_sequence(SeqHandle h) {
  std::lock_guard<std::mutex> lk(mu_);
  SequenceState copy = seq(h);
  return add_sequence(std::move(copy));
}

void CpuBackend::reset_sequence(SeqHandle h) {
  std::lock_guard<std::mutex> lk(mu_);
  SequenceState& st = seq_any(h);  // reset also revives a failed sequence
  const int64_t ctx = st.max_context;
  st.reset(layout_);
  st.max_context = ctx;
  const size_t keep = state_pool_->cost().bytes_for(0);
  state_pool_->release(st.reserved - std::min(st.reserved, keep));
  st.reserved = std::min(st.reserved, keep);
}

int64_t CpuBackend::sequence_position(SeqHandle h) const {
  std::lock_guard<std::mutex> lk(mu_);
  return seq(h).position;
}

std::vector<int32_t> CpuBackend::sequence_tokens(SeqHandle h) const {
  std::lock_guard<std::mutex> lk(mu_);
  return seq(h).tokens;
}

int64_t CpuBackend::sequence_max_context(SeqHandle h) const {
  std::lock_guard<std::mutex> lk(mu_);
  return seq_any(h).max_context;
}

void CpuBackend::truncate_sequence(SeqHandle h, int64_t position) {
  std::lock_guard<std::mutex> lk(mu_);
  SequenceState& st = seq(h);
  const int R = state_pool_->cost().rollback;
  if (position < 0 || position > st.position)
    fail(Status::invalid_argument, "truncate: position {} is outside [0, {}] (sequence {})", position, st.position, h);
  if (position != 0 && st.position - position > R)
    fail(Status::invalid_argument,
         "truncate: {} tokens back from position {} exceeds the rollback bound of {} tokens (rollback_tokens); "
         "truncate to 0 or restore a snapshot",
         st.position - position, st.position, R);
  st.truncate(layout_, cfg_.num_layers, position);
  const size_t keep = state_pool_->cost().bytes_for(position);
  if (st.reserved > keep) {
    state_pool_->release(st.reserved - keep);
    st.reserved = keep;
  }
}

SnapshotHandle CpuBackend::snapshot_sequence(SeqHandle h) {
  std::lock_guard<std::mutex> lk(mu_);
  const SequenceState& st = seq(h);
  const int page = state_pool_->cost().page_tokens;
  if (st.position % page != 0)
    fail(Status::invalid_argument, "snapshot: position {} of sequence {} is not a page boundary (a multiple of {})",
         st.position, h, page);
  const size_t need = state_pool_->cost().bytes_for(st.position);
  if (!state_pool_->try_reserve(need))
    fail(Status::out_of_memory, "snapshot: {} bytes needed, {} free", need, state_pool_->free());
  auto copy = std::make_unique<SequenceState>(st);
  copy->reserved = need;
  const SnapshotHandle s = next_handle_++;
  snapshots_[s] = std::move(copy);
  return s;
}

SeqHandle CpuBackend::restore_snapshot(SnapshotHandle s, int64_t max_context) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = snapshots_.find(s);
  if (it == snapshots_.end()) fail(Status::invalid_argument, "unknown snapshot handle {}", s);
  SequenceState st = *it->second;
  if (max_context > 0) {
    if (max_context < st.position)
      fail(Status::context_overflow, "restore: snapshot holds {} tokens, more than max_context {}", st.position,
           max_context);
    st.max_context = max_context;
  }
  return add_sequence(std::move(st));
}

void CpuBackend::release_snapshot(SnapshotHandle s) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = snapshots_.find(s);
  if (it == snapshots_.end()) return;
  state_pool_->release(it->second->reserved);
  snapshots_.erase(it);
}

StateMemory CpuBackend::memory() const {
  std::lock_guard<std::mutex> lk(mu_);
  return memory_report(*state_pool_, static_cast<int64_t>(seqs_.size()), static_cast<int64_t>(snapshots_.size()));
}

StepId CpuBackend::submit(std::span<const ForwardChunk> batch) {
  std::lock_guard<std::mutex> lk(mu_);
  if (done_.size() >= static_cast<size_t>(kMaxStepsInFlight))
    fail(Status::invalid_argument, "submit: {} steps are already in flight (wait for one first)", done_.size());
  StepResult r = run_step(batch, {});
  const StepId id = next_step_++;
  done_.emplace(id, std::move(r));
  return id;
}

StepResult CpuBackend::wait(StepId id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = done_.find(id);
  if (it == done_.end()) fail(Status::invalid_argument, "wait: unknown or already waited-for step {}", id);
  StepResult r = std::move(it->second);
  done_.erase(it);
  return r;
}

StepResult CpuBackend::forward_oracle(std::span<const ForwardChunk> batch, std::span<const OracleChunk> extras) {
  std::lock_guard<std::mutex> lk(mu_);
  if (!extras.empty() && extras.size() != batch.size())
    fail(Status::invalid_argument, "forward_oracle: {} extras for {} chunks", extras.size(), batch.size());
  return run_step(batch, extras);
}

StepResult CpuBackend::run_step(std::span<const ForwardChunk> batch, std::span<const OracleChunk> extras) {
  // Validate the whole step before running any of it, so a bad chunk changes no sequence. Token
  // ids are checked here too: the embedding / tid2eid reads index by them.
  check_distinct(batch);
  const StateCost& cost = state_pool_->cost();
  size_t new_pages = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const ForwardChunk& c = batch[i];
    const SequenceState& st = seq(c.seq);  // throws for an unknown or failed handle
    if (c.from_last_sample) {
      if (!c.tokens.empty())
        fail(Status::invalid_argument, "forward: chunk {} has both tokens and from_last_sample", i);
      if (st.last_sample < 0)
        fail(Status::invalid_argument, "forward: sequence {} has no sampled token to continue from", c.seq);
      const int32_t t = st.last_sample;
      check_chunk({&t, 1}, st.position, st.max_context, cfg_.vocab_size);
    } else {
      check_chunk(c.tokens, st.position, st.max_context, cfg_.vocab_size);
    }
    if ((c.sampler == nullptr) != (c.sampler_state == nullptr))
      fail(Status::invalid_argument, "forward: chunk {} sets only one of sampler and sampler_state", i);
    const int64_t n = c.from_last_sample ? 1 : static_cast<int64_t>(c.tokens.size());
    new_pages += static_cast<size_t>(cost.pages_for(st.position + n) - cost.pages_for(st.position));
  }
  if (new_pages && !state_pool_->try_reserve(new_pages * cost.page.total()))
    fail(Status::out_of_memory, "forward: the step starts {} pages ({} bytes); {} bytes of the state budget are free",
         new_pages, new_pages * cost.page.total(), state_pool_->free());
  StepResult res;
  res.chunks.resize(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    SequenceState& st = seq_any(batch[i].seq);
    const int64_t n = batch[i].from_last_sample ? 1 : static_cast<int64_t>(batch[i].tokens.size());
    const size_t grow = static_cast<size_t>(cost.pages_for(st.position + n) - cost.pages_for(st.position)) *
                        cost.page.total();
    run_chunk(st, batch[i], extras.empty() ? nullptr : &extras[i], res.chunks[i]);
    if (res.chunks[i].status == ChunkStatus::ok) st.reserved += grow;
    else state_pool_->release(grow);  // rolled back or failed: the pages it would have started
  }
  return res;
}

void CpuBackend::run_chunk(SequenceState& st, const ForwardChunk& c, const OracleChunk* extra, ChunkResult& out) {
  const int32_t last = st.last_sample;
  const std::span<const int32_t> tokens = c.from_last_sample ? std::span<const int32_t>(&last, 1) : c.tokens;
  const int64_t p0 = st.position, mtp0 = st.mtp_position;
  const size_t n_tokens0 = st.tokens.size();
  const int R = state_pool_->cost().rollback;
  // A chunk longer than the rollback slots may overwrite ring rows its own rollback needs: keep a
  // copy of the rings (the fixed part of the state, not the entries) while it runs.
  std::vector<LayerState> rings;
  const bool copy_rings = static_cast<int64_t>(tokens.size()) > R;
  try {
    if (copy_rings) {
      rings.resize(st.layers.size());
      for (size_t l = 0; l < st.layers.size(); ++l) {
        rings[l].window = st.layers[l].window;
        rings[l].main = st.layers[l].main;
        rings[l].index = st.layers[l].index;
      }
    }
  } catch (const std::exception& e) {  // nothing has changed yet
    out.status = ChunkStatus::rolled_back;
    out.error_status = Status::out_of_memory;
    out.error = fmt::format("sequence state copy for rollback: {}", e.what());
    return;
  }
  try {
    tie_positions_ = extra ? extra->tie_positions_out : nullptr;
    torch_cpu_row_ = extra ? extra->oracle_length / 4 : 0;
    forward_chunk(st, tokens, c, out);
    tie_positions_ = nullptr;
  } catch (const std::exception& e) {
    tie_positions_ = nullptr;
    const Error* de = dynamic_cast<const Error*>(&e);
    out.error_status = de ? de->status() : (dynamic_cast<const std::bad_alloc*>(&e) ? Status::out_of_memory
                                                                                       : Status::internal);
    out.error = e.what();
    out.sample = SampleResult{};  // Sampler::sample throws before it changes the sampler state
    try {
      if (copy_rings)
        for (size_t l = 0; l < st.layers.size(); ++l) {
          st.layers[l].window.swap(rings[l].window);
          st.layers[l].main = std::move(rings[l].main);
          st.layers[l].index = std::move(rings[l].index);
        }
      // Layers that ran appended entries and advanced nothing else: truncating to p0 shrinks them
      // (position was not yet advanced; forward_chunk advances it last).
      st.mtp_position = mtp0;
      st.tokens.resize(n_tokens0);
      st.truncate(layout_, cfg_.num_layers, p0);
      st.tokens.resize(n_tokens0);
      st.last_sample = last;
      out.status = ChunkStatus::rolled_back;
    } catch (const std::exception& e2) {
      st.failure = fmt::format("{} (and the rollback failed: {})", e.what(), e2.what());
      out.status = ChunkStatus::failed;
    }
  }
}

}  // namespace dsv4::cpu
