// `dsv4 serve MODEL_DIR [flags]`: the OpenAI-compatible HTTP server (examples/server/,
// docs/server.md). This file only turns flags (vLLM's names where vLLM has one) into
// ServerOptions; the server itself is the dsv4_server library, linked in only when cpp-httplib
// was found at configure time (DSV4_HAVE_SERVER).
#include <fmt/format.h>

#include <cstdlib>
#include <cstring>

#include "args.hpp"
#include "commands.hpp"
#include "dsv4/error.hpp"

#ifdef DSV4_HAVE_SERVER
#include "server_main.hpp"
#include "server_options.hpp"
#endif

namespace dsv4::cli {
namespace {

constexpr const char* kUsage = R"(usage: dsv4 serve MODEL_DIR [flags]
  --host H                    address to bind (default 127.0.0.1; 0.0.0.0 = every interface)
  --port P                    TCP port (default 8000; 0 = any free port)
  --served-model-name N[,N2]  name(s) requests may use as "model" (default: the folder's name;
                              the folder path is accepted too)
  --api-key KEY               require "Authorization: Bearer KEY" on /v1/*, /tokenize, /detokenize
                              (default: $DSV4_API_KEY, else $VLLM_API_KEY, else none)
  --backend cpu|cuda|null     (default cpu; null = no model math, for load tests)
  --device N                  CUDA device for --backend cuda (default 0)
  --devices 0,1,...           CUDA devices (several need expert parallelism: not available yet)
  --backend-params k=v,...    backend settings (cuda: gemm=on|promoted|off, attn_mma, hc_fork, moe_fork, fuse: on|off,
                              linear_mma=off|on; docs/architecture.md)
  --numerics reference|official  arithmetic (default reference; official = DeepSeek's bf16 run)
  --experts-per-token K       load-time expert override (4-Expert transformation)
  --threads N                 CPU backend threads (default: all cores)
  --state-budget-bytes N      sequence-state memory budget (default: unlimited on the CPU)
  --max-model-len N           context per sequence (default: the config's)
  --max-num-seqs N            sequences in one engine step (default 256)
  --max-num-batched-tokens N  tokens in one engine step (default 2048)
  --max-waiting N             queued requests before 429 (default 1024; 0 = unlimited)
  --max-n N                   largest n (default 16)
  --preemption recompute|reserve  memory policy (default recompute)
  --max-tokens-limit N        largest max_tokens accepted (default: the context)
  --max-body-bytes N          largest request body (default 8388608)
  --timeout S                 socket read/write timeout in seconds (default 30)
  --request-timeout S         longest a request may run, queue included (default 0 = no limit)
  --workers N                 HTTP worker threads; each open connection holds one (default 64)
  --max-queued-tokens N       undelivered tokens per request before a slow client is cancelled
                              (default 4096)
  --log-level debug|info|warn|error|off  (default $DSV4_LOG_LEVEL, else info)
)";

#ifdef DSV4_HAVE_SERVER
long long in_range(const Flags& f, const char* name, long long def, long long lo, long long hi) {
  const long long v = f.get_int(name, def);
  if (v < lo || v > hi) fail(Status::invalid_argument, "flag --{}: {} is not in [{}, {}]", name, v, lo, hi);
  return v;
}

LogLevel parse_level(const std::string& s) {
  if (s == "debug") return LogLevel::debug;
  if (s == "info") return LogLevel::info;
  if (s == "warn" || s == "warning") return LogLevel::warn;
  if (s == "error") return LogLevel::error;
  if (s == "off") return LogLevel::off;
  fail(Status::invalid_argument, "flag --log-level: '{}' is not debug, info, warn, error or off", s);
}
#endif

}  // namespace

int cmd_serve(const Args& args) {
  for (const auto& a : args)
    if (a == "--help" || a == "-h") {
      fmt::print("{}", kUsage);
      return 0;
    }
#ifndef DSV4_HAVE_SERVER
  (void)args;
  fmt::print(stderr, "dsv4 serve: this dsv4 was built without the HTTP server (cpp-httplib was not found at "
                     "configure time; install libcpp-httplib-dev and reconfigure)\n");
  return 1;
#else
  Flags f(args, {"model", "host", "port", "served-model-name", "api-key", "backend", "backend-params", "experts-per-token", "threads",
                 "state-budget-bytes", "max-model-len", "max-num-seqs", "max-num-batched-tokens", "max-waiting", "max-n",
                 "preemption", "max-tokens-limit", "max-body-bytes", "timeout", "request-timeout", "workers",
                 "max-queued-tokens", "log-level", "device", "devices", "numerics"});
  server::ServerOptions o;
  if (f.positional().size() > 1) fail(Status::invalid_argument, "serve takes one MODEL_DIR, got {}", f.positional().size());
  if (f.positional().size() == 1 && f.has("model")) fail(Status::invalid_argument, "give MODEL_DIR or --model, not both");
  o.model_dir = f.positional().empty() ? f.require("model") : f.positional()[0];

  o.host = f.get("host", "127.0.0.1");
  o.port = static_cast<int>(in_range(f, "port", 8000, 0, 65535));
  const std::string names = f.get("served-model-name");
  for (size_t b = 0; !names.empty() && b <= names.size();) {
    const size_t e = std::min(names.find(',', b), names.size());
    if (e > b) o.served_model_names.push_back(names.substr(b, e - b));
    b = e + 1;
  }
  if (f.has("api-key")) o.api_key = f.get("api-key");
  else if (const char* k = std::getenv("DSV4_API_KEY"); k && *k) o.api_key = k;
  else if (const char* v = std::getenv("VLLM_API_KEY"); v && *v) o.api_key = v;

  o.load.backend = f.get("backend", "cpu");
  o.load.device_ids = f.get_devices();
  o.load.numerics = parse_numerics(f.get("numerics", "reference"));
  o.load.experts_per_token = static_cast<int>(in_range(f, "experts-per-token", 0, 0, 1024));
  if (f.has("threads")) {
    if (o.load.backend != "cpu") fail(Status::invalid_argument, "flag --threads applies to the cpu backend only");
    o.load.backend_params.emplace_back("threads", std::to_string(in_range(f, "threads", 0, 1, 4096)));
  }
  if (f.has("backend-params")) add_backend_params(f.get("backend-params"), o.load.backend_params);
  o.load.state_budget_bytes = static_cast<size_t>(in_range(f, "state-budget-bytes", 0, 0, INT64_MAX));
  o.scheduler.max_model_len = in_range(f, "max-model-len", 0, 0, INT64_MAX);
  o.load.max_context = o.scheduler.max_model_len;
  o.scheduler.max_num_seqs = static_cast<int>(in_range(f, "max-num-seqs", 256, 1, 65536));
  o.scheduler.max_num_batched_tokens = static_cast<int>(in_range(f, "max-num-batched-tokens", 2048, 1, 1 << 24));
  o.scheduler.max_waiting = static_cast<int>(in_range(f, "max-waiting", 1024, 0, 1 << 24));
  o.scheduler.max_n = static_cast<int>(in_range(f, "max-n", 16, 1, 1024));
  const std::string pre = f.get("preemption", "recompute");
  if (pre == "recompute") o.scheduler.preemption = Preemption::recompute;
  else if (pre == "reserve") o.scheduler.preemption = Preemption::reserve;
  else fail(Status::invalid_argument, "flag --preemption: '{}' is not recompute or reserve", pre);
  o.max_tokens_limit = static_cast<int>(in_range(f, "max-tokens-limit", 0, 0, INT32_MAX));
  o.max_body_bytes = static_cast<size_t>(in_range(f, "max-body-bytes", 8 << 20, 64, INT64_MAX));
  o.io_timeout_s = static_cast<int>(in_range(f, "timeout", 30, 1, 86400));
  o.request_timeout_s = static_cast<int>(in_range(f, "request-timeout", 0, 0, 86400 * 7));
  o.workers = static_cast<int>(in_range(f, "workers", 64, 1, 4096));
  o.max_queued_events = static_cast<size_t>(in_range(f, "max-queued-tokens", 4096, 1, 1 << 24));
  o.log_level = f.has("log-level") ? parse_level(f.get("log-level")) : Logger::from_env().level();
  return server::serve(o);
#endif
}

}  // namespace dsv4::cli
