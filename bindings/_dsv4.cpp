// dsv4._dsv4: the native half of the Python module, a pybind11 layer over the C API (capi/dsv4.h)
// only. Handles are owned through shared holders so that a Session or Tokenizer keeps its Model
// alive; every failing status raises a dsv4.Error subclass carrying the C error text; compute runs
// with the GIL released (callbacks into Python take it back). Engine wraps the C batch engine
// (dsv4_engine_*): requests are submitted without waiting and waited for with the GIL released.
// The pure-Python half (python/dsv4/__init__.py) adds encode_messages /
// parse_message_from_completion_text, chat(), generate() and the vLLM-style LLM / SamplingParams.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <map>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "dsv4.h"

namespace py = pybind11;

namespace {

// ---- errors ----------------------------------------------------------------------------------

const char* exception_name(dsv4_status st) {
  switch (st) {
    case DSV4_ERR_INVALID_ARGUMENT: return "InvalidArgumentError";
    case DSV4_ERR_IO: return "FileError";
    case DSV4_ERR_FORMAT: return "FormatError";
    case DSV4_ERR_UNSUPPORTED: return "UnsupportedError";
    case DSV4_ERR_OUT_OF_MEMORY: return "OutOfMemoryError";
    case DSV4_ERR_CONTEXT_OVERFLOW: return "ContextOverflowError";
    case DSV4_ERR_BACKEND: return "BackendError";
    case DSV4_ERR_CANCELLED: return "CancelledError";
    case DSV4_ERR_BUSY: return "BusyError";
    default: return "Error";
  }
}

// Raises the dsv4.Error subclass for `st` with `message`; `.status` names the C status.
// The text is decoded leniently (invalid UTF-8 becomes U+FFFD) so that raw bytes in an error message
// (a file name, a bad token) never replace the dsv4 error with a UnicodeDecodeError.
[[noreturn]] void raise_status(dsv4_status st, const std::string& message) {
  py::object cls = py::module_::import("dsv4._dsv4").attr(exception_name(st));
  PyObject* text = PyUnicode_DecodeUTF8(message.data(), static_cast<Py_ssize_t>(message.size()), "replace");
  if (!text) throw py::error_already_set();
  py::object exc = cls(py::reinterpret_steal<py::object>(text));
  exc.attr("status") = dsv4_status_name(st);
  PyErr_SetObject(cls.ptr(), exc.ptr());
  throw py::error_already_set();
}

// Must run on the thread that made the call (the error text is thread-local).
void check(dsv4_status st) {
  if (st != DSV4_OK) raise_status(st, dsv4_last_error());
}

// Runs a C call without the GIL, then checks its status with the GIL held again.
template <typename F>
void nogil(F&& f) {
  dsv4_status st;
  std::string err;
  {
    py::gil_scoped_release release;
    st = f();
    if (st != DSV4_OK) err = dsv4_last_error();
  }
  if (st != DSV4_OK) raise_status(st, err);
}

// UTF-8 bytes of a str (or bytes) argument. A str that cannot be encoded (a lone surrogate) raises
// UnicodeEncodeError naming the argument instead of pybind's "incompatible function arguments".
std::string utf8_arg(py::handle obj, const char* name) {
  if (PyBytes_Check(obj.ptr())) return std::string(PyBytes_AS_STRING(obj.ptr()), PyBytes_GET_SIZE(obj.ptr()));
  if (!PyUnicode_Check(obj.ptr()))
    throw py::type_error(std::string(name) + " must be str, not " + std::string(py::str(py::type::of(obj).attr("__name__"))));
  Py_ssize_t n = 0;
  const char* p = PyUnicode_AsUTF8AndSize(obj.ptr(), &n);
  if (!p) throw py::error_already_set();  // UnicodeEncodeError: names the character and its position
  return std::string(p, static_cast<size_t>(n));
}

// ---- owners ----------------------------------------------------------------------------------

struct ModelHolder {
  dsv4_model* m = nullptr;
  ~ModelHolder() { dsv4_model_free(m); }
};

struct SessionHolder {
  std::shared_ptr<ModelHolder> model;  // the model must outlive its sessions
  dsv4_session* s = nullptr;
  std::atomic<bool> busy{false};       // a call (generate, a stream's worker, append, ...) is running
  ~SessionHolder() { dsv4_session_free(s); }
};

constexpr const char* kBusyMessage =
    "the session is busy: another call (a stream, a generate callback or another thread) is generating or "
    "running on it; finish or close it first";

// Holds a session's busy flag for the duration of one call; a second call (another thread, or a
// Python callback re-entering the session) raises RuntimeError instead of racing.
class BusyGuard {
 public:
  explicit BusyGuard(SessionHolder& h) : h_(h) {
    if (h_.busy.exchange(true)) throw std::runtime_error(kBusyMessage);
  }
  ~BusyGuard() { h_.busy = false; }
  BusyGuard(const BusyGuard&) = delete;
  BusyGuard& operator=(const BusyGuard&) = delete;

 private:
  SessionHolder& h_;
};

struct TokenizerHolder {
  std::shared_ptr<ModelHolder> model;  // set when borrowed from a model
  dsv4_tokenizer* owned = nullptr;
  const dsv4_tokenizer* tok = nullptr;
  ~TokenizerHolder() { dsv4_tokenizer_free(owned); }
};

// ---- Tokenizer -------------------------------------------------------------------------------

class Tokenizer {
 public:
  explicit Tokenizer(std::shared_ptr<TokenizerHolder> h) : h_(std::move(h)) {}
  static Tokenizer load(const std::string& path) {
    auto h = std::make_shared<TokenizerHolder>();
    nogil([&] { return dsv4_tokenizer_load(path.c_str(), &h->owned); });
    h->tok = h->owned;
    return Tokenizer(std::move(h));
  }
  std::vector<int32_t> encode(py::handle text_obj, bool add_special) const {
    const std::string text = utf8_arg(text_obj, "text");
    std::vector<int32_t> ids;
    nogil([&] {
      size_t n = 0;
      dsv4_status st = dsv4_tokenizer_encode(h_->tok, text.data(), text.size(), add_special, nullptr, 0, &n);
      if (st != DSV4_ERR_BUFFER_TOO_SMALL) return st;
      ids.resize(n);
      return dsv4_tokenizer_encode(h_->tok, text.data(), text.size(), add_special, ids.data(), ids.size(), &n);
    });
    return ids;
  }
  py::str decode(const std::vector<int32_t>& ids, bool skip_special) const {
    std::string out;
    nogil([&] {
      size_t n = 0;
      dsv4_status st = dsv4_tokenizer_decode(h_->tok, ids.data(), ids.size(), skip_special, nullptr, 0, &n);
      if (st != DSV4_ERR_BUFFER_TOO_SMALL) return st;
      out.resize(n + 1);
      st = dsv4_tokenizer_decode(h_->tok, ids.data(), ids.size(), skip_special, out.data(), out.size(), &n);
      out.resize(n);
      return st;
    });
    return py::str(out);
  }
  std::optional<int32_t> token_to_id(py::handle token_obj) const {
    const std::string token = utf8_arg(token_obj, "token");
    // The C API takes a NUL-terminated string: an embedded NUL would silently truncate the token.
    if (token.find('\0') != std::string::npos) throw py::value_error("token must not contain a NUL character");
    int32_t id = -1;
    check(dsv4_tokenizer_token_to_id(h_->tok, token.c_str(), &id));
    return id < 0 ? std::nullopt : std::optional<int32_t>(id);
  }
  dsv4_tokenizer_info info() const {
    dsv4_tokenizer_info i{};
    check(dsv4_tokenizer_get_info(h_->tok, &i));
    return i;
  }
  const dsv4_tokenizer* get() const { return h_->tok; }

 private:
  std::shared_ptr<TokenizerHolder> h_;
};

// ---- sampling parameters from keyword arguments ---------------------------------------------

dsv4_sampler_params sampler_params(float temperature, int top_k, float top_p, float min_p, float repetition_penalty,
                                   float frequency_penalty, float presence_penalty, uint64_t seed) {
  dsv4_sampler_params p = dsv4_sampler_default_params();
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.repetition_penalty = repetition_penalty;
  p.frequency_penalty = frequency_penalty;
  p.presence_penalty = presence_penalty;
  p.seed = seed;
  return p;
}

class Sampler {
 public:
  explicit Sampler(const dsv4_sampler_params& p) {
    dsv4_sampler* s = nullptr;
    check(dsv4_sampler_create(&p, &s));
    s_.reset(s);
  }
  int32_t sample(py::array_t<float, py::array::c_style | py::array::forcecast> logits,
                 const std::vector<int32_t>& history) {
    if (logits.ndim() != 1) throw py::value_error("logits must be one row (a 1-D array)");
    int32_t t = -1;
    const float* data = logits.data();
    const size_t n = static_cast<size_t>(logits.shape(0));
    nogil([&] { return dsv4_sampler_sample(s_.get(), data, n, history.data(), history.size(), &t); });
    return t;
  }
  dsv4_sampler* get() { return s_.get(); }

 private:
  std::unique_ptr<dsv4_sampler, decltype(&dsv4_sampler_free)> s_{nullptr, dsv4_sampler_free};
};

// ---- generation ------------------------------------------------------------------------------

struct GenerateOptions {
  dsv4_generate_params params = dsv4_generate_default_params();
  std::vector<std::string> stops;
  std::vector<const char*> stop_ptrs;
  std::vector<int32_t> stop_token_ids;
  void finalize() {
    stop_ptrs.clear();
    for (const std::string& s : stops) stop_ptrs.push_back(s.c_str());
    params.stop_strings = stop_ptrs.empty() ? nullptr : stop_ptrs.data();
    params.n_stop_strings = stop_ptrs.size();
    params.stop_token_ids = stop_token_ids.empty() ? nullptr : stop_token_ids.data();
    params.n_stop_token_ids = stop_token_ids.size();
  }
};

struct GenerateResult {
  std::vector<int32_t> tokens;
  std::string text;
  std::string stop_reason;
  int64_t n_prompt_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

GenerateResult make_result(const dsv4_generate_result& r, std::vector<int32_t> tokens, std::string text) {
  GenerateResult g;
  g.tokens = std::move(tokens);
  g.text = std::move(text);
  g.stop_reason = dsv4_stop_reason_name(r.stop_reason);
  g.n_prompt_tokens = r.n_prompt_tokens;
  g.prefill_seconds = r.prefill_seconds;
  g.decode_seconds = r.decode_seconds;
  return g;
}

// Generation on a worker thread feeding a queue, so that Python can iterate over pieces as they
// come while the compute runs without the GIL. Closing (or dropping) the iterator cancels.
class TokenStream {
 public:
  TokenStream(std::shared_ptr<SessionHolder> s, std::vector<int32_t> prompt, GenerateOptions opt)
      : s_(std::move(s)), prompt_(std::move(prompt)), opt_(std::move(opt)) {
    if (s_->busy.exchange(true)) throw std::runtime_error(kBusyMessage);
    owns_busy_ = true;  // cleared exactly once, by the stop() that joins the worker
    opt_.finalize();
    try {
      worker_ = std::thread([this] { run(); });
    } catch (...) {
      s_->busy = false;
      throw;
    }
  }
  ~TokenStream() { stop(); }

  // Next (token, piece); nullopt at the end (then result() is set or the error is raised).
  // Lock order: the GIL is released before mu_ is taken, and mu_ is never held while the GIL is
  // acquired (several Python threads may consume one stream).
  std::optional<std::pair<int32_t, std::string>> next() {
    std::optional<std::pair<int32_t, std::string>> item;
    {
      py::gil_scoped_release release;
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !queue_.empty() || done_; });
      if (!queue_.empty()) {
        item = std::move(queue_.front());
        queue_.pop_front();
      }
    }  // mu_ is unlocked before the GIL is taken back
    if (item) return item;
    stop();
    if (status_ != DSV4_OK) raise_status(status_, error_);
    return std::nullopt;
  }

  // Cancels and joins the worker; may be called from several threads and repeatedly. Only this
  // stream's own busy flag is released, once, after the join (a finished stream never clears the
  // flag of a later stream on the same session).
  void stop() {
    cancel_ = true;
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(join_mu_);
    if (worker_.joinable()) worker_.join();
    if (owns_busy_) {
      owns_busy_ = false;
      s_->busy = false;
    }
  }

  std::optional<GenerateResult> result() const {
    std::lock_guard<std::mutex> lock(mu_);
    return result_;
  }
  std::vector<int32_t> tokens() const {
    std::lock_guard<std::mutex> lock(mu_);
    return tokens_;
  }

 private:
  static int on_token(int32_t id, const char* piece, size_t len, void* user) {
    auto* self = static_cast<TokenStream*>(user);
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      self->queue_.emplace_back(id, std::string(piece, len));
      self->tokens_.push_back(id);
      self->text_.append(piece, len);
    }
    self->cv_.notify_one();
    return self->cancel_ ? 1 : 0;
  }

  void run() {
    dsv4_generate_result r{};
    const dsv4_status st =
        dsv4_session_generate(s_->s, prompt_.data(), prompt_.size(), &opt_.params, on_token, this, &r);
    std::lock_guard<std::mutex> lock(mu_);
    status_ = st;
    if (st != DSV4_OK) error_ = dsv4_last_error();  // read on this (the failing) thread
    else result_ = make_result(r, tokens_, text_);
    done_ = true;
    cv_.notify_all();  // every consumer waiting in next() must see the end
  }

  std::shared_ptr<SessionHolder> s_;
  std::vector<int32_t> prompt_;
  GenerateOptions opt_;
  mutable std::mutex mu_;  // guards the queue, tokens_, text_, done_, status_, error_, result_
  std::condition_variable cv_;
  std::mutex join_mu_;     // serialises stop() (join + releasing the busy flag)
  bool owns_busy_ = false;
  std::deque<std::pair<int32_t, std::string>> queue_;
  std::vector<int32_t> tokens_;
  std::string text_;
  bool done_ = false;
  std::atomic<bool> cancel_{false};
  dsv4_status status_ = DSV4_OK;
  std::string error_;
  std::optional<GenerateResult> result_;
  std::thread worker_;
};

// ---- Model / Session -------------------------------------------------------------------------

class Model;

class Session {
 public:
  Session(std::shared_ptr<ModelHolder> m, int64_t max_context) : h_(std::make_shared<SessionHolder>()) {
    h_->model = std::move(m);
    check(dsv4_session_create(h_->model->m, max_context, &h_->s));
  }
  explicit Session(std::shared_ptr<SessionHolder> h) : h_(std::move(h)) {}

  void append(const std::vector<int32_t>& tokens, const std::string& logits) {
    BusyGuard busy(*h_);
    const dsv4_logits_mode mode = logits == "none" ? DSV4_LOGITS_NONE
                                  : logits == "last" ? DSV4_LOGITS_LAST
                                  : logits == "all"  ? DSV4_LOGITS_ALL
                                                     : throw py::value_error("logits must be 'none', 'last' or 'all'");
    nogil([&] { return dsv4_session_append(h_->s, tokens.data(), tokens.size(), mode); });
  }

  void prefill(const std::vector<int32_t>& tokens, int32_t chunk, std::optional<py::function> progress) {
    BusyGuard busy(*h_);
    struct Ctx {
      py::function* fn;
      std::optional<py::error_already_set> error;
    } ctx{progress ? &*progress : nullptr, std::nullopt};
    auto cb = [](int64_t done, int64_t total, void* user) -> int {
      auto* c = static_cast<Ctx*>(user);
      py::gil_scoped_acquire gil;
      try {
        return py::bool_((*c->fn)(done, total)) ? 1 : 0;
      } catch (py::error_already_set& e) {
        c->error = std::move(e);
        return 1;
      }
    };
    dsv4_status st;
    std::string err;
    {
      py::gil_scoped_release release;
      st = dsv4_session_prefill(h_->s, tokens.data(), tokens.size(), chunk, progress ? +cb : nullptr, &ctx);
      if (st != DSV4_OK) err = dsv4_last_error();
    }
    if (ctx.error) throw std::move(*ctx.error);
    if (st != DSV4_OK) raise_status(st, err);
  }

  py::array_t<float> logits() const {
    const float* p = nullptr;
    int64_t rows = 0, vocab = 0;
    check(dsv4_session_get_logits(h_->s, &p, &rows, &vocab));
    py::array_t<float> out(std::vector<py::ssize_t>{rows, vocab});
    if (rows) std::memcpy(out.mutable_data(), p, static_cast<size_t>(rows * vocab) * sizeof(float));
    return out;
  }

  std::vector<int32_t> tokens() const {
    size_t n = 0;
    dsv4_status st = dsv4_session_get_tokens(h_->s, nullptr, 0, &n);
    if (st != DSV4_ERR_BUFFER_TOO_SMALL && st != DSV4_OK) check(st);
    std::vector<int32_t> t(n);
    if (n) check(dsv4_session_get_tokens(h_->s, t.data(), t.size(), &n));
    return t;
  }

  dsv4_session_stats stats() const {
    dsv4_session_stats st{};
    check(dsv4_session_get_stats(h_->s, &st));
    return st;
  }

  void reset() {
    BusyGuard busy(*h_);
    check(dsv4_session_reset(h_->s));
  }

  void truncate(int64_t position) {
    BusyGuard busy(*h_);
    check(dsv4_session_truncate(h_->s, position));
  }

  Session fork() const {
    BusyGuard busy(*h_);
    auto h = std::make_shared<SessionHolder>();
    h->model = h_->model;
    nogil([&] { return dsv4_session_fork(h_->s, &h->s); });
    return Session(std::move(h));
  }

  int32_t sample(Sampler& sampler) const {
    BusyGuard busy(*h_);
    int32_t t = -1;
    check(dsv4_session_sample(h_->s, sampler.get(), &t));
    return t;
  }

  GenerateResult generate(const std::vector<int32_t>& prompt, GenerateOptions opt, std::optional<py::function> callback) {
    BusyGuard busy(*h_);  // held across the callbacks: a callback re-entering the session raises
    opt.finalize();
    struct Ctx {
      py::function* fn;
      std::vector<int32_t> tokens;
      std::string text;
      std::optional<py::error_already_set> error;
    } ctx{callback ? &*callback : nullptr, {}, {}, std::nullopt};
    auto cb = [](int32_t id, const char* piece, size_t len, void* user) -> int {
      auto* c = static_cast<Ctx*>(user);
      c->tokens.push_back(id);
      c->text.append(piece, len);
      if (!c->fn) return 0;
      py::gil_scoped_acquire gil;
      try {
        // Truthy return = stop, as a non-zero return in the C API.
        return py::bool_((*c->fn)(id, py::str(piece, len))) ? 1 : 0;
      } catch (py::error_already_set& e) {
        c->error = std::move(e);
        return 1;
      }
    };
    dsv4_generate_result r{};
    dsv4_status st;
    std::string err;
    {
      py::gil_scoped_release release;
      st = dsv4_session_generate(h_->s, prompt.data(), prompt.size(), &opt.params, cb, &ctx, &r);
      if (st != DSV4_OK) err = dsv4_last_error();
    }
    if (ctx.error) throw std::move(*ctx.error);
    if (st != DSV4_OK) raise_status(st, err);
    return make_result(r, std::move(ctx.tokens), std::move(ctx.text));
  }

  std::unique_ptr<TokenStream> stream(const std::vector<int32_t>& prompt, GenerateOptions opt) {
    return std::make_unique<TokenStream>(h_, prompt, std::move(opt));
  }

  const std::shared_ptr<SessionHolder>& holder() const { return h_; }

 private:
  std::shared_ptr<SessionHolder> h_;
};

class Model {
 public:
  Model(const std::string& path, const std::string& backend, int experts_per_token, int threads,
        const std::vector<int32_t>& device_ids, bool load_tokenizer, std::optional<int> log_level,
        uint64_t state_budget_bytes, int64_t max_sequences, int64_t max_context, int rollback_tokens,
        const std::map<std::string, py::object>& backend_params, const std::string& numerics)
      : h_(std::make_shared<ModelHolder>()) {
    dsv4_model_params p = dsv4_model_default_params();
    p.backend = backend.c_str();
    p.experts_per_token = experts_per_token;
    p.n_threads = threads;
    p.device_ids = device_ids.empty() ? nullptr : device_ids.data();
    p.n_device_ids = device_ids.size();
    p.load_tokenizer = load_tokenizer;
    if (log_level) p.log_level = *log_level;
    p.state_budget_bytes = state_budget_bytes;
    p.max_sequences = max_sequences;
    p.max_context = max_context;
    p.rollback_tokens = rollback_tokens;
    if (numerics == "official") p.numerics = DSV4_NUMERICS_OFFICIAL;
    else if (numerics != "reference")
      throw py::value_error("numerics must be 'reference' or 'official', not '" + numerics + "'");
    // {"threads": 4, "indexer_ties": "lowest"} → "threads=4,indexer_ties=lowest"
    std::string settings;
    for (const auto& [k, v] : backend_params) {
      const std::string value = py::str(v);
      if (k.find_first_of(",=") != std::string::npos || value.find(',') != std::string::npos)
        throw py::value_error("backend_params keys and values must not contain ',' (or '=' in keys): " + k);
      settings += (settings.empty() ? "" : ",") + k + "=" + value;
    }
    p.backend_params = settings.empty() ? nullptr : settings.c_str();
    nogil([&] { return dsv4_model_load(path.c_str(), &p, &h_->m); });
  }
  dsv4_model_info info() const {
    dsv4_model_info i{};
    check(dsv4_model_get_info(h_->m, &i));
    return i;
  }
  std::optional<Tokenizer> tokenizer() const {
    if (!info().has_tokenizer) return std::nullopt;
    auto t = std::make_shared<TokenizerHolder>();
    t->model = h_;
    check(dsv4_model_get_tokenizer(h_->m, &t->tok));
    return Tokenizer(std::move(t));
  }
  Session session(int64_t max_context) const { return Session(h_, max_context); }
  const std::shared_ptr<ModelHolder>& holder() const { return h_; }

 private:
  std::shared_ptr<ModelHolder> h_;
};

// ---- chat format -----------------------------------------------------------------------------

std::string buffer_call(const std::function<dsv4_status(char*, size_t, size_t*)>& f) {
  std::string out;
  nogil([&] {
    size_t n = 0;
    dsv4_status st = f(nullptr, 0, &n);
    if (st != DSV4_ERR_BUFFER_TOO_SMALL) return st;
    out.resize(n + 1);
    st = f(out.data(), out.size(), &n);
    out.resize(n);
    return st;
  });
  return out;
}

class ChatStream {
 public:
  ChatStream(const std::string& thinking_mode, bool strict) {
    dsv4_chat_stream* s = nullptr;
    check(dsv4_chat_stream_create(thinking_mode.c_str(), strict, &s));
    s_.reset(s);
  }
  using Deltas = std::vector<std::tuple<std::string, int, std::string>>;
  Deltas feed(const std::string& text) {
    Deltas d;
    check(dsv4_chat_stream_feed(s_.get(), text.data(), text.size(), on_delta, &d));
    return d;
  }
  Deltas finish() {
    Deltas d;
    check(dsv4_chat_stream_finish(s_.get(), on_delta, &d));
    return d;
  }
  std::string result_json() const {
    return buffer_call([&](char* b, size_t c, size_t* n) { return dsv4_chat_stream_result(s_.get(), b, c, n); });
  }

 private:
  static void on_delta(int32_t kind, int32_t tool_index, const char* text, size_t len, void* user) {
    static const char* names[] = {"reasoning_content", "content", "tool_call_name", "tool_call_arguments"};
    static_cast<Deltas*>(user)->emplace_back(kind >= 0 && kind < 4 ? names[kind] : "unknown", tool_index,
                                             std::string(text, len));
  }
  std::unique_ptr<dsv4_chat_stream, decltype(&dsv4_chat_stream_free)> s_{nullptr, dsv4_chat_stream_free};
};

// ---- Engine (continuous batching) ------------------------------------------------------------

// A buffer-convention result that may grow between the size query and the copy (a running
// request): asks again until it fits.
template <typename T, typename F>
std::vector<T> fetch_all(F&& call) {
  std::vector<T> v;
  for (;;) {
    size_t n = 0;
    dsv4_status st = call(static_cast<T*>(nullptr), size_t{0}, &n);
    if (st == DSV4_OK) return v;  // empty
    if (st != DSV4_ERR_BUFFER_TOO_SMALL) check(st);
    v.resize(n + 1);  // + 1: room for a NUL of text results
    st = call(v.data(), v.size(), &n);
    if (st == DSV4_OK) {
      v.resize(n);
      return v;
    }
    if (st != DSV4_ERR_BUFFER_TOO_SMALL) check(st);
  }
}

py::object lenient_str(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
  if (!o) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(o);
}

struct EngineHolder {
  std::shared_ptr<ModelHolder> model;  // the model must outlive its engine
  dsv4_engine* e = nullptr;
  ~EngineHolder() { close(); }
  void close() {
    if (!e) return;
    dsv4_engine* x = e;
    e = nullptr;
    if (PyGILState_Check()) {
      py::gil_scoped_release release;  // waits for the engine thread's current step
      dsv4_engine_free(x);
    } else {
      dsv4_engine_free(x);
    }
  }
};

int preemption_code(const std::string& name) {
  if (name == "recompute") return DSV4_PREEMPT_RECOMPUTE;
  if (name == "reserve") return DSV4_PREEMPT_RESERVE;
  throw py::value_error("preemption must be 'recompute' or 'reserve', not '" + name + "'");
}

// One request's C parameters with the storage its pointers refer to.
struct RequestOptions {
  dsv4_request_params params = dsv4_request_default_params();
  std::vector<std::string> stops;
  std::vector<const char*> stop_ptrs;
  std::vector<int32_t> stop_token_ids;
  std::vector<int32_t> bias_ids;
  std::vector<float> bias_values;
  void finalize() {
    stop_ptrs.clear();
    for (const std::string& s : stops) stop_ptrs.push_back(s.c_str());
    params.stop_strings = stop_ptrs.empty() ? nullptr : stop_ptrs.data();
    params.n_stop_strings = stop_ptrs.size();
    params.stop_token_ids = stop_token_ids.empty() ? nullptr : stop_token_ids.data();
    params.n_stop_token_ids = stop_token_ids.size();
    params.logit_bias_ids = bias_ids.empty() ? nullptr : bias_ids.data();
    params.logit_bias_values = bias_values.empty() ? nullptr : bias_values.data();
    params.n_logit_bias = bias_ids.size();
  }
};

class Engine {
 public:
  Engine(const std::shared_ptr<ModelHolder>& model, int max_num_seqs, int max_num_batched_tokens,
         int64_t max_model_len, int max_waiting, int max_n, const std::string& preemption)
      : h_(std::make_shared<EngineHolder>()) {
    h_->model = model;
    dsv4_engine_params p = dsv4_engine_default_params();
    p.max_num_seqs = max_num_seqs;
    p.max_num_batched_tokens = max_num_batched_tokens;
    p.max_model_len = max_model_len;
    p.max_waiting = max_waiting;
    p.max_n = max_n;
    p.preemption = preemption_code(preemption);
    check(dsv4_engine_create(model->m, &p, &h_->e));
  }

  uint64_t submit(const std::vector<int32_t>& prompt, RequestOptions opt) {
    opt.finalize();
    uint64_t id = 0;
    check(dsv4_engine_submit(get(), prompt.data(), prompt.size(), &opt.params, nullptr, nullptr, &id));
    return id;
  }

  void cancel(uint64_t id) { check(dsv4_engine_cancel(get(), id)); }

  // Waits without the GIL in slices, so that Ctrl-C (KeyboardInterrupt) and other Python signal
  // handlers run meanwhile. timeout None = no limit. Returns whether the request finished.
  bool wait(uint64_t id, std::optional<double> timeout) {
    dsv4_engine* e = get();
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      double slice = 0.1;
      if (timeout) {
        const double left = *timeout - std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        slice = std::max(0.0, std::min(slice, left));
      }
      bool finished = false;
      nogil([&] { return dsv4_engine_wait(e, id, slice, &finished); });
      if (finished) return true;
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      if (timeout && std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() >= *timeout)
        return false;
    }
  }

  // Per sample: (index, token_ids, text, stop_reason code or -1, logprobs (list of {id: logprob}
  // per token) or None, error text).
  py::list output(uint64_t id) const {
    dsv4_engine* e = get();
    dsv4_request_info info{};
    check(dsv4_engine_get_request_info(e, id, &info));
    py::list out;
    for (int32_t i = 0; i < info.n; ++i) {
      int32_t reason = -1;
      const std::vector<int32_t> tokens = fetch_all<int32_t>(
          [&](int32_t* b, size_t c, size_t* n) { return dsv4_engine_get_output(e, id, i, b, c, n, &reason); });
      const std::vector<char> tv = fetch_all<char>(
          [&](char* b, size_t c, size_t* n) { return dsv4_engine_get_text(e, id, i, b, c, n); });
      const std::vector<char> ev = fetch_all<char>(
          [&](char* b, size_t c, size_t* n) { return dsv4_engine_get_error(e, id, i, b, c, n); });
      const std::string text(tv.begin(), tv.end()), error(ev.begin(), ev.end());
      const std::vector<dsv4_token_logprob> lp = fetch_all<dsv4_token_logprob>(
          [&](dsv4_token_logprob* b, size_t c, size_t* n) { return dsv4_engine_get_logprobs(e, id, i, b, c, n); });
      py::object logprobs = py::none();
      // 1 + k entries per token (consistent once finished; a running snapshot may be ragged: none then)
      if (!lp.empty() && !tokens.empty() && lp.size() % tokens.size() == 0) {
        const size_t per = lp.size() / tokens.size();
        py::list rows;
        for (size_t t = 0; t * per < lp.size(); ++t) {
          py::dict row;
          for (size_t j = 0; j < per; ++j) {
            const dsv4_token_logprob& x = lp[t * per + j];
            if (x.id >= 0 && !row.contains(py::int_(x.id))) row[py::int_(x.id)] = x.logprob;
          }
          rows.append(row);
        }
        logprobs = rows;
      }
      out.append(py::make_tuple(i, tokens, lenient_str(text), reason, logprobs, lenient_str(error)));
    }
    return out;
  }

  py::dict info(uint64_t id) const {
    dsv4_request_info i{};
    check(dsv4_engine_get_request_info(get(), id, &i));
    py::dict d;
    d["n_prompt_tokens"] = i.n_prompt_tokens;
    d["n"] = i.n;
    d["n_finished"] = i.n_finished;
    d["finished"] = i.finished;
    d["preemptions"] = i.preemptions;
    d["queue_seconds"] = i.queue_seconds;
    d["ttft_seconds"] = i.ttft_seconds;
    d["e2e_seconds"] = i.e2e_seconds;
    return d;
  }

  void release(uint64_t id) { check(dsv4_engine_release(get(), id)); }

  py::dict stats() const {
    dsv4_engine_stats s{};
    check(dsv4_engine_get_stats(get(), &s));
    py::dict d;
    d["running"] = s.running;
    d["waiting"] = s.waiting;
    d["finished_requests"] = s.finished_requests;
    d["cancelled_requests"] = s.cancelled_requests;
    d["failed_requests"] = s.failed_requests;
    d["prompt_tokens"] = s.prompt_tokens;
    d["generated_tokens"] = s.generated_tokens;
    d["steps"] = s.steps;
    d["preemptions"] = s.preemptions;
    d["state_used_bytes"] = s.state_used_bytes;
    d["state_budget_bytes"] = s.state_budget_bytes;
    d["last_step_seconds"] = s.last_step_seconds;
    return d;
  }

  void close() { h_->close(); }
  bool closed() const { return h_->e == nullptr; }

 private:
  dsv4_engine* get() const {
    if (!h_->e) throw std::runtime_error("the engine is closed");
    return h_->e;
  }
  std::shared_ptr<EngineHolder> h_;
};

py::dict stats_dict(const dsv4_session_stats& s) {
  py::dict d;
  d["position"] = s.position;
  d["max_context"] = s.max_context;
  d["n_prompt_tokens"] = s.n_prompt_tokens;
  d["n_generated_tokens"] = s.n_generated_tokens;
  d["prefill_seconds"] = s.prefill_seconds;
  d["decode_seconds"] = s.decode_seconds;
  d["n_generate_calls"] = s.n_generate_calls;
  return d;
}

}  // namespace

PYBIND11_MODULE(_dsv4, m) {
  m.doc() = "Native layer of the dsv4 package (libdsv4 C API); import dsv4 instead.";
  m.attr("__version__") = dsv4_version();
  m.attr("ABI_VERSION") = dsv4_abi_version();

  // Exception hierarchy: dsv4.Error (a RuntimeError) and one subclass per status, each also
  // deriving from the closest built-in so that `except ValueError` etc. keep working.
  py::object error = py::reinterpret_steal<py::object>(
      PyErr_NewExceptionWithDoc("dsv4.Error", "A libdsv4 call failed; .status names the C status.",
                                PyExc_RuntimeError, nullptr));
  m.attr("Error") = error;
  auto sub = [&](const char* name, PyObject* builtin) {
    py::tuple bases = builtin ? py::tuple(py::make_tuple(error, py::handle(builtin))) : py::tuple(py::make_tuple(error));
    std::string qual = std::string("dsv4.") + name;
    m.attr(name) = py::reinterpret_steal<py::object>(PyErr_NewException(qual.c_str(), bases.ptr(), nullptr));
  };
  sub("InvalidArgumentError", PyExc_ValueError);
  sub("FileError", PyExc_OSError);
  sub("FormatError", PyExc_ValueError);
  sub("UnsupportedError", PyExc_NotImplementedError);
  sub("OutOfMemoryError", PyExc_MemoryError);
  sub("ContextOverflowError", nullptr);
  sub("BackendError", nullptr);
  sub("CancelledError", nullptr);
  sub("BusyError", nullptr);

  py::class_<Tokenizer>(m, "Tokenizer", "Byte-level BPE tokenizer (a tokenizer.json).")
      .def(py::init(&Tokenizer::load), py::arg("path"), "Loads a tokenizer.json file.")
      .def("encode", &Tokenizer::encode, py::arg("text"), py::arg("add_special") = false)
      .def("decode", &Tokenizer::decode, py::arg("ids"), py::arg("skip_special") = false)
      .def("token_to_id", &Tokenizer::token_to_id, py::arg("token"))
      .def_property_readonly("vocab_size", [](const Tokenizer& t) { return t.info().vocab_size; })
      .def_property_readonly("bos_id", [](const Tokenizer& t) { return t.info().bos_token_id; })
      .def_property_readonly("eos_id", [](const Tokenizer& t) { return t.info().eos_token_id; })
      .def("__len__", [](const Tokenizer& t) { return t.info().vocab_size; });

  py::class_<Sampler>(m, "Sampler", "Sampling settings with their own seeded RNG.")
      .def(py::init([](float temperature, int top_k, float top_p, float min_p, float repetition_penalty,
                       float frequency_penalty, float presence_penalty, uint64_t seed) {
             return Sampler(sampler_params(temperature, top_k, top_p, min_p, repetition_penalty, frequency_penalty,
                                           presence_penalty, seed));
           }),
           py::kw_only(), py::arg("temperature") = 1.0f, py::arg("top_k") = 0, py::arg("top_p") = 1.0f,
           py::arg("min_p") = 0.0f, py::arg("repetition_penalty") = 1.0f, py::arg("frequency_penalty") = 0.0f,
           py::arg("presence_penalty") = 0.0f, py::arg("seed") = 0)
      .def("sample", &Sampler::sample, py::arg("logits"), py::arg("history") = std::vector<int32_t>{});

  py::class_<GenerateResult>(m, "GenerateResult")
      .def_readonly("tokens", &GenerateResult::tokens)
      .def_property_readonly("text", [](const GenerateResult& r) { return py::str(r.text); })
      .def_readonly("stop_reason", &GenerateResult::stop_reason)
      .def_readonly("n_prompt_tokens", &GenerateResult::n_prompt_tokens)
      .def_readonly("prefill_seconds", &GenerateResult::prefill_seconds)
      .def_readonly("decode_seconds", &GenerateResult::decode_seconds)
      .def("__repr__", [](const GenerateResult& r) {
        return "GenerateResult(" + std::to_string(r.tokens.size()) + " tokens, stop_reason='" + r.stop_reason + "')";
      });

  py::class_<TokenStream>(m, "TokenStream", "Iterator over (token, text) pieces of a running generation.")
      .def("__iter__", [](TokenStream& s) -> TokenStream& { return s; })
      .def("__next__",
           [](TokenStream& s) {
             auto item = s.next();
             if (!item) throw py::stop_iteration();
             return py::make_tuple(item->first, py::str(item->second));
           })
      .def("close", &TokenStream::stop, "Cancels the generation (tokens so far stay in the session).")
      .def("__enter__", [](TokenStream& s) -> TokenStream& { return s; })
      .def("__exit__", [](TokenStream& s, py::args) { s.stop(); })
      .def_property_readonly("result", [](const TokenStream& s) { return s.result(); })
      .def_property_readonly("tokens", &TokenStream::tokens);

  auto gen_opts = [](int max_new_tokens, float temperature, int top_k, float top_p, float min_p, float rep,
                     float freq, float pres, uint64_t seed, std::vector<std::string> stop, bool stop_on_eos,
                     int prefill_chunk, std::vector<int32_t> stop_token_ids) {
    GenerateOptions o;
    o.params.max_new_tokens = max_new_tokens;
    o.params.sampler = sampler_params(temperature, top_k, top_p, min_p, rep, freq, pres, seed);
    o.params.stop_on_eos = stop_on_eos;
    o.params.prefill_chunk = prefill_chunk;
    o.stops = std::move(stop);
    o.stop_token_ids = std::move(stop_token_ids);
    return o;
  };

  py::class_<Session>(m, "Session", "One token timeline (KV state) on a Model; one thread at a time.")
      .def(py::init([](const Model& model, int64_t max_context) { return Session(model.holder(), max_context); }),
           py::arg("model"), py::arg("max_context") = 0)
      .def("append", &Session::append, py::arg("tokens"), py::arg("logits") = "last")
      .def("prefill", &Session::prefill, py::arg("tokens"), py::arg("chunk") = 0, py::arg("progress") = py::none())
      .def("logits", &Session::logits, "Logits of the last step: numpy array [rows, vocab] (a copy).")
      .def_property_readonly("tokens", &Session::tokens)
      .def_property_readonly("position", [](const Session& s) { return s.stats().position; })
      .def_property_readonly("max_context", [](const Session& s) { return s.stats().max_context; })
      .def_property_readonly("stats", [](const Session& s) { return stats_dict(s.stats()); })
      .def("reset", &Session::reset)
      .def("truncate", &Session::truncate, py::arg("position"),
           "Back to an earlier position (up to the model's rollback_tokens back, or 0).")
      .def("fork", &Session::fork)
      .def("sample", &Session::sample, py::arg("sampler"))
      .def(
          "generate",
          [gen_opts](Session& s, const std::vector<int32_t>& prompt, int max_new_tokens, float temperature, int top_k,
                     float top_p, float min_p, float rep, float freq, float pres, uint64_t seed,
                     std::vector<std::string> stop, bool stop_on_eos, int prefill_chunk,
                     std::vector<int32_t> stop_token_ids, std::optional<py::function> callback) {
            return s.generate(prompt,
                              gen_opts(max_new_tokens, temperature, top_k, top_p, min_p, rep, freq, pres, seed,
                                       std::move(stop), stop_on_eos, prefill_chunk, std::move(stop_token_ids)),
                              std::move(callback));
          },
          py::arg("prompt"), py::kw_only(), py::arg("max_new_tokens") = 256, py::arg("temperature") = 1.0f,
          py::arg("top_k") = 0, py::arg("top_p") = 1.0f, py::arg("min_p") = 0.0f,
          py::arg("repetition_penalty") = 1.0f, py::arg("frequency_penalty") = 0.0f,
          py::arg("presence_penalty") = 0.0f, py::arg("seed") = 0, py::arg("stop") = std::vector<std::string>{},
          py::arg("stop_on_eos") = true, py::arg("prefill_chunk") = 0,
          py::arg("stop_token_ids") = std::vector<int32_t>{}, py::arg("callback") = py::none())
      .def(
          "stream",
          [gen_opts](Session& s, const std::vector<int32_t>& prompt, int max_new_tokens, float temperature, int top_k,
                     float top_p, float min_p, float rep, float freq, float pres, uint64_t seed,
                     std::vector<std::string> stop, bool stop_on_eos, int prefill_chunk,
                     std::vector<int32_t> stop_token_ids) {
            return s.stream(prompt, gen_opts(max_new_tokens, temperature, top_k, top_p, min_p, rep, freq, pres, seed,
                                             std::move(stop), stop_on_eos, prefill_chunk, std::move(stop_token_ids)));
          },
          py::arg("prompt"), py::kw_only(), py::arg("max_new_tokens") = 256, py::arg("temperature") = 1.0f,
          py::arg("top_k") = 0, py::arg("top_p") = 1.0f, py::arg("min_p") = 0.0f,
          py::arg("repetition_penalty") = 1.0f, py::arg("frequency_penalty") = 0.0f,
          py::arg("presence_penalty") = 0.0f, py::arg("seed") = 0, py::arg("stop") = std::vector<std::string>{},
          py::arg("stop_on_eos") = true, py::arg("prefill_chunk") = 0,
          py::arg("stop_token_ids") = std::vector<int32_t>{});

  py::class_<Model>(m, "Model", "A loaded DeepSeek-V4 checkpoint folder.")
      .def(py::init<const std::string&, const std::string&, int, int, const std::vector<int32_t>&, bool,
                    std::optional<int>, uint64_t, int64_t, int64_t, int, const std::map<std::string, py::object>&,
                    const std::string&>(),
           py::arg("path"), py::kw_only(), py::arg("backend") = "cpu", py::arg("experts_per_token") = 0,
           py::arg("threads") = 0, py::arg("device_ids") = std::vector<int32_t>{}, py::arg("load_tokenizer") = true,
           py::arg("log_level") = py::none(), py::arg("state_budget_bytes") = 0, py::arg("max_sequences") = 0,
           py::arg("max_context") = 0, py::arg("rollback_tokens") = 16,
           py::arg("backend_params") = std::map<std::string, py::object>{}, py::arg("numerics") = "reference")
      .def_property_readonly("tokenizer", &Model::tokenizer)
      .def("session", &Model::session, py::arg("max_context") = 0)
      .def_property_readonly("info", [](const Model& mo) {
        const dsv4_model_info i = mo.info();
        py::dict d;
        d["vocab_size"] = i.vocab_size;
        d["hidden_size"] = i.hidden_size;
        d["n_layers"] = i.n_layers;
        d["n_heads"] = i.n_heads;
        d["n_routed_experts"] = i.n_routed_experts;
        d["experts_per_token"] = i.experts_per_token;
        d["config_experts_per_token"] = i.config_experts_per_token;
        d["bos_token_id"] = i.bos_token_id;
        d["eos_token_id"] = i.eos_token_id;
        d["max_position_embeddings"] = i.max_position_embeddings;
        d["has_tokenizer"] = i.has_tokenizer;
        d["backend"] = std::string(i.backend);
        return d;
      })
      .def_property_readonly("vocab_size", [](const Model& mo) { return mo.info().vocab_size; })
      .def_property_readonly("eos_id", [](const Model& mo) { return mo.info().eos_token_id; });

  py::class_<Engine>(m, "Engine",
                     "Continuous-batching engine over a Model (the C dsv4_engine): submit requests from any "
                     "thread, wait for them without the GIL. dsv4.LLM is the friendly front end.")
      .def(py::init([](const Model& model, int max_num_seqs, int max_num_batched_tokens, int64_t max_model_len,
                       int max_waiting, int max_n, const std::string& preemption) {
             return Engine(model.holder(), max_num_seqs, max_num_batched_tokens, max_model_len, max_waiting, max_n,
                           preemption);
           }),
           py::arg("model"), py::kw_only(), py::arg("max_num_seqs") = 256, py::arg("max_num_batched_tokens") = 2048,
           py::arg("max_model_len") = 0, py::arg("max_waiting") = 0, py::arg("max_n") = 16,
           py::arg("preemption") = "recompute")
      .def(
          "submit",
          [](Engine& e, const std::vector<int32_t>& prompt, int max_tokens, float temperature, int top_k, float top_p,
             float min_p, float rep, float freq, float pres, uint64_t seed, int n, int logprobs, bool ignore_eos,
             std::vector<std::string> stop, std::vector<int32_t> stop_token_ids,
             const std::map<int32_t, float>& logit_bias) {
            RequestOptions o;
            o.params.sampler = sampler_params(temperature, top_k, top_p, min_p, rep, freq, pres, seed);
            o.params.max_tokens = max_tokens;
            o.params.n = n;
            o.params.logprobs = logprobs;
            o.params.ignore_eos = ignore_eos;
            o.stops = std::move(stop);
            o.stop_token_ids = std::move(stop_token_ids);
            for (const auto& [id, v] : logit_bias) {
              o.bias_ids.push_back(id);
              o.bias_values.push_back(v);
            }
            return e.submit(prompt, std::move(o));
          },
          py::arg("prompt"), py::kw_only(), py::arg("max_tokens") = 16, py::arg("temperature") = 1.0f,
          py::arg("top_k") = 0, py::arg("top_p") = 1.0f, py::arg("min_p") = 0.0f,
          py::arg("repetition_penalty") = 1.0f, py::arg("frequency_penalty") = 0.0f,
          py::arg("presence_penalty") = 0.0f, py::arg("seed") = 0, py::arg("n") = 1, py::arg("logprobs") = -1,
          py::arg("ignore_eos") = false, py::arg("stop") = std::vector<std::string>{},
          py::arg("stop_token_ids") = std::vector<int32_t>{}, py::arg("logit_bias") = std::map<int32_t, float>{},
          "Queues a request; returns its id at once.")
      .def("cancel", &Engine::cancel, py::arg("request_id"))
      .def("wait", &Engine::wait, py::arg("request_id"), py::arg("timeout") = py::none(),
           "Blocks (without the GIL) until the request finished or `timeout` seconds passed; returns whether "
           "it finished.")
      .def("output", &Engine::output, py::arg("request_id"),
           "Per sample: (index, token_ids, text, stop_reason code or -1, logprobs or None, error).")
      .def("info", &Engine::info, py::arg("request_id"))
      .def("release", &Engine::release, py::arg("request_id"))
      .def("stats", &Engine::stats)
      .def("close", &Engine::close, "Stops the engine (unfinished requests end cancelled).")
      .def_property_readonly("closed", &Engine::closed);

  m.def("stop_reason_name", [](int32_t r) { return std::string(dsv4_stop_reason_name(r)); }, py::arg("code"));
  m.def("finish_reason_name", [](int32_t r) { return std::string(dsv4_finish_reason_name(r)); }, py::arg("code"));

  py::class_<ChatStream>(m, "ChatStream", "Streaming completion parser (deltas of reasoning / content / tools).")
      .def(py::init<const std::string&, bool>(), py::arg("thinking_mode"), py::arg("strict") = false)
      .def("feed", &ChatStream::feed, py::arg("text"))
      .def("finish", &ChatStream::finish)
      .def("result_json", &ChatStream::result_json);

  m.def(
      "render_chat",
      [](const std::string& messages_json, const std::string& thinking_mode, std::optional<std::string> context_json,
         bool drop_thinking, bool add_default_bos_token, std::optional<std::string> reasoning_effort,
         std::optional<std::string> revision) {
        dsv4_chat_params p = dsv4_chat_default_params();
        p.thinking_mode = thinking_mode.c_str();
        p.drop_thinking = drop_thinking;
        p.add_default_bos_token = add_default_bos_token;
        p.context_json = context_json ? context_json->c_str() : nullptr;
        p.reasoning_effort = reasoning_effort ? reasoning_effort->c_str() : nullptr;
        p.revision = revision ? revision->c_str() : nullptr;
        return py::str(buffer_call(
            [&](char* b, size_t c, size_t* n) { return dsv4_chat_render(messages_json.c_str(), &p, b, c, n); }));
      },
      py::arg("messages_json"), py::arg("thinking_mode"), py::arg("context_json") = py::none(),
      py::arg("drop_thinking") = true, py::arg("add_default_bos_token") = true,
      py::arg("reasoning_effort") = py::none(), py::arg("revision") = py::none());
  m.def(
      "parse_chat",
      [](const std::string& text, const std::string& thinking_mode, bool strict) {
        return py::str(buffer_call([&](char* b, size_t c, size_t* n) {
          return dsv4_chat_parse(text.data(), text.size(), thinking_mode.c_str(), strict, b, c, n);
        }));
      },
      py::arg("text"), py::arg("thinking_mode"), py::arg("strict") = true);
}
