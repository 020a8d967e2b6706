// The small endpoints: /v1/models, /tokenize, /detokenize (vLLM's shapes), plus the request
// context they share with the generation routes (model-name resolution, limits).
#include <filesystem>

#include <fmt/format.h>

#include "api_error.hpp"
#include "openai_response.hpp"
#include "routes.hpp"

namespace dsv4::server {
namespace {

std::string strip_slashes(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

std::string canonical(const std::string& p) {
  std::error_code ec;
  const auto c = std::filesystem::weakly_canonical(strip_slashes(p), ec);
  return ec ? std::string() : strip_slashes(c.string());
}

}  // namespace

ServerContext::ServerContext(const ServerOptions& o, EngineHost& e, Metrics& m, const Logger& l)
    : opt(o), engine(e), metrics(m), log(l), names(o.served_model_names), model_path(strip_slashes(o.model_dir)) {
  model_path_canonical = canonical(o.model_dir);
  if (names.empty()) names.push_back(std::filesystem::path(model_path).filename().string());
}

std::string ServerContext::resolve_model(const Json& body) const {
  const std::string m = requested_model(body);
  if (m.empty()) return names.front();
  for (const auto& n : names)
    if (m == n) return m;
  if (strip_slashes(m) == model_path || (!model_path_canonical.empty() && canonical(m) == model_path_canonical)) return m;
  throw ApiError(404, fmt::format("The model `{}` does not exist.", m), "model", "model_not_found");
}

RequestLimits ServerContext::limits() const {
  RequestLimits l;
  l.max_model_len = engine.max_model_len();
  l.max_tokens_limit = opt.max_tokens_limit;
  l.max_n = opt.scheduler.max_n;
  l.vocab_size = engine.model().config().vocab_size;
  return l;
}

void send_json(httplib::Response& res, int status, const Json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void models_route(const ServerContext& ctx, httplib::Response& res) {
  Json data = Json::array();
  const int64_t created = unix_time();
  for (const auto& n : ctx.names)
    data.push_back(Json{{"id", n},
                        {"object", "model"},
                        {"created", created},
                        {"owned_by", "dsv4"},
                        {"root", ctx.model_path},
                        {"parent", nullptr},
                        {"max_model_len", ctx.engine.max_model_len()},
                        {"permission", Json::array()}});
  send_json(res, 200, Json{{"object", "list"}, {"data", std::move(data)}});
}

void tokenize_route(const ServerContext& ctx, const Json& body, httplib::Response& res) {
  (void)ctx.resolve_model(body);
  const std::vector<int32_t> ids = parse_tokenize_request(body, ctx.engine.tokenizer(), ctx.limits());
  send_json(res, 200, Json{{"count", ids.size()}, {"max_model_len", ctx.engine.max_model_len()}, {"tokens", ids},
                           {"token_strs", nullptr}});
}

void detokenize_route(const ServerContext& ctx, const Json& body, httplib::Response& res) {
  (void)ctx.resolve_model(body);
  const std::vector<int32_t> ids = parse_detokenize_request(body, ctx.engine.tokenizer());
  send_json(res, 200, Json{{"prompt", ctx.engine.tokenizer().decode(ids)}});
}

}  // namespace dsv4::server
