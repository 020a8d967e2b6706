// The backend contract the engine runs on: a loaded model's weights plus every sequence's state
// (window ring, compressed entries, indexer keys, partial compression windows; spec §4.1), both in
// the backend's own memory (host RAM for "cpu", device memory for "cuda"). Model/Session
// (engine.hpp), the generation loop (generate.hpp) and the batch scheduler (scheduler.hpp) are
// written once against it; nothing backend-specific crosses this header.
//
// Steps. One step is a batch of chunks of *distinct* sequences, mixing prefill chunks (any length,
// any start: chunked prefill, spec §4.4) and single-token decodes. Per chunk the caller asks for
// logits rows (none / last / all, copied to the host) and/or "sample here": the backend samples
// the chunk's last row with the chunk's Sampler and SamplerState (RNG + penalty counts) and
// returns the id (and logprobs when asked) — no vocab-sized row crosses to the host. A decode
// chunk may take as its token "the id sampled for this sequence in the previous step"
// (from_last_sample), so a GPU backend keeps ids on the device and the host never waits for them.
//
// Asynchrony. submit() validates a step and starts it; wait() returns its result. Steps run in
// submission order; at most kMaxStepsInFlight are outstanding, so a host prepares step t+1 while
// step t runs. Everything a submitted step points at (token spans, output vectors, samplers,
// sampler states) must stay valid and untouched until its wait() returns. forward() = wait(submit()).
//
// Failure atomicity. submit() checks the whole step first (handles, duplicates, ids, context,
// state memory) and throws Error with *nothing* changed. A failure while running (device error,
// allocation failure, non-finite logits at a sample) is reported per chunk in StepResult: that
// chunk's sequence is rolled back to its position before the step (ChunkStatus::rolled_back), or,
// when the backend cannot restore it, marked failed (ChunkStatus::failed): every later use of a
// failed sequence throws Error(backend) naming the original error; release it. A sequence is never
// left silently half-advanced. Chunks that succeed are fully advanced.
//
// Memory. Sequence state is drawn from a StatePool (kv_cache.hpp) the backend sizes at load from
// BackendOptions (a byte budget, or max_sequences × max_context), accounted per storage type as the
// device stores it; memory() reports it. create/fork/restore reserve a sequence's fixed part, a
// step reserves the pages its chunks start (out_of_memory from submit(), nothing changed, when
// they do not fit); release returns them. reset keeps the fixed part and returns the pages.
//
// One owner: the backend keeps each sequence's position and tokens; Session and the scheduler ask
// it (sequence_position, sequence_tokens) instead of keeping copies.
// Thread-safety: every method may be called from any thread; a backend serialises its own work.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "dsv4/config.hpp"
#include "dsv4/engine.hpp"
#include "dsv4/error.hpp"
#include "dsv4/kv_cache.hpp"
#include "dsv4/log.hpp"
#include "dsv4/numerics.hpp"
#include "dsv4/sampler.hpp"

namespace dsv4 {

// Opaque ids inside a backend; 0 is never valid.
using SeqHandle = uint64_t;
using SnapshotHandle = uint64_t;
using StepId = uint64_t;

struct ForwardChunk {
  SeqHandle seq = 0;
  // Tokens for positions sequence_position(seq) … +n−1 (n ≥ 1). Empty with from_last_sample: one
  // token, the id sampled for `seq` by the latest earlier step that sampled it (Error when none).
  std::span<const int32_t> tokens;
  bool from_last_sample = false;
  LogitsMode logits = LogitsMode::none;
  std::vector<float>* logits_out = nullptr;  // resized to [rows, vocab] f32 (rows 0, 1 or n)
  // Sample the chunk's last row (both set, or neither): result in ChunkResult::sample, and
  // sampler_state advanced (RNG, generated count).
  Sampler* sampler = nullptr;
  SamplerState* sampler_state = nullptr;
  // Diagnostics (may be null). hidden_out: num_layers+1 blocks, block l = the HC streams entering
  // layer l ([n, hc, D] f32), block num_layers = the final normed hidden state [n, D].
  std::vector<float>* hidden_out = nullptr;
  // final_streams_out: the HC state after the last layer, [n, hc, D] f32 (the MTP layer's input).
  std::vector<float>* final_streams_out = nullptr;
};

enum class ChunkStatus { ok, rolled_back, failed };

struct ChunkResult {
  ChunkStatus status = ChunkStatus::ok;
  Status error_status = Status::ok;
  std::string error;      // why the chunk did not complete ("" when ok)
  SampleResult sample;    // when the chunk sampled (id −1 otherwise)
};

struct StepResult {
  std::vector<ChunkResult> chunks;  // one per submitted chunk, same order
  bool ok() const {
    for (const auto& c : chunks)
      if (c.status != ChunkStatus::ok) return false;
    return true;
  }
};

// A backend's state memory now.
struct StateMemory {
  StateCost cost;          // per-sequence fixed part, per-page cost, page size, rollback bound
  size_t budget = 0;       // 0 = unlimited
  size_t used = 0;         // sequences + snapshots
  size_t free = 0;         // SIZE_MAX when unlimited
  int64_t sequences = 0, snapshots = 0;
};

struct BackendOptions {
  std::vector<int> device_ids;     // CUDA devices (expert-parallel over several); empty = device 0
  // State memory: budget in bytes; 0 = max_sequences × bytes_for(max_context) when both are set,
  // else unlimited on the CPU (the CUDA backend: what is free after weights and workspace).
  size_t state_budget_bytes = 0;
  int64_t max_sequences = 0;
  int64_t max_context = 0;
  int rollback_tokens = 16;        // truncate_sequence reaches this many tokens back in O(1)
  Numerics numerics = Numerics::reference;  // dsv4/numerics.hpp; a backend may support only some
  // Backend-specific settings, validated by the backend (unknown keys are an error naming the
  // known ones). cpu: threads=N, indexer_ties=lowest|torch-cpu (see docs/architecture.md).
  std::vector<std::pair<std::string, std::string>> params;
};

class Backend {
 public:
  static constexpr int kMaxStepsInFlight = 2;
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual const ModelConfig& config() const = 0;

  // ---- sequences ----
  // Empty state at position 0 with room for `max_context` tokens (Error(out_of_memory) when the
  // fixed part does not fit the pool).
  virtual SeqHandle create_sequence(int64_t max_context) = 0;
  virtual void release_sequence(SeqHandle seq) = 0;         // unknown handles are ignored
  virtual SeqHandle fork_sequence(SeqHandle seq) = 0;       // independent copy (tokens, state, last sample)
  virtual void reset_sequence(SeqHandle seq) = 0;           // back to position 0
  virtual int64_t sequence_position(SeqHandle seq) const = 0;
  virtual std::vector<int32_t> sequence_tokens(SeqHandle seq) const = 0;
  virtual int64_t sequence_max_context(SeqHandle seq) const = 0;
  // Back to `position` (≤ the current one): O(1) for position ≥ current − rollback_tokens, and for
  // 0 (= reset); Error(invalid_argument) naming the bound otherwise (restore a snapshot instead).
  // The next chunk at `position` computes exactly what a sequence that never went further would.
  virtual void truncate_sequence(SeqHandle seq, int64_t position) = 0;
  // A copy of the sequence's state kept by the backend (memory from the pool), for prefix reuse.
  // The position must be a page boundary (a multiple of memory().cost.page_tokens), so a paged
  // backend can share whole pages. restore: a new sequence equal to the snapshot (max_context 0 =
  // the snapshotted sequence's).
  virtual SnapshotHandle snapshot_sequence(SeqHandle seq) = 0;
  virtual SeqHandle restore_snapshot(SnapshotHandle snap, int64_t max_context = 0) = 0;
  virtual void release_snapshot(SnapshotHandle snap) = 0;  // unknown handles are ignored
  virtual StateMemory memory() const = 0;

  // ---- steps ----
  virtual StepId submit(std::span<const ForwardChunk> batch) = 0;
  virtual StepResult wait(StepId step) = 0;
  StepResult forward(std::span<const ForwardChunk> batch) { return wait(submit(batch)); }

  // The MTP layer (spec §3.8) on the sequence's own MTP window: row i takes the final HC state of
  // main-model position mtp_position+i (`final_streams`, [n, hc, D]) and the token that follows it,
  // and gives logits predicting the token after that ([n, vocab] f32). Error(unsupported) when the
  // model has no MTP layer.
  virtual void forward_mtp(SeqHandle seq, std::span<const float> final_streams,
                           std::span<const int32_t> next_tokens, std::vector<float>& logits_out) = 0;
};

// The input check every backend applies to each chunk before any sequence changes: throws
// Error(invalid_argument) for an empty chunk or an id outside [0, vocab) (naming id and position),
// Error(context_overflow) when position + n exceeds max_context.
void check_chunk(std::span<const int32_t> tokens, int64_t position, int64_t max_context, int64_t vocab);
// forward_mtp's input check: Error(invalid_argument) unless the model has an MTP layer (else
// Error(unsupported)), n ≥ 1 tokens in [0, vocab) and final_streams holds n · hc · D floats.
void check_mtp_inputs(const ModelConfig& cfg, std::span<const float> final_streams,
                      std::span<const int32_t> next_tokens);
// Error(invalid_argument) when a sequence appears twice in one step (O(n log n)).
void check_distinct(std::span<const ForwardChunk> batch);

// Backends available in this build, by name: a constant table in lib/backend_registry.cpp (each
// backend adds one line there; nothing else names them).
using BackendFactory = std::unique_ptr<Backend> (*)(const std::string& dir, const ModelConfig& cfg,
                                                    const BackendOptions& opt, const Logger& log);
struct BackendEntry {
  const char* name;
  const char* description;
  BackendFactory make;
};
std::span<const BackendEntry> registered_backends();

// Opens the checkpoint in `dir` (config `cfg` already parsed and overridden) on backend `name`.
// Error(unsupported) naming the available backends for an unknown or unavailable one.
std::unique_ptr<Backend> make_backend(const std::string& name, const std::string& dir, const ModelConfig& cfg,
                                      const BackendOptions& opt, const Logger& log);

// Helpers for backends. The pool budget BackendOptions asks for (state_budget_bytes, else
// max_sequences × bytes_for(max_context), else 0 = unlimited), and memory() from a pool.
size_t state_budget(const BackendOptions& opt, const StateCost& cost);
StateMemory memory_report(const StatePool& pool, int64_t sequences, int64_t snapshots);
// Reads a backend-specific integer / string setting from opt.params.
const std::string* find_param(const BackendOptions& opt, const std::string& key);
void check_params(const BackendOptions& opt, const std::string& backend, std::span<const char* const> known);

}  // namespace dsv4
