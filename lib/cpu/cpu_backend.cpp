// CpuBackend construction and sequence bookkeeping (contract in include/dsv4/cpu/cpu_backend.hpp).
// Sequences live in a handle → state map guarded by the backend mutex; the forward pass proper is
// in forward.cpp.
#include "dsv4/cpu/cpu_backend.hpp"

#include <thread>

#include "dsv4/checkpoint_schema.hpp"
#include "dsv4/error.hpp"

namespace dsv4::cpu {
namespace {
// Linear weights are pre-dequantised to f32 when they all fit in this much memory (tiny and test
// models); larger checkpoints (Flash) are dequantised row by row from the mmap at use.
constexpr size_t kDenseBudgetBytes = size_t{2} << 30;
}  // namespace

CpuBackend::CpuBackend(const std::string& dir, const ModelConfig& cfg, const BackendOptions& opt, const Logger& log)
    : cfg_(cfg), log_(log), torch_cpu_ties_(opt.indexer_ties_torch_cpu) {
  ckpt_ = std::make_unique<Checkpoint>(dir);
  const ValidationReport rep = validate_checkpoint(*ckpt_, cfg_);
  if (!rep.ok()) {
    std::string all;
    for (const auto& p : rep.problems) all += "\n  " + p;
    fail(Status::format, "checkpoint '{}' does not match its config ({} problems):{}", dir, rep.problems.size(), all);
  }
  for (const auto& n : rep.notes) log_.warn("{}", n);
  w_ = load_weights(*ckpt_, cfg_, kDenseBudgetBytes);
  layout_ = state_layout(cfg_);
  rope_sliding_.inv_freq = cfg_.rope_inv_freq(false);
  rope_compressed_.inv_freq = cfg_.rope_inv_freq(true);
  hc_ = HcShape{cfg_.hc_mult, cfg_.hidden_size, cfg_.hc_sinkhorn_iters, cfg_.hc_eps, cfg_.rms_norm_eps};
  int threads = opt.threads > 0 ? opt.threads : static_cast<int>(std::thread::hardware_concurrency());
  pool_ = std::make_unique<ThreadPool>(std::max(1, threads));
  log_.info("cpu backend: {} layers [{}], {} threads, weights {}", cfg_.num_layers, cfg_.schedule_string(),
            pool_->size(), w_.head.dense.empty() ? "dequantised per row at use" : "pre-dequantised to f32");
}

CpuBackend::~CpuBackend() = default;

SequenceState& CpuBackend::seq(SeqHandle h) const {
  auto it = seqs_.find(h);
  if (it == seqs_.end()) fail(Status::invalid_argument, "unknown sequence handle {}", h);
  return *it->second;
}

SeqHandle CpuBackend::create_sequence(int64_t max_context) {
  std::lock_guard<std::mutex> lk(mu_);
  const SeqHandle h = next_handle_++;
  seqs_[h] = std::make_unique<SequenceState>(SequenceState::create(layout_, max_context));
  return h;
}

void CpuBackend::release_sequence(SeqHandle h) {
  std::lock_guard<std::mutex> lk(mu_);
  seqs_.erase(h);
}

SeqHandle CpuBackend::fork_sequence(SeqHandle h) {
  std::lock_guard<std::mutex> lk(mu_);
  auto copy = std::make_unique<SequenceState>(seq(h));
  const SeqHandle n = next_handle_++;
  seqs_[n] = std::move(copy);
  return n;
}

void CpuBackend::reset_sequence(SeqHandle h) {
  std::lock_guard<std::mutex> lk(mu_);
  seq(h).reset(layout_);
}

int64_t CpuBackend::sequence_position(SeqHandle h) const {
  std::lock_guard<std::mutex> lk(mu_);
  return seq(h).position;
}

size_t CpuBackend::sequence_bytes(SeqHandle h) const {
  std::lock_guard<std::mutex> lk(mu_);
  return seq(h).bytes();
}

void CpuBackend::forward(std::span<const ForwardChunk> batch) {
  std::lock_guard<std::mutex> lk(mu_);
  // Validate the whole batch before running any of it, so a bad chunk changes no sequence. Token
  // ids are checked here too: Model::backend() is public and the embedding / tid2eid reads index
  // by them.
  for (size_t i = 0; i < batch.size(); ++i) {
    const ForwardChunk& c = batch[i];
    const SequenceState& st = seq(c.seq);  // throws for an unknown handle
    for (size_t j = 0; j < i; ++j)
      if (batch[j].seq == c.seq) fail(Status::invalid_argument, "forward: sequence {} appears twice in one batch", c.seq);
    check_chunk(c.tokens, st.position, st.max_context, cfg_.vocab_size);
  }
  for (const ForwardChunk& c : batch) forward_chunk(seq(c.seq), c);
}

}  // namespace dsv4::cpu
