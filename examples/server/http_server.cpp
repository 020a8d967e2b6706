// The HTTP edge (contract in http_server.hpp).
#include "http_server.hpp"

#include <httplib.h>

#include <chrono>
#include <functional>
#include <thread>

#include "api_error.hpp"
#include "openai_request.hpp"
#include "openai_response.hpp"
#include "routes.hpp"

namespace dsv4::server {
namespace {

enum class Access { open, key };  // open: health, version, metrics (probes and scrapers carry no key)

struct Route {
  const char* path;
  const char* method;
  Access access;
  bool needs_model;  // answered 503 until the model is ready
};

constexpr Route kRoutes[] = {
    {"/health", "GET", Access::open, false},
    {"/version", "GET", Access::open, false},
    {"/metrics", "GET", Access::open, false},
    {"/v1/models", "GET", Access::key, true},
    {"/v1/completions", "POST", Access::key, true},
    {"/v1/chat/completions", "POST", Access::key, true},
    {"/tokenize", "POST", Access::key, true},
    {"/detokenize", "POST", Access::key, true},
};

const Route* find_route(const std::string& path) {
  for (const Route& r : kRoutes)
    if (path == r.path) return &r;
  return nullptr;
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status();
  res.set_content(dump(error_body(e)), "application/json");
  if (e.status() == 401) res.set_header("WWW-Authenticate", "Bearer");
}

// Compares without an early exit, so the time taken does not reveal how much of the key matched.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % (b.empty() ? 1 : b.size())]);
  return diff == 0 && !b.empty();
}

void check_key(const ServerOptions& opt, const httplib::Request& req) {
  if (opt.api_key.empty()) return;
  const std::string h = req.get_header_value("Authorization");
  const std::string_view prefix = "Bearer ";
  if (h.size() > prefix.size() && std::string_view(h).substr(0, prefix.size()) == prefix &&
      same_secret(std::string_view(h).substr(prefix.size()), opt.api_key))
    return;
  throw ApiError(401, h.empty() ? "Missing API key: send it as 'Authorization: Bearer <key>'" : "Incorrect API key provided",
                 {}, "invalid_api_key", "authentication_error");
}

void check_ready(const EngineHost& engine) {
  switch (engine.state()) {
    case EngineHost::State::ready: return;
    case EngineHost::State::loading: throw ApiError(503, "The model is still loading; retry shortly", {}, "model_loading");
    case EngineHost::State::stopping: throw ApiError(503, "The server is shutting down", {}, "shutting_down");
    case EngineHost::State::failed: throw ApiError(503, "The model failed to load: " + engine.error(), {}, "model_load_failed");
  }
}

}  // namespace

HttpServer::HttpServer(const ServerOptions& opt, EngineHost& engine, Metrics& metrics, const Logger& log)
    : opt_(opt), engine_(engine), metrics_(metrics), log_(log),
      ctx_(std::make_unique<ServerContext>(opt, engine, metrics, log)), svr_(std::make_unique<httplib::Server>()) {
  const size_t workers = static_cast<size_t>(std::max(1, opt_.workers));
  svr_->new_task_queue = [workers] { return new httplib::ThreadPool(workers); };
  svr_->set_read_timeout(opt_.io_timeout_s, 0);
  svr_->set_write_timeout(opt_.io_timeout_s, 0);
  svr_->set_keep_alive_timeout(5);
  svr_->set_keep_alive_max_count(1000);  // httplib's default (5) would reconnect clients every 5 requests
  svr_->set_payload_max_length(opt_.max_body_bytes);
  svr_->set_tcp_nodelay(true);  // SSE: each token's event goes out at once
  install_routes();
}

HttpServer::~HttpServer() = default;

void HttpServer::install_routes() {
  httplib::Server& svr = *svr_;
  const ServerContext& ctx = *ctx_;

  // One wrapper for every route: access, readiness, body, dispatch, and the catch-all edge.
  auto serve = [this, &ctx](const Route& route, const httplib::Request& req, httplib::Response& res,
                            const httplib::ContentReader* reader) {
    try {
      std::string body;
      if (reader) {
        bool too_big = false;
        const bool ok = (*reader)([&](const char* data, size_t len) {
          if (body.size() + len > opt_.max_body_bytes) {
            too_big = true;
            return false;
          }
          body.append(data, len);
          return true;
        });
        if (too_big || res.status == 413) {
          res.set_header("Connection", "close");  // the rest of the body is still in the socket
          throw ApiError(413, fmt::format("The request body exceeds {} bytes (--max-body-bytes)", opt_.max_body_bytes), {},
                         "request_too_large");
        }
        if (!ok) throw ApiError(400, "Could not read the request body", {}, "invalid_body");
      }
      if (route.access == Access::key) check_key(opt_, req);
      const std::string path = route.path;
      if (path == "/health") {
        const auto s = engine_.state();
        if (s == EngineHost::State::ready) {
          send_json(res, 200, Json{{"status", "ok"}});
        } else {
          Json j{{"status", s == EngineHost::State::loading ? "loading" : s == EngineHost::State::stopping ? "stopping" : "failed"}};
          if (s == EngineHost::State::failed) j["error"] = engine_.error();
          send_json(res, 503, j);
        }
        return;
      }
      if (path == "/version") {
        send_json(res, 200, Json{{"version", DSV4_VERSION_STRING}});
        return;
      }
      if (path == "/metrics") {
        const bool ready = engine_.state() == EngineHost::State::ready;
        SchedulerStats st;
        if (ready) st = engine_.scheduler().stats();
        res.status = 200;
        res.set_content(metrics_.render(ready ? &st : nullptr, ready), "text/plain; version=0.0.4; charset=utf-8");
        return;
      }
      if (route.needs_model) check_ready(engine_);
      if (path == "/v1/models") {
        models_route(ctx, res);
        return;
      }
      const Json j = parse_body(body);
      if (path == "/v1/completions") completions_route(ctx, j, res);
      else if (path == "/v1/chat/completions") chat_route(ctx, j, res);
      else if (path == "/tokenize") tokenize_route(ctx, j, res);
      else if (path == "/detokenize") detokenize_route(ctx, j, res);
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const dsv4::Error& e) {
      send_error(res, from_core_error(e));
    } catch (const std::exception& e) {
      log_.error("serve: {} {}: internal error: {}", req.method, req.path, e.what());
      send_error(res, ApiError(500, std::string("Internal server error: ") + e.what(), {}, "internal_error"));
    } catch (...) {
      send_error(res, ApiError(500, "Internal server error", {}, "internal_error"));
    }
  };

  for (const Route& r : kRoutes) {
    const std::string method = r.method;
    if (method == "GET") {
      svr.Get(r.path, [serve, &r](const httplib::Request& req, httplib::Response& res) { serve(r, req, res, nullptr); });
    } else {
      svr.Post(r.path, [serve, &r](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& rd) {
        serve(r, req, res, &rd);
      });
    }
  }

  // Everything else: a known path with the wrong method → 405 (Allow names the right one), else 404.
  auto fallback = [](const httplib::Request& req, httplib::Response& res) {
    if (const Route* r = find_route(req.path)) {
      res.set_header("Allow", r->method);
      send_error(res, ApiError(405, fmt::format("Method {} is not allowed for {} (use {})", req.method, req.path, r->method),
                               {}, "method_not_allowed"));
      return;
    }
    send_error(res, ApiError(404, fmt::format("Invalid URL ({} {})", req.method, req.path), {}, "not_found"));
  };
  svr.Get(".*", fallback);
  svr.Post(".*", fallback);
  svr.Put(".*", fallback);
  svr.Patch(".*", fallback);
  svr.Delete(".*", fallback);
  svr.Options(".*", fallback);

  // Responses httplib makes itself (malformed request line, 413 for a Content-Length over the
  // limit, unknown methods): give them an OpenAI error body too.
  svr.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty() || res.content_length_ > 0) return httplib::Server::HandlerResponse::Unhandled;
    std::string msg;
    if (res.status == 413) msg = fmt::format("The request body exceeds {} bytes (--max-body-bytes)", opt_.max_body_bytes);
    else if (res.status == 404) msg = fmt::format("Invalid URL ({} {})", req.method, req.path);
    else if (res.status == 400) msg = "Malformed HTTP request";
    else msg = fmt::format("HTTP error {}", res.status);
    send_error(res, ApiError(res.status, msg, {}, res.status == 413 ? "request_too_large" : ""));
    return httplib::Server::HandlerResponse::Handled;
  }));
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, "Internal server error: " + what, {}, "internal_error"));
  });
  // After each response (a stream: after its last byte): metrics and the access log.
  svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    const Route* r = find_route(req.path);
    metrics_.count_http(r ? r->path : "other", res.status);
    if (res.status >= 500 && res.status != 503) log_.warn("serve: {} {} → {}", req.method, req.path, res.status);
    else log_.debug("serve: {} {} → {}", req.method, req.path, res.status);
  });
}

void HttpServer::bind() {
  if (opt_.port == 0) {
    port_ = svr_->bind_to_any_port(opt_.host);
    if (port_ <= 0) fail(Status::io, "serve: cannot bind {} (any port)", opt_.host);
  } else {
    if (!svr_->bind_to_port(opt_.host, opt_.port))
      fail(Status::io, "serve: cannot bind {}:{} (address in use, or not an address of this host)", opt_.host, opt_.port);
    port_ = opt_.port;
  }
}

void HttpServer::run() {
  entered_.store(true);
  if (stopping_.load()) return;
  svr_->listen_after_bind();
}

void HttpServer::stop() {
  // httplib's stop() is a no-op until the accept loop runs: a stop that races with run()'s start
  // waits for it (run() itself returns early when the stop came first).
  stopping_.store(true);
  for (int i = 0; i < 500 && entered_.load() && !svr_->is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  svr_->stop();
}

}  // namespace dsv4::server
