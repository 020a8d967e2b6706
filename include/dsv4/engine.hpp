// The engine's embedding contract: a Model (loaded weights on one backend) and Sessions (one token
// timeline each, owning its KV / compressor state in the backend's memory).
//
// Ownership and lifetime: Model::load returns a unique_ptr; Sessions are created by the Model and
// must not outlive it. A Session's logits span stays valid until the next call on that Session.
// Thread-safety: a Model is immutable after load and may be shared by threads; each Session is
// used by one thread at a time (different Sessions may run concurrently).
// Errors: every function throws dsv4::Error with a Status (the C API maps it to dsv4_status):
// invalid tokens (id ∉ [0, vocab)) → invalid_argument, context exceeded → context_overflow.
// Positions are absolute: a Session's first token is position 0; append() continues from
// position() with any chunk size (chunked prefill, spec §4.4) and gives the same logits as one
// full prefill.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "dsv4/config.hpp"
#include "dsv4/log.hpp"
#include "dsv4/numerics.hpp"

namespace dsv4 {

class Tokenizer;  // include/dsv4/tokenizer.hpp
class Backend;    // include/dsv4/backend.hpp
struct ForwardChunk;
struct ChunkResult;
using SeqHandle = uint64_t;

struct LoadOptions {
  std::string backend = "cpu";   // a name from registered_backends(): "cpu" (reference, f32), "cuda", "null"
  int experts_per_token = 0;     // 0 = the config's; K' < K applies the 4-Expert transformation
  std::vector<int> device_ids;   // CUDA devices (expert-parallel over several); empty = device 0
  bool load_tokenizer = true;    // read <dir>/tokenizer.json when present
  // Sequence-state memory (BackendOptions in backend.hpp): a byte budget, or max_sequences ×
  // max_context; 0 = unlimited on the CPU.
  size_t state_budget_bytes = 0;
  int64_t max_sequences = 0;
  int64_t max_context = 0;
  int rollback_tokens = 16;
  // reference (f32 on exact weights, the float64 fixtures' semantics) or official (DeepSeek's bf16
  // run with FP8/FP4 activation quantisation and the KV / indexer simulations): dsv4/numerics.hpp.
  Numerics numerics = Numerics::reference;
  // Backend-specific settings, "key" → "value" (cpu: threads, indexer_ties = lowest | torch-cpu;
  // docs/architecture.md lists them). Unknown keys are an error.
  std::vector<std::pair<std::string, std::string>> backend_params;
};

enum class LogitsMode { none, last, all };

class Session {
 public:
  virtual ~Session() = default;
  // Runs `tokens` (≥ 1) through the model at positions position() … position()+n−1, chunked
  // internally as the backend likes. Logits: none, the last row, or every row ([n, vocab] f32).
  // On error the session is left as before the call.
  virtual void append(std::span<const int32_t> tokens, LogitsMode mode = LogitsMode::last) = 0;
  // Logits of the last append: rows × vocab, row-major; empty when the mode was none.
  virtual std::span<const float> logits() const = 0;
  virtual int64_t logits_rows() const = 0;
  virtual int64_t position() const = 0;                 // tokens processed so far (the backend's count)
  virtual std::vector<int32_t> tokens() const = 0;      // every token appended so far (the backend's copy)
  virtual int64_t max_context() const = 0;
  virtual void reset() = 0;                              // back to position 0
  // Back to an earlier position (Backend::truncate_sequence: up to rollback_tokens back, or 0);
  // drops the logits.
  virtual void truncate(int64_t position) = 0;
  virtual std::unique_ptr<Session> fork() const = 0;     // an independent copy of the state
  // Runs one chunk on this session's sequence (chunk.seq is set here) through the backend — the
  // path generate() takes to sample inside the backend. Drops the session's logits. Throws
  // Error when the chunk did not complete (the session is then as before, or failed: reset it).
  virtual ChunkResult step(ForwardChunk chunk) = 0;
  // The backend sequence this session drives (for diagnostics, MTP and batch scheduling through
  // Model::backend()); valid while the session lives.
  virtual SeqHandle handle() const = 0;
};

class Model {
 public:
  virtual ~Model() = default;
  // Loads config.json + safetensors shards from `dir`, validates them (all problems reported in one
  // Error(format)), dequantises/relays weights for the backend, and loads the tokenizer.
  static std::unique_ptr<Model> load(const std::string& dir, const LoadOptions& opt, const Logger& log);
  virtual const ModelConfig& config() const = 0;
  virtual const Tokenizer* tokenizer() const = 0;  // nullptr when the model folder has none
  virtual std::string backend_name() const = 0;
  // max_context 0 = the config's max_position_embeddings.
  virtual std::unique_ptr<Session> create_session(int64_t max_context = 0) const = 0;
  // The backend the model runs on (batched forward, MTP, hidden-state capture); lives as long as
  // the Model.
  virtual Backend& backend() const = 0;
};

}  // namespace dsv4
