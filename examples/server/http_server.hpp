// HttpServer: the HTTP edge over cpp-httplib — routes, method checks (405), unknown paths (404),
// Bearer authentication (401), body limits (413) and depth-limited JSON, the loading state (503
// until the model is ready), per-response metrics, and the exception boundary: every handler runs
// inside a catch-all that turns ApiError into its status and anything else into a 500, always
// with an OpenAI error body. Connections are served by a fixed pool of `workers` threads with
// read / write timeouts (ServerOptions::io_timeout_s).
//
// Lifecycle: bind() (throws when the address is taken), then run() blocks serving until stop()
// (from any thread: the signal watcher) makes it return after the workers finished.
#pragma once
#include <atomic>
#include <memory>
#include <string>

#include "engine_host.hpp"
#include "metrics.hpp"
#include "server_options.hpp"

namespace httplib {
class Server;
}

namespace dsv4::server {

struct ServerContext;

class HttpServer {
 public:
  HttpServer(const ServerOptions& opt, EngineHost& engine, Metrics& metrics, const Logger& log);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  void bind();            // Error(io) when the host / port cannot be bound
  int port() const { return port_; }
  void run();             // serves until stop()
  void stop();

 private:
  void install_routes();

  const ServerOptions& opt_;
  EngineHost& engine_;
  Metrics& metrics_;
  const Logger& log_;
  std::unique_ptr<ServerContext> ctx_;
  std::unique_ptr<httplib::Server> svr_;
  int port_ = 0;
  std::atomic<bool> entered_{false}, stopping_{false};
};

}  // namespace dsv4::server
