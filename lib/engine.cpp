// Model / Session (contract in include/dsv4/engine.hpp) implemented once over the Backend
// interface: the Session hands chunks to the backend and keeps the last logits (the backend owns
// position and tokens); Model::load parses the config, applies the experts-per-token override,
// picks the backend from the registry by name and loads the tokenizer. Nothing here knows which
// backends exist.
#include "dsv4/engine.hpp"

#include <algorithm>
#include <filesystem>

#include "dsv4/backend.hpp"
#include "dsv4/error.hpp"
#include "dsv4/tokenizer.hpp"

namespace dsv4 {
namespace {

class BackendSession final : public Session {
 public:
  BackendSession(Backend& be, int64_t max_context)
      : be_(&be), max_ctx_(max_context), h_(be.create_sequence(max_context)) {}
  BackendSession(Backend& be, const BackendSession& other)
      : be_(&be), max_ctx_(other.max_ctx_), h_(be.fork_sequence(other.h_)), logits_(other.logits_),
        rows_(other.rows_) {}
  ~BackendSession() override { be_->release_sequence(h_); }

  void append(std::span<const int32_t> tokens, LogitsMode mode) override {
    ForwardChunk c;  // the backend checks ids, context and memory before anything changes
    c.tokens = tokens;
    c.logits = mode;
    std::vector<float> out;
    c.logits_out = &out;
    run(c);
    logits_.swap(out);
    rows_ = mode == LogitsMode::none ? 0 : mode == LogitsMode::last ? 1 : static_cast<int64_t>(tokens.size());
  }
  ChunkResult step(ForwardChunk c) override {
    logits_.clear();
    rows_ = 0;
    return run(c);
  }
  std::span<const float> logits() const override { return logits_; }
  int64_t logits_rows() const override { return rows_; }
  int64_t position() const override { return be_->sequence_position(h_); }
  std::vector<int32_t> tokens() const override { return be_->sequence_tokens(h_); }
  int64_t max_context() const override { return max_ctx_; }
  void reset() override {
    be_->reset_sequence(h_);
    logits_.clear();
    rows_ = 0;
  }
  void truncate(int64_t position) override {
    be_->truncate_sequence(h_, position);
    logits_.clear();
    rows_ = 0;
  }
  std::unique_ptr<Session> fork() const override { return std::make_unique<BackendSession>(*be_, *this); }
  SeqHandle handle() const override { return h_; }

 private:
  ChunkResult run(ForwardChunk& c) {
    c.seq = h_;
    StepResult r = be_->forward({&c, 1});
    ChunkResult& cr = r.chunks.at(0);
    if (cr.status != ChunkStatus::ok)  // rolled back (session as before) or failed (unusable)
      fail(cr.error_status == Status::ok ? Status::backend : cr.error_status, "{}", cr.error);
    return std::move(cr);
  }

  Backend* be_;
  int64_t max_ctx_;
  SeqHandle h_;
  std::vector<float> logits_;
  int64_t rows_ = 0;
};

class BackendModel final : public Model {
 public:
  BackendModel(std::unique_ptr<Backend> be, std::unique_ptr<Tokenizer> tok) : be_(std::move(be)), tok_(std::move(tok)) {}
  const ModelConfig& config() const override { return be_->config(); }
  const Tokenizer* tokenizer() const override { return tok_.get(); }
  std::string backend_name() const override { return be_->name(); }
  std::unique_ptr<Session> create_session(int64_t max_context) const override {
    const int64_t limit = be_->config().max_position_embeddings;
    if (max_context < 0) fail(Status::invalid_argument, "max_context {} is negative", max_context);
    return std::make_unique<BackendSession>(*be_, max_context == 0 ? limit : max_context);
  }
  Backend& backend() const override { return *be_; }

 private:
  std::unique_ptr<Backend> be_;
  std::unique_ptr<Tokenizer> tok_;
};

}  // namespace

void check_chunk(std::span<const int32_t> tokens, int64_t position, int64_t max_context, int64_t vocab) {
  if (tokens.empty()) fail(Status::invalid_argument, "forward: no tokens");
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      fail(Status::invalid_argument, "token id {} at position {} is outside the vocabulary [0, {})", tokens[i],
           position + static_cast<int64_t>(i), vocab);
  if (position + static_cast<int64_t>(tokens.size()) > max_context)
    fail(Status::context_overflow, "{} tokens at position {} would exceed the context of {} tokens", tokens.size(),
         position, max_context);
}

void check_mtp_inputs(const ModelConfig& cfg, std::span<const float> final_streams,
                      std::span<const int32_t> next_tokens) {
  if (cfg.num_mtp_layers <= 0) fail(Status::unsupported, "this model has no MTP layer (num_nextn_predict_layers = 0)");
  const int64_t n = static_cast<int64_t>(next_tokens.size());
  const int64_t hcD = static_cast<int64_t>(cfg.hc_mult) * cfg.hidden_size;
  if (n == 0 || static_cast<int64_t>(final_streams.size()) != n * hcD)
    fail(Status::invalid_argument, "forward_mtp: {} tokens need final_streams of {} floats (got {})", n, n * hcD,
         final_streams.size());
  for (int64_t i = 0; i < n; ++i)
    if (next_tokens[i] < 0 || next_tokens[i] >= cfg.vocab_size)
      fail(Status::invalid_argument, "forward_mtp: token id {} at row {} is outside [0, {})", next_tokens[i], i,
           cfg.vocab_size);
}

void check_distinct(std::span<const ForwardChunk> batch) {
  std::vector<SeqHandle> h;
  h.reserve(batch.size());
  for (const ForwardChunk& c : batch) h.push_back(c.seq);
  std::sort(h.begin(), h.end());
  const auto dup = std::adjacent_find(h.begin(), h.end());
  if (dup != h.end()) fail(Status::invalid_argument, "forward: sequence {} appears twice in one step", *dup);
}

std::unique_ptr<Backend> make_backend(const std::string& name, const std::string& dir, const ModelConfig& cfg,
                                      const BackendOptions& opt, const Logger& log) {
  std::string names;
  for (const BackendEntry& e : registered_backends()) {
    if (name == e.name) return e.make(dir, cfg, opt, log);
    names += names.empty() ? e.name : std::string(", ") + e.name;
  }
  if (name == "cuda") fail(Status::unsupported, "backend 'cuda' is not available in this build (available: {})", names);
  fail(Status::unsupported, "unknown backend '{}' (available: {})", name, names);
}

size_t state_budget(const BackendOptions& opt, const StateCost& cost) {
  if (opt.state_budget_bytes) return opt.state_budget_bytes;
  if (opt.max_sequences > 0 && opt.max_context > 0)
    return static_cast<size_t>(opt.max_sequences) * cost.bytes_for(opt.max_context);
  return 0;
}

StateMemory memory_report(const StatePool& pool, int64_t sequences, int64_t snapshots) {
  StateMemory m;
  m.cost = pool.cost();
  m.budget = pool.budget();
  m.used = pool.used();
  m.free = pool.free();
  m.sequences = sequences;
  m.snapshots = snapshots;
  return m;
}

const std::string* find_param(const BackendOptions& opt, const std::string& key) {
  const std::string* v = nullptr;
  for (const auto& [k, val] : opt.params)
    if (k == key) v = &val;  // the last setting wins, as on a command line
  return v;
}

void check_params(const BackendOptions& opt, const std::string& backend, std::span<const char* const> known) {
  for (const auto& [k, v] : opt.params) {
    bool ok = false;
    std::string all;
    for (const char* n : known) {
      ok = ok || k == n;
      all += all.empty() ? n : std::string(", ") + n;
    }
    if (!ok)
      fail(Status::invalid_argument, "{} backend: unknown setting '{}' (known: {})", backend, k,
           all.empty() ? std::string("none") : all);
  }
}

std::unique_ptr<Model> Model::load(const std::string& dir, const LoadOptions& opt, const Logger& log) {
  namespace fs = std::filesystem;
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(cfg_path)) fail(Status::io, "model folder '{}' has no config.json", dir);
  ModelConfig cfg = ModelConfig::from_file(cfg_path);
  if (opt.experts_per_token > 0) cfg.override_experts_per_token(opt.experts_per_token);
  BackendOptions bo;
  bo.device_ids = opt.device_ids;
  bo.state_budget_bytes = opt.state_budget_bytes;
  bo.max_sequences = opt.max_sequences;
  bo.max_context = opt.max_context;
  bo.rollback_tokens = opt.rollback_tokens;
  bo.numerics = opt.numerics;
  bo.params = opt.backend_params;
  auto be = make_backend(opt.backend, dir, cfg, bo, log);
  std::unique_ptr<Tokenizer> tok;
  const fs::path tj = fs::path(dir) / "tokenizer.json";
  if (opt.load_tokenizer && fs::exists(tj)) tok = std::make_unique<Tokenizer>(Tokenizer::from_file(tj.string()));
  return std::make_unique<BackendModel>(std::move(be), std::move(tok));
}

}  // namespace dsv4
