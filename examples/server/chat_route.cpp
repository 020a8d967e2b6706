// POST /v1/chat/completions: messages rendered with the DeepSeek-V4 chat format, each choice's
// completion run through a ChatPipeline (reasoning / content / tool calls, never markup), streamed
// as chat.completion.chunk deltas or returned as one chat.completion.
#include <fmt/format.h>

#include "api_error.hpp"
#include "delivery.hpp"
#include "openai_response.hpp"
#include "routes.hpp"

namespace dsv4::server {
namespace {

struct Choice {
  explicit Choice(ChatPipeline::Options o) : pipe(std::move(o)) {}
  ChatPipeline pipe;
  Json logprobs = Json::array();  // every entry (non-streamed)
  Json pending = Json::array();   // entries not yet sent (streamed)
  int64_t tokens = 0;
  std::optional<StopReason> reason;
  std::string error;
  std::string final_reason;       // after enforcement
  std::string enforcement_error;
};

class ChatSink : public EventSink {
 public:
  ChatSink(const ServerContext& ctx, const ChatRequest& req, std::string model)
      : tok_(ctx.engine.tokenizer()), req_(req), model_(std::move(model)), id_(new_request_id("chatcmpl-")), created_(unix_time()) {
    for (int i = 0; i < req_.params.n; ++i) choices_.emplace_back(req_.pipeline_options());
  }

  void begin(std::string& out) override {
    for (size_t c = 0; c < choices_.size(); ++c)
      out += sse(chunk(c, Json{{"role", "assistant"}, {"content", ""}}, Json(nullptr), Json(nullptr)));
  }

  void on_events(std::vector<TokenEvent>& events, std::string& out) override {
    for (TokenEvent& e : events) {
      const size_t c = static_cast<size_t>(e.sample);
      if (c >= choices_.size() || choices_[c].reason) continue;
      Choice& ch = choices_[c];
      std::vector<Json> deltas;
      if (e.token >= 0) {
        ++ch.tokens;
        if (e.logprobs && req_.logprobs) {
          Json entry = chat_logprob_entry(tok_, *e.logprobs, req_.top_logprobs);
          if (req_.stream) ch.pending.push_back(entry);
          else ch.logprobs.push_back(std::move(entry));
        }
      }
      deltas = ch.pipe.feed(e.piece);
      if (e.finished) {
        for (Json& d : ch.pipe.finish()) deltas.push_back(std::move(d));
        ch.reason = *e.finished;
        ch.error = e.error;
        settle(ch);
        ++finished_;
      }
      if (!req_.stream) continue;
      for (Json& d : deltas) out += sse(chunk(c, std::move(d), take_pending(ch), Json(nullptr)));
      if (!e.finished) continue;
      if (*e.finished == StopReason::error) {
        out += sse(error_body(ApiError(500, "generation failed: " + e.error, {}, "internal_error")));
        continue;
      }
      Json last = chunk(c, Json::object(), take_pending(ch), Json(ch.final_reason));
      if (!ch.enforcement_error.empty()) last["choices"][0]["error"] = enforcement_json(ch);
      out += sse(last);
    }
  }

  bool done() const override { return finished_ == choices_.size(); }

  void end(std::string& out) override {
    if (!req_.include_usage) return;
    out += sse(Json{{"id", id_}, {"object", "chat.completion.chunk"}, {"created", created_}, {"model", model_},
                    {"choices", Json::array()}, {"usage", usage()}});
  }

  Json response() const {
    Json cs = Json::array();
    for (size_t c = 0; c < choices_.size(); ++c) {
      const Choice& ch = choices_[c];
      if (ch.reason == StopReason::error) throw ApiError(500, "generation failed: " + ch.error, {}, "internal_error");
      Json choice{{"index", c},
                  {"message", ch.pipe.message()},
                  {"logprobs", req_.logprobs ? Json{{"content", ch.logprobs}, {"refusal", nullptr}} : Json(nullptr)},
                  {"finish_reason", ch.final_reason},
                  {"stop_reason", nullptr}};
      if (!ch.enforcement_error.empty()) choice["error"] = enforcement_json(ch);
      cs.push_back(std::move(choice));
    }
    return Json{{"id", id_}, {"object", "chat.completion"}, {"created", created_}, {"model", model_},
                {"choices", std::move(cs)}, {"usage", usage()}};
  }

 private:
  // The OpenAI finish_reason of a finished choice: "tool_calls" once a call was produced; a
  // required / named tool_choice that produced none ends "error" (unless it ran out of tokens:
  // "length") with an error object in the choice.
  void settle(Choice& ch) {
    ch.final_reason = finish_reason(*ch.reason);
    const bool forced = req_.tool_choice == ToolChoice::required || req_.tool_choice == ToolChoice::named;
    if (ch.pipe.tool_calls() > 0 && (ch.final_reason == "stop" || ch.final_reason == "length")) {
      ch.final_reason = "tool_calls";
    } else if (forced && ch.pipe.tool_calls() == 0 && ch.final_reason == "stop") {
      ch.final_reason = "error";
      ch.enforcement_error = req_.tool_choice == ToolChoice::named
                                 ? fmt::format("tool_choice asked for a call of '{}', but the model produced no "
                                               "complete call", req_.forced_function)
                                 : "tool_choice \"required\" asked for a tool call, but the model produced no complete call";
    }
  }

  static Json enforcement_json(const Choice& ch) {
    return Json{{"message", ch.enforcement_error}, {"type", "invalid_response_error"}, {"param", "tool_choice"},
                {"code", "tool_call_missing"}};
  }

  Json take_pending(Choice& ch) const {
    if (!req_.logprobs || ch.pending.empty()) return Json(nullptr);
    Json lp{{"content", std::move(ch.pending)}, {"refusal", nullptr}};
    ch.pending = Json::array();
    return lp;
  }

  Json chunk(size_t c, Json delta, Json logprobs, Json finish) const {
    return Json{{"id", id_},
                {"object", "chat.completion.chunk"},
                {"created", created_},
                {"model", model_},
                {"choices", Json::array({Json{{"index", c}, {"delta", std::move(delta)}, {"logprobs", std::move(logprobs)},
                                              {"finish_reason", std::move(finish)}}})}};
  }

  Json usage() const {
    int64_t completion = 0, reasoning = 0;
    for (const Choice& ch : choices_) {
      completion += ch.tokens;
      reasoning += ch.pipe.reasoning_tokens();
    }
    return usage_json(static_cast<int64_t>(req_.prompt.size()), completion, reasoning);
  }

  const Tokenizer& tok_;
  const ChatRequest& req_;
  std::string model_, id_;
  int64_t created_;
  std::vector<Choice> choices_;
  size_t finished_ = 0;
};

struct StreamState {
  ChatRequest req;
  std::unique_ptr<ChatSink> sink;
};

}  // namespace

void chat_route(const ServerContext& ctx, const Json& body, httplib::Response& res) {
  const std::string model = ctx.resolve_model(body);
  auto state = std::make_shared<StreamState>();
  state->req = parse_chat_request(body, ctx.engine.tokenizer(), ctx.limits());
  state->sink = std::make_unique<ChatSink>(ctx, state->req, model);
  auto gen = std::make_shared<Generation>(ctx.engine, ctx.metrics, ctx.opt.max_queued_events);
  gen->submit({state->req.prompt}, state->req.params);
  const Deadline deadline = deadline_after(ctx.opt.request_timeout_s);
  if (!state->req.stream) {
    collect(*gen, *state->sink, deadline);
    send_json(res, 200, state->sink->response());
    return;
  }
  std::shared_ptr<EventSink> sink(state, state->sink.get());
  stream_sse(res, std::move(gen), std::move(sink), deadline, ctx.log);
}

}  // namespace dsv4::server
