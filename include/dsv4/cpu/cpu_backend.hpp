// The CPU backend in two numerics (BackendOptions::numerics, dsv4/numerics.hpp): "reference"
// (spec §7.3 reference-f32: exact dequantised weights, f32 storage, double accumulation, no
// activation quantisation or bf16 rounding, HF semantics except that the shared expert is not
// clamped) and "official" (the bf16 run of DeepSeek's inference code with the same rounding points
// the CUDA backend uses — its oracle). Owns the mmap'd checkpoint, the weights, a thread pool and every
// sequence's state (host memory, addressed by SeqHandle). One step runs at a time (a mutex);
// chunks of a step run one after the other, each rolled back on failure (a chunk of at most
// rollback_tokens tokens through the rollback slots of the rings, a longer one from a copy of the
// rings taken before it). submit() runs the step before returning; wait() hands its result over.
// State memory is accounted in the device layout (kv_cache.hpp), not in the f32 the CPU stores.
// Settings (BackendOptions::params): threads = N (0 = hardware concurrency, at most 1024),
// indexer_ties = lowest (default, torch CUDA and the official kernels) | torch-cpu (what the
// transformers float64 fixtures were made with; see forward_oracle).
// The forward pass itself lives in lib/cpu/forward.cpp.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "dsv4/backend.hpp"
#include "dsv4/cpu/ops.hpp"
#include "dsv4/cpu/state.hpp"
#include "dsv4/cpu/threadpool.hpp"
#include "dsv4/cpu/weights.hpp"
#include "dsv4/kv_cache.hpp"
#include "dsv4/placement.hpp"
#include "dsv4/safetensors.hpp"

namespace dsv4::cpu {

// Per-chunk extras of the torch-cpu tie emulation (forward_oracle).
struct OracleChunk {
  // The length of the sequence the reference implementation ran in one full forward: transformers
  // scores each query against all ⌊oracle_length/4⌋ entries (future ones at −∞) and torch's CPU
  // topk places ties by that row, so passing it makes every chunk schedule select exactly what the
  // oracle selected. 0 = the entries that exist so far.
  int64_t oracle_length = 0;
  // Appended with every position whose indexer top-k boundary fell inside a group of equal scores
  // (any CSA layer) — the rows where the tie rule decides the selection. May be null.
  std::vector<int64_t>* tie_positions_out = nullptr;
};

class CpuBackend final : public Backend {
 public:
  // Opens and validates the checkpoint (every problem in one Error(format)), resolves weights.
  CpuBackend(const std::string& dir, const ModelConfig& cfg, const BackendOptions& opt, const Logger& log);
  ~CpuBackend() override;

  std::string name() const override { return "cpu"; }
  const ModelConfig& config() const override { return cfg_; }
  SeqHandle create_sequence(int64_t max_context) override;
  void release_sequence(SeqHandle seq) override;
  SeqHandle fork_sequence(SeqHandle seq) override;
  void reset_sequence(SeqHandle seq) override;
  int64_t sequence_position(SeqHandle seq) const override;
  std::vector<int32_t> sequence_tokens(SeqHandle seq) const override;
  int64_t sequence_max_context(SeqHandle seq) const override;
  void truncate_sequence(SeqHandle seq, int64_t position) override;
  SnapshotHandle snapshot_sequence(SeqHandle seq) override;
  SeqHandle restore_snapshot(SnapshotHandle snap, int64_t max_context) override;
  void release_snapshot(SnapshotHandle snap) override;
  StateMemory memory() const override;
  StepId submit(std::span<const ForwardChunk> batch) override;
  StepResult wait(StepId step) override;
  void forward_mtp(SeqHandle seq, std::span<const float> final_streams, std::span<const int32_t> next_tokens,
                   std::vector<float>& logits_out) override;

  // forward() with the torch-cpu tie extras, one per chunk (`extras` empty = none).
  StepResult forward_oracle(std::span<const ForwardChunk> batch, std::span<const OracleChunk> extras);
  // Router statistics (dsv4 calibrate, dsv4/placement.hpp): while set, every forward adds its
  // (layer, chosen expert) counts and its tokens to *u (shaped by empty_usage(config)); null stops.
  // Not thread-safe against a concurrent forward: set it between steps.
  void set_expert_usage(ExpertUsage* u);

 private:
  // ---- forward.cpp: the model, top to bottom ----
  void forward_chunk(SequenceState& st, std::span<const int32_t> tokens, const ForwardChunk& c, ChunkResult& out);
  void decoder_block(const LayerWeights& L, LayerState& ls, std::vector<float>& X, const int32_t* tokens, int64_t S,
                     int64_t p0);
  // Final HC collapse + norm for `rows` token states X[rows, hc, D] → h[rows, D].
  void head_hidden(const HcWeights& hc, const std::vector<float>& norm, const float* X, int64_t rows, float* h);

  // ---- cpu_backend.cpp: bookkeeping ----
  SequenceState& seq(SeqHandle h) const;  // throws for unknown or failed sequences
  SequenceState& seq_any(SeqHandle h) const;  // unknown only
  SeqHandle add_sequence(SequenceState st);   // reserves st's bytes (out_of_memory) and files it
  StepResult run_step(std::span<const ForwardChunk> batch, std::span<const OracleChunk> extras);
  void run_chunk(SequenceState& st, const ForwardChunk& c, const OracleChunk* extra, ChunkResult& out);

  ModelConfig cfg_;
  Logger log_;
  std::unique_ptr<Checkpoint> ckpt_;
  ModelWeights w_;
  std::vector<LayerStateShape> layout_;
  RopeTable rope_sliding_, rope_compressed_;
  HcShape hc_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<StatePool> state_pool_;
  mutable std::mutex mu_;
  std::unordered_map<SeqHandle, std::unique_ptr<SequenceState>> seqs_;
  std::unordered_map<SnapshotHandle, std::unique_ptr<SequenceState>> snapshots_;
  std::map<StepId, StepResult> done_;  // results submitted but not yet waited for
  SeqHandle next_handle_ = 1;
  StepId next_step_ = 1;
  bool torch_cpu_ties_ = false;
  MoeEp ep_;  // ep_ranks / ep_combine: expert parallelism emulated on the CPU (world 1 = off)
  ExpertUsage* usage_ = nullptr;  // set_expert_usage
  bool official_ = false;  // BackendOptions::numerics == official (dsv4/numerics.hpp)
  std::vector<int64_t>* tie_positions_ = nullptr;  // the running chunk's OracleChunk::tie_positions_out
  int64_t torch_cpu_row_ = 0;                      // the running chunk's OracleChunk::oracle_length / 4
  // Failure injection for the atomicity tests, armed only through lib/cpu/fault_injection.hpp.
  friend struct FaultInjector;
  int fault_layer_ = -1;
  int fault_countdown_ = 0;
};

}  // namespace dsv4::cpu
