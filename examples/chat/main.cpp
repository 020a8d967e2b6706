// dsv4-chat: an interactive chat over the stable C API (capi/dsv4.h) — a host exactly like any
// application embedding libdsv4. Streams tokens as they come, shows reasoning dimmed (terminal) or
// prefixed with "| " (pipe), keeps the conversation as OpenAI-style messages re-rendered each turn
// (reusing the session's KV prefix when the new prompt extends it), and stops an answer on Ctrl-C.
// Modes: interactive (stdin is a terminal), one turn (--prompt), or a conversation piped on stdin.
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dsv4.hpp"

namespace {

using Json = nlohmann::ordered_json;
using dsv4c::check;

// Set by the SIGINT handler, read and cleared by the main thread. A signal handler can only talk to
// the program through static storage, so this lock-free atomic is the one piece of process-wide
// mutable state: Ctrl-C must stop the current answer (the generate callback polls it) rather than
// kill the program.
std::atomic<bool> g_interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_sigint(int) { g_interrupted.store(true); }

void install_sigint_handler() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a Ctrl-C at the prompt interrupts read() so the line is dropped
  sigaction(SIGINT, &sa, nullptr);
}

const char* kUsage = R"(usage: dsv4-chat MODEL_DIR [options]
  -p, --prompt TEXT        run one turn, print the answer and exit
  --system TEXT            system prompt
  --think / --no-think     thinking mode (reasoning before the answer); default off
  --effort high|max        reasoning effort (thinking mode)
  --max-new-tokens N       answer length limit (default 512)
  --temperature F          default 1.0 (0 = greedy)
  --top-k N  --top-p F  --min-p F  --repeat-penalty F  --frequency-penalty F  --presence-penalty F
  --seed N                 sampling seed (default 0)
  --ctx N                  session context length (default 8192)
  --threads N              CPU threads (default: all)
  --backend cpu|cuda       (default cpu)
  --experts-per-token K    load-time expert override (4-Expert transformation)
  --device ID[,ID...]      CUDA devices
  --numerics reference|official  arithmetic (default reference; official = DeepSeek's bf16 run)
  --no-color               never use terminal colours
  --stats                  print usage statistics after each answer
Interactive commands: /think on|off, /system TEXT, /reset, /stats, /help, /quit (Ctrl-D).
Ctrl-C stops the current answer. With stdin piped, each line is a user turn; a JSON array of
messages (or {"messages": [...]}) is answered once.
)";

struct Options {
  std::string model;
  std::optional<std::string> prompt;
  std::string system;
  bool think = false;
  std::string effort;
  int max_new_tokens = 512;
  dsv4_sampler_params sampler = dsv4_sampler_default_params();
  int64_t ctx = 8192;
  int threads = 0;
  std::string backend = "cpu";
  int experts_per_token = 0;
  std::vector<int32_t> devices;
  int32_t numerics = DSV4_NUMERICS_REFERENCE;
  bool color = true;
  bool stats = false;
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "dsv4-chat: %s\n%s", msg.c_str(), kUsage);
  std::exit(2);
}

double to_double(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end) usage_error(flag + " expects a number, got '" + v + "'");
  return d;
}

long long to_int(const std::string& flag, const std::string& v, long long lo = std::numeric_limits<long long>::min(),
                 long long hi = std::numeric_limits<long long>::max()) {
  char* end = nullptr;
  errno = 0;
  const long long i = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end) usage_error(flag + " expects an integer, got '" + v + "'");
  if (errno == ERANGE || i < lo || i > hi)
    usage_error(flag + " " + v + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return i;
}

// An int option: out-of-range values are an error, never silently truncated.
int to_int32(const std::string& flag, const std::string& v, int lo = std::numeric_limits<int>::min()) {
  return static_cast<int>(to_int(flag, v, lo, std::numeric_limits<int>::max()));
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string value;
    const bool has_inline = a.rfind("--", 0) == 0 && a.find('=') != std::string::npos;
    if (has_inline) {
      value = a.substr(a.find('=') + 1);
      a = a.substr(0, a.find('='));
    }
    auto next = [&]() -> std::string {
      if (has_inline) return value;
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (a == "-m" || a == "--model") o.model = next();
    else if (a == "-p" || a == "--prompt") o.prompt = next();
    else if (a == "--system") o.system = next();
    else if (a == "--think") o.think = true;
    else if (a == "--no-think") o.think = false;
    else if (a == "--effort") o.effort = next();
    else if (a == "--max-new-tokens") o.max_new_tokens = to_int32(a, next(), 0);
    else if (a == "--temperature" || a == "--temp") o.sampler.temperature = static_cast<float>(to_double(a, next()));
    else if (a == "--top-k") o.sampler.top_k = to_int32(a, next());
    else if (a == "--top-p") o.sampler.top_p = static_cast<float>(to_double(a, next()));
    else if (a == "--min-p") o.sampler.min_p = static_cast<float>(to_double(a, next()));
    else if (a == "--repeat-penalty") o.sampler.repetition_penalty = static_cast<float>(to_double(a, next()));
    else if (a == "--frequency-penalty") o.sampler.frequency_penalty = static_cast<float>(to_double(a, next()));
    else if (a == "--presence-penalty") o.sampler.presence_penalty = static_cast<float>(to_double(a, next()));
    else if (a == "--seed") o.sampler.seed = static_cast<uint64_t>(to_int(a, next(), 0));
    else if (a == "--ctx") o.ctx = to_int(a, next());
    else if (a == "--threads") o.threads = to_int32(a, next(), 0);
    else if (a == "--backend") o.backend = next();
    else if (a == "--experts-per-token") o.experts_per_token = to_int32(a, next(), 0);
    else if (a == "--device") {
      std::stringstream ss(next());
      for (std::string id; std::getline(ss, id, ',');) o.devices.push_back(to_int32(a, id, 0));
    } else if (a == "--numerics") {
      const std::string v = next();
      if (v == "official") o.numerics = DSV4_NUMERICS_OFFICIAL;
      else if (v != "reference") usage_error("--numerics must be reference or official, not " + v);
    } else if (a == "--no-color") o.color = false;
    else if (a == "--stats") o.stats = true;
    else if (a.rfind("-", 0) == 0) usage_error("unknown option " + a);
    else if (o.model.empty()) o.model = a;
    else usage_error("unexpected argument " + a);
  }
  if (o.model.empty()) usage_error("no model folder given");
  return o;
}

// Reads one line from fd 0 with read(2), so that a Ctrl-C (EINTR) can be told apart from input.
// Returns nullopt at end of input; sets `interrupted` when a signal cut the line short.
std::optional<std::string> read_line(std::string& pending, bool& interrupted) {
  interrupted = false;
  for (;;) {
    const size_t nl = pending.find('\n');
    if (nl != std::string::npos) {
      std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      return line;
    }
    char buf[4096];
    const ssize_t n = ::read(0, buf, sizeof buf);
    if (n < 0 && errno == EINTR) {
      if (g_interrupted.exchange(false)) {
        interrupted = true;
        pending.clear();
        return std::string();
      }
      continue;
    }
    if (n <= 0) {
      if (pending.empty()) return std::nullopt;
      std::string line = std::move(pending);
      pending.clear();
      return line;
    }
    pending.append(buf, static_cast<size_t>(n));
  }
}

// Prints deltas of one answer: reasoning dimmed (colour) or with "| " at each line start (plain).
class AnswerPrinter {
 public:
  explicit AnswerPrinter(bool color) : color_(color) {}
  void reasoning(std::string_view text) {
    if (!in_reasoning_) {
      in_reasoning_ = true;
      if (color_) std::fputs("\x1b[2m", stdout);
    }
    for (char c : text) {
      if (!color_ && at_line_start_) std::fputs("| ", stdout);
      std::fputc(c, stdout);
      at_line_start_ = c == '\n';
    }
    std::fflush(stdout);
  }
  void content(std::string_view text) {
    end_reasoning();
    std::fwrite(text.data(), 1, text.size(), stdout);
    if (!text.empty()) at_line_start_ = text.back() == '\n';
    std::fflush(stdout);
  }
  void tool_call(std::string_view text) { content(text); }
  void finish(const char* note) {
    end_reasoning();
    if (note) std::printf("%s%s", at_line_start_ ? "" : " ", note);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }

 private:
  void end_reasoning() {
    if (!in_reasoning_) return;
    in_reasoning_ = false;
    if (color_) std::fputs("\x1b[0m", stdout);
    if (!at_line_start_) std::fputc('\n', stdout);
    if (!color_) std::fputs("\n", stdout);  // a blank line between the "| " block and the answer
    at_line_start_ = true;
  }
  bool color_;
  bool in_reasoning_ = false;
  bool at_line_start_ = true;
};

struct TurnStats {
  int64_t prompt_tokens = 0, generated = 0;
  double prefill_s = 0, decode_s = 0;
};

class Chat {
 public:
  Chat(const Options& o, dsv4_model* model) : opt_(o), model_(model), think_(o.think), system_(o.system) {
    check(dsv4_model_get_tokenizer(model_, &tok_));
    dsv4_session* s = nullptr;
    check(dsv4_session_create(model_, o.ctx, &s));
    session_.reset(s);
  }

  // One user turn: renders the conversation, generates and streams the answer, records it.
  // Returns false when the turn failed (the error was printed; the conversation is unchanged).
  bool turn(const std::string& user_text) {
    Json messages = conversation();
    messages.push_back({{"role", "user"}, {"content", user_text}});
    return answer(messages, [&](Json&& reply) {
      history_.push_back({{"role", "user"}, {"content", user_text}});
      history_.push_back(std::move(reply));
    });
  }

  // Answers a whole conversation given as JSON messages (piped input); the system prompt option is
  // not added when the messages hold one.
  bool answer_messages(const Json& messages) {
    Json all = Json::array();
    bool has_system = false;
    for (const Json& m : messages) has_system = has_system || m.value("role", "") == "system";
    if (!has_system && !system_.empty()) all.push_back({{"role", "system"}, {"content", system_}});
    for (const Json& m : messages) all.push_back(m);
    return answer(all, [](Json&&) {});
  }

  bool command(const std::string& line) {  // returns false to quit
    std::istringstream in(line);
    std::string cmd, arg;
    in >> cmd;
    std::getline(in >> std::ws, arg);
    if (cmd == "/quit" || cmd == "/exit") return false;
    if (cmd == "/think") {
      if (arg == "on" || arg == "off") {
        think_ = arg == "on";
        std::printf("thinking mode %s\n", think_ ? "on" : "off");
      } else {
        std::printf("usage: /think on|off (now %s)\n", think_ ? "on" : "off");
      }
    } else if (cmd == "/system") {
      system_ = arg;
      std::printf(system_.empty() ? "system prompt cleared\n" : "system prompt set\n");
    } else if (cmd == "/reset") {
      history_ = Json::array();
      check(dsv4_session_reset(session_.get()));
      std::printf("conversation cleared\n");
    } else if (cmd == "/stats") {
      print_stats();
    } else if (cmd == "/help") {
      std::printf("/think on|off  /system TEXT  /reset  /stats  /quit — Ctrl-C stops an answer\n");
    } else {
      std::printf("unknown command %s (try /help)\n", cmd.c_str());
    }
    std::fflush(stdout);
    return true;
  }

  void print_stats() const {
    dsv4_session_stats st{};
    check(dsv4_session_get_stats(session_.get(), &st));
    auto rate = [](double n, double s) { return s > 0 ? n / s : 0.0; };
    std::printf("last turn: %lld prompt tokens (%.1f tok/s), %lld generated (%.1f tok/s)\n",
                static_cast<long long>(last_.prompt_tokens), rate(static_cast<double>(last_.prompt_tokens), last_.prefill_s),
                static_cast<long long>(last_.generated), rate(static_cast<double>(last_.generated), last_.decode_s));
    std::printf("session: %lld prompt tokens, %lld generated, %lld turns, context %lld / %lld\n",
                static_cast<long long>(st.n_prompt_tokens), static_cast<long long>(st.n_generated_tokens),
                static_cast<long long>(st.n_generate_calls), static_cast<long long>(st.position),
                static_cast<long long>(st.max_context));
    std::printf("speed: prefill %.1f tok/s, decode %.1f tok/s\n",
                rate(static_cast<double>(st.n_prompt_tokens), st.prefill_seconds),
                rate(static_cast<double>(st.n_generated_tokens), st.decode_seconds));
    std::fflush(stdout);
  }

 private:
  Json conversation() const {
    Json m = Json::array();
    if (!system_.empty()) m.push_back({{"role", "system"}, {"content", system_}});
    for (const Json& h : history_) m.push_back(h);
    return m;
  }

  template <typename OnReply>
  bool answer(const Json& messages, OnReply&& on_reply) {
    try {
      const char* mode = think_ ? "thinking" : "chat";
      const std::vector<int32_t> prompt = render(messages, mode);
      std::vector<int32_t> fresh = reuse_prefix(prompt);
      std::optional<Json> reply = generate(fresh, mode);
      if (!reply) return false;  // Ctrl-C before the answer started (printed "[stopped]")
      on_reply(std::move(*reply));
      if (opt_.stats) print_stats();
      return true;
    } catch (const dsv4c::Error& e) {
      std::fprintf(stderr, "error: %s: %s\n", dsv4_status_name(e.status()), e.what());
      if (e.status() == DSV4_ERR_CONTEXT_OVERFLOW) std::fprintf(stderr, "(the context is full: /reset starts over)\n");
      // The KV state may hold a partial prompt: start the next turn from scratch.
      dsv4_session_reset(session_.get());
      return false;
    }
  }

  std::vector<int32_t> render(const Json& messages, const char* mode) const {
    dsv4_chat_params p = dsv4_chat_default_params();
    p.thinking_mode = mode;
    if (!opt_.effort.empty()) p.reasoning_effort = opt_.effort.c_str();
    const std::string json = messages.dump();
    size_t n = 0;
    dsv4_status st = dsv4_chat_render(json.c_str(), &p, nullptr, 0, &n);
    if (st != DSV4_ERR_BUFFER_TOO_SMALL) check(st);
    std::string text(n + 1, '\0');
    check(dsv4_chat_render(json.c_str(), &p, text.data(), text.size(), &n));
    text.resize(n);
    st = dsv4_tokenizer_encode(tok_, text.data(), text.size(), false, nullptr, 0, &n);
    if (st != DSV4_ERR_BUFFER_TOO_SMALL) check(st);
    std::vector<int32_t> ids(n);
    check(dsv4_tokenizer_encode(tok_, text.data(), text.size(), false, ids.data(), ids.size(), &n));
    return ids;
  }

  // The session already holds earlier turns: when the new prompt extends them, only the new tokens
  // are run; otherwise (reasoning dropped, /system changed, re-tokenised answer) start over.
  std::vector<int32_t> reuse_prefix(const std::vector<int32_t>& prompt) {
    size_t n = 0;
    dsv4_status st = dsv4_session_get_tokens(session_.get(), nullptr, 0, &n);
    if (st != DSV4_ERR_BUFFER_TOO_SMALL && st != DSV4_OK) check(st);
    std::vector<int32_t> have(n);
    if (n) check(dsv4_session_get_tokens(session_.get(), have.data(), have.size(), &n));
    if (n && n < prompt.size() && std::equal(have.begin(), have.end(), prompt.begin()))
      return {prompt.begin() + static_cast<std::ptrdiff_t>(n), prompt.end()};
    check(dsv4_session_reset(session_.get()));
    return prompt;
  }

  struct GenState {
    AnswerPrinter* printer;
    dsv4_chat_stream* parser;
  };

  static void on_delta(int32_t kind, int32_t, const char* text, size_t len, void* user) {
    auto* p = static_cast<AnswerPrinter*>(user);
    const std::string_view t(text, len);
    if (kind == DSV4_DELTA_REASONING) p->reasoning(t);
    else if (kind == DSV4_DELTA_CONTENT) p->content(t);
    else if (kind == DSV4_DELTA_TOOL_CALL_NAME) p->tool_call(std::string("\n[tool call] ") + std::string(t) + " ");
    else p->tool_call(t);
  }

  static int on_progress(int64_t, int64_t, void*) { return g_interrupted.load() ? 1 : 0; }

  static int on_token(int32_t, const char* piece, size_t len, void* user) {
    auto* g = static_cast<GenState*>(user);
    if (len) dsv4_chat_stream_feed(g->parser, piece, len, on_delta, g->printer);
    return g_interrupted.load() ? 1 : 0;
  }

  // Ctrl-C before the answer starts (pressed while rendering / tokenising, or during the prompt's
  // prefill) drops the turn: the session is reset and nullopt returned. A pending Ctrl-C is
  // honoured, never cleared unseen; the flag is cleared once the turn has stopped.
  std::optional<Json> generate(const std::vector<int32_t>& prompt, const char* mode) {
    auto stopped_early = [&] {
      g_interrupted.store(false);
      dsv4_session_reset(session_.get());  // may hold part of the prompt
      AnswerPrinter(color_out()).finish("[stopped]");
      return std::nullopt;
    };
    if (g_interrupted.load()) return stopped_early();
    // The prompt but its last token goes through the chunked prefill, whose progress callback
    // makes a long prompt interruptible; generate then runs from the last token.
    dsv4_session_stats before{}, after{};
    check(dsv4_session_get_stats(session_.get(), &before));
    if (prompt.size() > 1) {
      const dsv4_status pst =
          dsv4_session_prefill(session_.get(), prompt.data(), prompt.size() - 1, 256, on_progress, nullptr);
      if (pst == DSV4_ERR_CANCELLED) return stopped_early();
      check(pst);
    }
    check(dsv4_session_get_stats(session_.get(), &after));
    if (g_interrupted.load()) return stopped_early();
    dsv4_chat_stream* cs = nullptr;
    check(dsv4_chat_stream_create(mode, false, &cs));
    std::unique_ptr<dsv4_chat_stream, decltype(&dsv4_chat_stream_free)> parser(cs, dsv4_chat_stream_free);
    AnswerPrinter printer(color_out());
    GenState state{&printer, cs};
    dsv4_generate_params gp = dsv4_generate_default_params();
    gp.max_new_tokens = opt_.max_new_tokens;
    gp.sampler = opt_.sampler;
    dsv4_generate_result r{};
    const size_t last = prompt.empty() ? 0 : prompt.size() - 1;
    check(dsv4_session_generate(session_.get(), prompt.data() + last, prompt.size() - last, &gp, on_token, &state, &r));
    check(dsv4_chat_stream_finish(cs, on_delta, &printer));
    const bool stopped = r.stop_reason == DSV4_STOP_CANCELLED;
    g_interrupted.store(false);
    printer.finish(stopped ? "[stopped]" : r.stop_reason == DSV4_STOP_MAX_TOKENS ? "[max tokens]"
                                         : r.stop_reason == DSV4_STOP_CONTEXT_FULL ? "[context full]"
                                                                                  : nullptr);
    last_ = {static_cast<int64_t>(prompt.size()), r.n_generated_tokens,
             r.prefill_seconds + (after.prefill_seconds - before.prefill_seconds), r.decode_seconds};
    size_t n = 0;
    dsv4_status st = dsv4_chat_stream_result(cs, nullptr, 0, &n);
    if (st != DSV4_ERR_BUFFER_TOO_SMALL) check(st);
    std::string json(n + 1, '\0');
    check(dsv4_chat_stream_result(cs, json.data(), json.size(), &n));
    json.resize(n);
    Json msg = Json::parse(json);
    Json reply = {{"role", "assistant"}, {"content", msg.value("content", "")}};
    if (!msg.value("reasoning_content", "").empty()) reply["reasoning_content"] = msg["reasoning_content"];
    if (msg.contains("tool_calls") && !msg["tool_calls"].empty()) reply["tool_calls"] = msg["tool_calls"];
    return reply;
  }

  bool color_out() const { return opt_.color && isatty(1) && std::getenv("NO_COLOR") == nullptr; }

  const Options& opt_;
  dsv4_model* model_;
  const dsv4_tokenizer* tok_ = nullptr;
  dsv4c::SessionPtr session_;
  bool think_;
  std::string system_;
  Json history_ = Json::array();
  TurnStats last_;
};

int run(const Options& o) {
  dsv4_model_params mp = dsv4_model_default_params();
  mp.backend = o.backend.c_str();
  mp.n_threads = o.threads;
  mp.experts_per_token = o.experts_per_token;
  mp.device_ids = o.devices.empty() ? nullptr : o.devices.data();
  mp.n_device_ids = o.devices.size();
  mp.numerics = o.numerics;
  const bool interactive = !o.prompt && isatty(0);
  if (interactive) std::fprintf(stderr, "loading %s ...\n", o.model.c_str());
  dsv4_model* m = nullptr;
  check(dsv4_model_load(o.model.c_str(), &mp, &m));
  dsv4c::ModelPtr model(m);
  Chat chat(o, model.get());
  // Only now: during the load Ctrl-C keeps its default action (exit at once); from here on it stops
  // the current answer instead.
  install_sigint_handler();

  if (o.prompt) return chat.turn(*o.prompt) ? 0 : 1;

  std::string pending;
  if (!interactive) {
    // Piped: a JSON conversation is answered once; otherwise every line is a user turn.
    std::string all;
    bool intr = false;
    while (auto line = read_line(pending, intr)) all += *line + "\n";
    const size_t first = all.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && (all[first] == '[' || all[first] == '{')) {
      // Depth-limited like the library's own JSON entry points: values nested deeper than 512 are
      // discarded while parsing (never built, so no deep recursion) and the input is refused.
      bool too_deep = false;
      Json j = Json::parse(
          all, [&](int depth, Json::parse_event_t, Json&) { return !(too_deep |= depth > 512); }, false);
      if (too_deep) {
        std::fprintf(stderr, "dsv4-chat: piped JSON is nested deeper than 512 levels\n");
        return 1;
      }
      if (!j.is_discarded()) {
        if (j.is_object()) j = j.contains("messages") ? j["messages"] : Json::array();
        if (!j.is_array()) {
          std::fprintf(stderr, "dsv4-chat: piped \"messages\" must be a JSON array, got %s\n", j.type_name());
          return 1;
        }
        for (size_t i = 0; i < j.size(); ++i) {
          const Json& msg = j[i];
          const char* problem = !msg.is_object() ? "is not a JSON object"
                                : msg.contains("role") && !msg["role"].is_string() ? "has a non-string \"role\""
                                                                                   : nullptr;
          if (problem) {
            std::fprintf(stderr, "dsv4-chat: piped message %zu %s (got %s)\n", i, problem,
                         msg.dump().substr(0, 80).c_str());
            return 1;
          }
        }
        return chat.answer_messages(j) ? 0 : 1;
      }
    }
    std::istringstream lines(all);
    bool ok = true;
    for (std::string line; std::getline(lines, line);) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      if (line[0] == '/') {
        if (!chat.command(line)) break;
      } else {
        ok = chat.turn(line) && ok;
      }
    }
    return ok ? 0 : 1;
  }

  std::fprintf(stderr, "ready. /help for commands, Ctrl-C stops an answer, Ctrl-D quits.\n");
  for (;;) {
    std::fputs("> ", stdout);
    std::fflush(stdout);
    bool intr = false;
    auto line = read_line(pending, intr);
    if (!line) {
      std::fputc('\n', stdout);
      return 0;
    }
    if (intr) {
      std::fputs("^C (Ctrl-D or /quit exits)\n", stdout);
      continue;
    }
    if (line->find_first_not_of(" \t\r") == std::string::npos) continue;
    if ((*line)[0] == '/') {
      if (!chat.command(*line)) return 0;
      continue;
    }
    chat.turn(*line);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_args(argc, argv);
  try {
    return run(o);
  } catch (const dsv4c::Error& e) {
    std::fprintf(stderr, "dsv4-chat: %s: %s\n", dsv4_status_name(e.status()), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsv4-chat: %s\n", e.what());
    return 1;
  }
}
