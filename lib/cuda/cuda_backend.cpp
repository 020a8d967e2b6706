// CudaBackend construction, sequence bookkeeping and step execution (contract in
// include/dsv4/backend.hpp; the same rules and messages as lib/cpu/cpu_backend.cpp). Sequences and
// snapshots live in handle → state maps guarded by the backend mutex; each holds its bytes in the
// StatePool. The forward pass proper is in forward.cpp.
#include "cuda_backend.hpp"

#include <algorithm>
#include <charconv>

#include "dsv4/checkpoint_schema.hpp"
#include "dsv4/cuda/cuda_backend.hpp"
#include "dsv4/error.hpp"
#include "ep_backend.hpp"
#include "ep_transport.hpp"
#include "synthetic.hpp"

namespace dsv4::cuda {
namespace {
// Share of the device memory left after the weights that sequence state may take by default (the
// rest: activation workspace, cuBLAS / allocator slack).
constexpr double kStateShareOfFree = 0.7;

// What one sequence's state costs as this stage stores it (f32 everywhere, the CPU layout on the
// device): the fixed part (window rings + compressor rows) and one page of entries and indexer keys
// per started 128 tokens — all in StateBytes::f32, so the pool's budget and memory() are the bytes
// really allocated (entry capacity grows by doubling: up to 2× that for the entries of a sequence
// that is still growing). The compact layout of kv_cache.hpp replaces this with the layout itself.
StateCost f32_state_cost(const std::vector<LayerStateShape>& layout, int rollback) {
  StateCost c;
  c.rollback = rollback;
  for (const LayerStateShape& s : layout) {
    c.fixed.f32 += static_cast<size_t>(s.window_ring) * static_cast<size_t>(s.kv_dim) * 4;
    for (const CompressorShape* cs : {&s.main, &s.index}) {
      if (!cs->ratio) continue;
      c.fixed.f32 += 2 * static_cast<size_t>(cs->ring) * static_cast<size_t>(cs->width) * 4;
      c.page.f32 += static_cast<size_t>((c.page_tokens + cs->ratio - 1) / cs->ratio) * static_cast<size_t>(cs->dim) * 4;
    }
  }
  return c;
}
}  // namespace

CudaBackend::CudaBackend(const std::string& dir, const ModelConfig& cfg, const BackendOptions& opt, const Logger& log,
                         const EpRank& ep)
    : CudaBackend(std::make_unique<Checkpoint>(dir), {}, cfg, opt, log, ep) {}

CudaBackend::CudaBackend(std::unique_ptr<Checkpoint> ckpt, std::vector<std::vector<uint8_t>> keep,
                         const ModelConfig& cfg, const BackendOptions& opt, const Logger& log, const EpRank& ep)
    : cfg_(cfg), log_(log), ep_(ep), official_(opt.numerics == Numerics::official), keep_(std::move(keep)),
      ckpt_(std::move(ckpt)) {
  const std::string& dir = ckpt_->dir();
  // Kill switches of the fast paths (each on by default): gemm — prefill linears and experts as
  // tensor-core GEMMs (lib/cuda/gemm.hpp: `on` = cuBLASLt, `promoted` = gemm_bf16_promoted, whose
  // f32-accurate accumulation is still being validated, `off` = the CUDA-core kernels); attn_mma —
  // attention on the tensor cores (sparse_attention_mma); hc_fork — the HC Sinkhorn on a second
  // stream beside the block it feeds (its post / comb are read only at hc_post); fuse — the query
  // norm + RoPE and the KV norm + RoPE + FP8 simulation as one launch each; moe_fork — at decode,
  // the shared expert on a second stream beside the router and the routed experts.
  // linear_mma — decode FP8 linears (≤ 8 rows) on the tensor cores (linear_small_mma): off by default,
  // because although each launch is faster alone (bench_linear_small), the 43-layer decode was 1.6 ms
  // per token slower with it on (docs/performance.md, 2026-12-02 third stage) — not yet understood.
  static constexpr const char* kKnown[] = {"gemm", "attn_mma", "hc_fork", "fuse", "moe_fork", "linear_mma"};
  check_params(opt, "cuda", kKnown);
  bool use_gemm = true, promoted = false;
  for (const auto& [k, v] : opt.params) {
    if (k == "gemm") {
      if (v != "on" && v != "off" && v != "promoted")
        fail(Status::invalid_argument, "cuda backend: gemm={} (expected on, promoted or off)", v);
      use_gemm = v != "off";
      promoted = v == "promoted";
    } else if (v != "on" && v != "off") {
      fail(Status::invalid_argument, "cuda backend: {}={} (expected on or off)", k, v);
    }
    if (k == "attn_mma") no_mma_ = v == "off";
    if (k == "hc_fork") hc_fork_ = v == "on";
    if (k == "moe_fork") moe_fork_ = v == "on";
    if (k == "linear_mma") no_small_mma_ = v != "on";
    if (k == "fuse") fuse_ = v == "on";
  }
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    (void)cudaGetLastError();
    fail(Status::unsupported, "cuda backend: no CUDA device is visible (use --backend cpu)");
  }
  if (opt.device_ids.size() > 1)  // make_cuda_backend hands several devices to the expert-parallel backend
    fail(Status::internal, "cuda backend: one rank takes one device ({} given)", opt.device_ids.size());
  device_ = opt.device_ids.empty() ? 0 : opt.device_ids[0];
  if (device_ < 0 || device_ >= n)
    fail(Status::invalid_argument, "cuda backend: device {} does not exist ({} visible)", device_, n);
  DSV4_CUDA_CHECK(cudaSetDevice(device_));
  if (official_ && (cfg_.index_head_dim & (cfg_.index_head_dim - 1)) != 0)
    fail(Status::unsupported, "official numerics: index_head_dim {} is not a power of two (the Hadamard rotation)",
         cfg_.index_head_dim);
  if (opt.rollback_tokens < 0 || opt.rollback_tokens > 4096)
    fail(Status::invalid_argument, "rollback_tokens {} must be in [0, 4096]", opt.rollback_tokens);
  const ValidationReport rep = validate_checkpoint(*ckpt_, cfg_);
  if (!rep.ok()) {
    std::string all;
    for (const auto& p : rep.problems) all += "\n  " + p;
    fail(Status::format, "checkpoint '{}' does not match its config ({} problems):{}", dir, rep.problems.size(), all);
  }
  for (const auto& note : rep.notes) log_.warn("{}", note);
  host_ = cpu::load_weights(*ckpt_, cfg_, /*dense_budget_bytes=*/0);  // views of the mmap only
  stream_ = std::make_unique<Stream>();
  side_ = std::make_unique<Stream>();
  fork_ev_ = std::make_unique<Event>();
  join_ev_ = std::make_unique<Event>();
  side2_ = std::make_unique<Stream>();
  fork2_ev_ = std::make_unique<Event>();
  join2_ev_ = std::make_unique<Event>();
  if (use_gemm && official_) gemm_ = std::make_unique<Gemm>(promoted);
  w_ = upload_weights(host_, cfg_, log_, ExpertRange{ep_.first, ep_.count});
  layout_ = state_layout(cfg_, opt.rollback_tokens);
  const StateCost cost = f32_state_cost(layout_, opt.rollback_tokens);
  size_t budget = state_budget(opt, cost);
  if (budget == 0) budget = static_cast<size_t>(static_cast<double>(device_free_bytes()) * kStateShareOfFree);
  state_pool_ = std::make_unique<StatePool>(cost, budget);
  cudaDeviceProp prop{};
  DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  const std::string rank =
      ep_.transport ? fmt::format(", expert-parallel rank {}/{} with experts [{}, {})", ep_.rank, ep_.world, ep_.first,
                                  ep_.first + (ep_.count < 0 ? cfg_.n_routed_experts : ep_.count))
                    : "";
  log_.info("cuda backend ({} numerics) on device {} ({}){}: {} layers [{}], {}; state budget {} B",
            official_ ? "official" : "reference", device_, prop.name, rank, cfg_.num_layers, cfg_.schedule_string(),
            memory_line(), state_pool_->budget());
}

CudaBackend::~CudaBackend() {
  (void)cudaSetDevice(device_);  // members free their device memory on their own device
  if (stream_) cudaStreamSynchronize(stream_->get());
  if (side_) cudaStreamSynchronize(side_->get());
  if (side2_) cudaStreamSynchronize(side2_->get());
}

std::string CudaBackend::memory_line() const {
  const WeightBytes& b = w_.bytes;
  auto mb = [](size_t v) { return static_cast<double>(v) / (1024.0 * 1024.0); };
  const size_t state = state_pool_ ? state_pool_->used() : 0;  // f32 bytes (f32_state_cost)
  return fmt::format("device memory: weights {:.1f} MiB (fp8 {:.1f}, fp4 {:.1f}, bf16 {:.1f}, f32 {:.1f}, scales {:.1f}, "
                     "other {:.1f}), sequence state {:.1f} MiB, workspace {:.1f} MiB, "
                     "{:.1f} MiB free",
                     mb(b.total()), mb(b.fp8), mb(b.fp4), mb(b.bf16), mb(b.f32), mb(b.scales), mb(b.other), mb(state),
                     mb(ws_.bytes()), mb(device_free_bytes()));
}

DevSequence& CudaBackend::seq_any(SeqHandle h) const {
  auto it = seqs_.find(h);
  if (it == seqs_.end()) fail(Status::invalid_argument, "unknown sequence handle {}", h);
  return *it->second;
}

DevSequence& CudaBackend::seq(SeqHandle h) const {
  DevSequence& st = seq_any(h);
  if (!st.failure.empty())
    fail(Status::backend, "sequence {} failed in an earlier step and cannot be used (release it): {}", h, st.failure);
  return st;
}

SeqHandle CudaBackend::add_sequence(DevSequence st) {
  const size_t need = state_pool_->cost().bytes_for(st.position);
  if (!state_pool_->try_reserve(need))
    fail(Status::out_of_memory, "sequence state: {} bytes needed for {} tokens, {} of the {}-byte budget free", need,
         st.position, state_pool_->free(), state_pool_->budget());
  st.reserved = need;
  auto p = std::make_unique<DevSequence>(std::move(st));
  const SeqHandle h = next_handle_++;
  seqs_[h] = std::move(p);
  return h;
}

SeqHandle CudaBackend::create_sequence(int64_t max_context) {
  if (max_context <= 0) fail(Status::invalid_argument, "create_sequence: max_context {} must be ≥ 1", max_context);
  std::lock_guard<std::mutex> lk(mu_);
  DSV4_CUDA_CHECK(cudaSetDevice(device_));
  return add_sequence(DevSequence::create(layout_, max_context, stream()));
}

void CudaBackend::release_sequence(SeqHandle h) {
  std::lock_guard<std::mutex> lk(mu_);
  (void)cudaSetDevice(device_);  // the device memory is freed on its own device
  auto it = seqs_.find(h);
  if (it == seqs_.end()) return;
  state_pool_->release(it->second->reserved);
  seqs_.erase(it);
}

SeqHandle CudaBackend::fork_sequence(SeqHandle h) {
  std::lock_guard<std::mutex> lk(mu_);
  DSV4_CUDA_CHECK(cudaSetDevice(device_));
  return add_sequence(seq(h).clone(layout_, cfg_.num_layers, stream()));
}

void CudaBackend::reset_sequence(SeqHandle h) {
  std::lock_guard<std::mutex> lk(mu_);
  (void)cudaSetDevice(device_);
  DevSequence& st = seq_any(h);  // reset also revives a failed sequence
  st.reset();
  const size_t keep = state_pool_->cost().bytes_for(0);
  state_pool_->release(st.reserved - std::min(st.reserved, keep));
  st.reserved = std::min(st.reserved, keep);
}

int64_t CudaBackend::sequence_position(SeqHandle h) const {
  std::lock_guard<std::mutex> lk(mu_);
  return seq(h).position;
}

std::vector<int32_t> CudaBackend::sequence_tokens(SeqHandle h) const {
  std::lock_guard<std::mutex> lk(mu_);
  return seq(h).tokens;
}

int64_t CudaBackend::sequence_max_context(SeqHandle h) const {
  std::lock_guard<std::mutex> lk(mu_);
  return seq_any(h).max_context;
}

void CudaBackend::truncate_sequence(SeqHandle h, int64_t position) {
  std::lock_guard<std::mutex> lk(mu_);
  DevSequence& st = seq(h);
  const int R = state_pool_->cost().rollback;
  if (position < 0 || position > st.position)
    fail(Status::invalid_argument, "truncate: position {} is outside [0, {}] (sequence {})", position, st.position, h);
  if (position != 0 && st.position - position > R)
    fail(Status::invalid_argument,
         "truncate: {} tokens back from position {} exceeds the rollback bound of {} tokens (rollback_tokens); "
         "truncate to 0 or restore a snapshot",
         st.position - position, st.position, R);
  st.truncate(cfg_.num_layers, position);
  const size_t keep = state_pool_->cost().bytes_for(position);
  if (st.reserved > keep) {
    state_pool_->release(st.reserved - keep);
    st.reserved = keep;
  }
}

SnapshotHandle CudaBackend::snapshot_sequence(SeqHandle h) {
  std::lock_guard<std::mutex> lk(mu_);
  DSV4_CUDA_CHECK(cudaSetDevice(device_));
  const DevSequence& st = seq(h);
  const int page = state_pool_->cost().page_tokens;
  if (st.position % page != 0)
    fail(Status::invalid_argument, "snapshot: position {} of sequence {} is not a page boundary (a multiple of {})",
         st.position, h, page);
  const size_t need = state_pool_->cost().bytes_for(st.position);
  if (!state_pool_->try_reserve(need))
    fail(Status::out_of_memory, "snapshot: {} bytes needed, {} free", need, state_pool_->free());
  std::unique_ptr<DevSequence> copy;
  try {
    copy = std::make_unique<DevSequence>(st.clone(layout_, cfg_.num_layers, stream()));
  } catch (...) {
    state_pool_->release(need);
    throw;
  }
  copy->reserved = need;
  const SnapshotHandle s = next_handle_++;
  snapshots_[s] = std::move(copy);
  return s;
}

SeqHandle CudaBackend::restore_snapshot(SnapshotHandle s, int64_t max_context) {
  std::lock_guard<std::mutex> lk(mu_);
  DSV4_CUDA_CHECK(cudaSetDevice(device_));
  auto it = snapshots_.find(s);
  if (it == snapshots_.end()) fail(Status::invalid_argument, "unknown snapshot handle {}", s);
  DevSequence st = it->second->clone(layout_, cfg_.num_layers, stream());
  if (max_context > 0) {
    if (max_context < st.position)
      fail(Status::context_overflow, "restore: snapshot holds {} tokens, more than max_context {}", st.position,
           max_context);
    st.max_context = max_context;
  }
  return add_sequence(std::move(st));
}

void CudaBackend::release_snapshot(SnapshotHandle s) {
  std::lock_guard<std::mutex> lk(mu_);
  (void)cudaSetDevice(device_);
  auto it = snapshots_.find(s);
  if (it == snapshots_.end()) return;
  state_pool_->release(it->second->reserved);
  snapshots_.erase(it);
}

StateMemory CudaBackend::memory() const {
  std::lock_guard<std::mutex> lk(mu_);
  return memory_report(*state_pool_, static_cast<int64_t>(seqs_.size()), static_cast<int64_t>(snapshots_.size()));
}

StepId CudaBackend::submit(std::span<const ForwardChunk> batch) {
  std::lock_guard<std::mutex> lk(mu_);
  if (done_.size() >= static_cast<size_t>(kMaxStepsInFlight))
    fail(Status::invalid_argument, "submit: {} steps are already in flight (wait for one first)", done_.size());
  DSV4_CUDA_CHECK(cudaSetDevice(device_));
  StepResult r = run_step(batch);
  const StepId id = next_step_++;
  done_.emplace(id, std::move(r));
  return id;
}

StepResult CudaBackend::wait(StepId id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = done_.find(id);
  if (it == done_.end()) fail(Status::invalid_argument, "wait: unknown or already waited-for step {}", id);
  StepResult r = std::move(it->second);
  done_.erase(it);
  return r;
}

StepResult CudaBackend::run_step(std::span<const ForwardChunk> batch) {
  // Validate the whole step before running any of it, so a bad chunk changes no sequence.
  check_distinct(batch);
  const StateCost& cost = state_pool_->cost();
  size_t new_pages = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const ForwardChunk& c = batch[i];
    const DevSequence& st = seq(c.seq);
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
    DevSequence& st = seq_any(batch[i].seq);
    const int64_t n = batch[i].from_last_sample ? 1 : static_cast<int64_t>(batch[i].tokens.size());
    const size_t grow = static_cast<size_t>(cost.pages_for(st.position + n) - cost.pages_for(st.position)) *
                        cost.page.total();
    run_chunk(st, batch[i], res.chunks[i]);
    if (res.chunks[i].status == ChunkStatus::ok) st.reserved += grow;
    else state_pool_->release(grow);
  }
  return res;
}

void CudaBackend::run_chunk(DevSequence& st, const ForwardChunk& c, ChunkResult& out) {
  const int32_t last = st.last_sample;
  const std::span<const int32_t> tokens = c.from_last_sample ? std::span<const int32_t>(&last, 1) : c.tokens;
  const int64_t p0 = st.position;
  const size_t n_tokens0 = st.tokens.size();
  const int R = state_pool_->cost().rollback;
  // A chunk longer than the rollback slots may overwrite ring rows its own rollback needs.
  RingBackup rings;
  const bool copy_rings = static_cast<int64_t>(tokens.size()) > R;
  try {
    if (copy_rings) rings.save(st, stream());
  } catch (const std::exception& e) {  // nothing has changed yet
    // Expert parallelism: the other ranks would wait for this one at the first exchange.
    if (ep_.transport) ep_.transport->abort(e.what());
    const Error* de = dynamic_cast<const Error*>(&e);
    out.status = ChunkStatus::rolled_back;
    out.error_status = de ? de->status() : Status::out_of_memory;
    out.error = fmt::format("sequence state copy for rollback: {}", e.what());
    return;
  }
  try {
    forward_chunk(st, tokens, c, out);
  } catch (const std::exception& e) {
    const Error* de = dynamic_cast<const Error*>(&e);
    out.error_status = de ? de->status() : (dynamic_cast<const std::bad_alloc*>(&e) ? Status::out_of_memory
                                                                                       : Status::internal);
    out.error = e.what();
    out.sample = SampleResult{};
    // Expert parallelism: release the other ranks (and this rank's own collective in flight) before
    // waiting for the stream.
    if (ep_.transport) ep_.transport->abort(e.what());
    try {
      // A sticky device error (illegal address) cannot be recovered in this process: mark failed.
      const cudaError_t sticky = cudaStreamSynchronize(stream());
      if (sticky != cudaSuccess) fail(Status::backend, "the device is in error: {}", cudaGetErrorString(sticky));
      if (copy_rings) rings.restore(st, stream());
      st.tokens.resize(n_tokens0);
      st.position = p0;
      st.last_sample = last;
      out.status = ChunkStatus::rolled_back;
    } catch (const std::exception& e2) {
      st.failure = fmt::format("{} (and the rollback failed: {})", e.what(), e2.what());
      out.status = ChunkStatus::failed;
    }
  }
}

std::unique_ptr<Backend> make_cuda_backend(const std::string& dir, const ModelConfig& cfg, const BackendOptions& opt,
                                           const Logger& log) {
  if (const std::optional<EpSettings> ep = ep_settings(opt)) return make_ep_backend(dir, cfg, opt, log, *ep);
  return std::make_unique<CudaBackend>(dir, cfg, opt, log);
}

std::unique_ptr<Backend> make_cuda_backend_synthetic(const ModelConfig& cfg, const BackendOptions& opt,
                                                     const Logger& log, uint64_t seed) {
  SyntheticCheckpoint s = make_synthetic_checkpoint(cfg, seed);
  return std::make_unique<CudaBackend>(std::move(s.ckpt), std::move(s.bytes), cfg, opt, log);
}

}  // namespace dsv4::cuda
