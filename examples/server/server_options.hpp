// Everything `dsv4 serve` is configured with (flags in examples/dsv4/cmd_serve.cpp, documented in
// docs/server.md). Plain data: the server reads it, never changes it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dsv4/engine.hpp"
#include "dsv4/log.hpp"
#include "dsv4/scheduler.hpp"

namespace dsv4::server {

struct ServerOptions {
  std::string model_dir;
  std::string host = "127.0.0.1";  // loopback unless asked: the server has no TLS
  int port = 8000;                 // 0 = any free port (the bound port is logged)
  // Names a request's "model" may use; the first is reported in responses without a model and
  // listed first by /v1/models. Empty = the model folder's basename. The folder path itself is
  // always accepted too.
  std::vector<std::string> served_model_names;
  std::string api_key;             // empty = no authentication

  LoadOptions load;                // backend, experts_per_token, state budget, max_context, threads
  SchedulerOptions scheduler;      // max_num_seqs, max_num_batched_tokens, max_model_len, max_waiting, max_n

  int io_timeout_s = 30;           // socket read / write timeout (a stalled client is dropped)
  int request_timeout_s = 0;       // longest one request may run, queue included; 0 = no limit
  size_t max_body_bytes = 8u << 20;  // request bodies above this → 413
  int max_tokens_limit = 0;        // largest max_tokens a request may ask; 0 = the context
  int workers = 64;                // HTTP worker threads (each open connection holds one)
  size_t max_queued_events = 4096; // per request: undelivered tokens before a slow client is cancelled
  LogLevel log_level = LogLevel::info;
};

}  // namespace dsv4::server
