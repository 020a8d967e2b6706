// The backend interface the engine runs on: a loaded model's weights plus per-sequence state (KV
// window, compressed entries, indexer keys, partial compression windows; spec §4.1), both living in
// the backend's own memory (host RAM for "cpu", device memory for "cuda"). Sequences are addressed
// by opaque handles; nothing backend-specific crosses this header, so Model/Session (engine.hpp),
// the sampler and a future batch scheduler are written once against it.
// Thread-safety: every method may be called from any thread; a backend serialises its own work.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dsv4/config.hpp"
#include "dsv4/engine.hpp"
#include "dsv4/log.hpp"

namespace dsv4 {

// Opaque id of one sequence's state inside a backend; 0 is never a valid handle.
using SeqHandle = uint64_t;

// One sequence's step: `tokens` go to positions sequence_position(seq) … +n−1 (any n ≥ 1, any
// start: chunked prefill, spec §4.4). Every backend checks the whole batch with check_chunk before
// running any of it: token ids in [0, vocab), position + n ≤ the sequence's max context.
struct ForwardChunk {
  SeqHandle seq = 0;
  std::span<const int32_t> tokens;
  LogitsMode logits = LogitsMode::last;
  std::vector<float>* logits_out = nullptr;  // resized to [rows, vocab] f32 (rows 0, 1 or n)
  // Diagnostics (may be null). hidden_out: num_layers+1 blocks, block l = the HC streams entering
  // layer l ([n, hc, D] f32), block num_layers = the final normed hidden state [n, D].
  std::vector<float>* hidden_out = nullptr;
  // final_streams_out: the HC state after the last layer, [n, hc, D] f32 (the MTP layer's input).
  std::vector<float>* final_streams_out = nullptr;
  // tie_positions_out: appended with every position whose indexer top-k boundary fell inside a
  // group of equal scores (any CSA layer) — the rows where the tie rule decides the selection.
  std::vector<int64_t>* tie_positions_out = nullptr;
  // oracle_length (torch-cpu indexer ties only, else ignored): the length of the sequence the
  // reference implementation ran in one full forward. transformers scores each query against all
  // ⌊oracle_length/4⌋ entries (future ones at −∞) and torch's CPU topk places ties by that row, so
  // passing it makes every chunk schedule select exactly what the oracle selected. 0 = the entries
  // that exist so far (= a full recomputation at the current length, as greedy references do).
  int64_t oracle_length = 0;
};

struct BackendOptions {
  int threads = 0;  // worker threads; 0 = hardware concurrency
  std::vector<int> device_ids;
  bool indexer_ties_torch_cpu = false;  // see LoadOptions
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual const ModelConfig& config() const = 0;

  // Sequences. create: empty state at position 0 with room for `max_context` tokens.
  virtual SeqHandle create_sequence(int64_t max_context) = 0;
  virtual void release_sequence(SeqHandle seq) = 0;         // unknown handles are ignored
  virtual SeqHandle fork_sequence(SeqHandle seq) = 0;       // independent deep copy
  virtual void reset_sequence(SeqHandle seq) = 0;           // back to position 0
  virtual int64_t sequence_position(SeqHandle seq) const = 0;
  virtual size_t sequence_bytes(SeqHandle seq) const = 0;   // memory the state holds now

  // Runs each chunk of the batch (distinct sequences) through the whole model. Throws
  // Error(invalid_argument) for an unknown handle or an empty chunk.
  virtual void forward(std::span<const ForwardChunk> batch) = 0;

  // The MTP layer (spec §3.8) on the sequence's own MTP window: row i takes the final HC state of
  // main-model position mtp_position+i (`final_streams`, [n, hc, D]) and the token that follows it,
  // and gives logits predicting the token after that ([n, vocab] f32). Error(unsupported) when the
  // model has no MTP layer.
  virtual void forward_mtp(SeqHandle seq, std::span<const float> final_streams,
                           std::span<const int32_t> next_tokens, std::vector<float>& logits_out) = 0;
};

// The input check every Backend::forward applies to each chunk before any sequence changes: throws
// Error(invalid_argument) for an empty chunk or an id outside [0, vocab) (naming id and position),
// Error(context_overflow) when position + n exceeds max_context.
void check_chunk(std::span<const int32_t> tokens, int64_t position, int64_t max_context, int64_t vocab);

// Opens the checkpoint in `dir` (config `cfg` already parsed and overridden) on backend `name`
// ("cpu"; "cuda" when built in). Error(unsupported) for an unknown or unavailable backend.
std::unique_ptr<Backend> make_backend(const std::string& name, const std::string& dir, const ModelConfig& cfg,
                                      const BackendOptions& opt, const Logger& log);

}  // namespace dsv4
