// The endpoint handlers behind http_server.cpp. Each takes the parsed body (POST) and fills the
// response; failures are thrown as ApiError and turned into the response at the HTTP edge.
// Handlers run only once the model is ready (the edge answers 503 before that).
//
// Streaming responses (SSE) are written by a chunked content provider that runs on the same HTTP
// worker thread after the handler returned: it drains the request's event queue, writes
// "data: {chunk}\n\n" events and a final "data: [DONE]\n\n", and cancels the generation when a
// write fails or the peer is gone (checked whenever no token arrived for a while).
#pragma once
#include <httplib.h>

#include <string>
#include <vector>

#include "engine_host.hpp"
#include "metrics.hpp"
#include "openai_request.hpp"
#include "server_options.hpp"

namespace dsv4::server {

struct ServerContext {
  const ServerOptions& opt;
  EngineHost& engine;
  Metrics& metrics;
  const Logger& log;
  std::vector<std::string> names;  // served model names (first = the default)
  std::string model_path;          // the folder as given, and its canonical form
  std::string model_path_canonical;

  ServerContext(const ServerOptions& o, EngineHost& e, Metrics& m, const Logger& l);
  // The "model" of a request: absent → names[0]; a served name or the model folder → itself;
  // anything else → 404 model_not_found.
  std::string resolve_model(const Json& body) const;
  RequestLimits limits() const;
};

// Sets a JSON body (and status).
void send_json(httplib::Response& res, int status, const Json& body);

void completions_route(const ServerContext& ctx, const Json& body, httplib::Response& res);
void chat_route(const ServerContext& ctx, const Json& body, httplib::Response& res);
void models_route(const ServerContext& ctx, httplib::Response& res);
void tokenize_route(const ServerContext& ctx, const Json& body, httplib::Response& res);
void detokenize_route(const ServerContext& ctx, const Json& body, httplib::Response& res);

}  // namespace dsv4::server
