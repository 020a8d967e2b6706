// POST /v1/completions: text completion of one or several prompts, n choices each; choice index =
// prompt × n + sample, as OpenAI numbers them. Streamed chunks carry each token's final text (the
// stop matcher holds back what may still become a stop string).
#include <fmt/format.h>

#include "api_error.hpp"
#include "delivery.hpp"
#include "openai_response.hpp"
#include "routes.hpp"

namespace dsv4::server {
namespace {

struct Choice {
  std::string text;
  CompletionLogprobs logprobs;
  int64_t tokens = 0;
  std::optional<StopReason> reason;
  std::string error;
};

class CompletionSink : public EventSink {
 public:
  CompletionSink(const ServerContext& ctx, const CompletionRequest& req, std::string model)
      : tok_(ctx.engine.tokenizer()), req_(req), model_(std::move(model)), id_(new_request_id("cmpl-")), created_(unix_time()) {
    const int n = req_.params.n;
    for (size_t p = 0; p < req_.prompts.size(); ++p)
      for (int i = 0; i < n; ++i) {
        choices_.emplace_back();
        // With echo the text (and the logprob offsets) start with the prompt.
        if (req_.echo) {
          choices_.back().text = req_.prompt_texts[p];
          choices_.back().logprobs = CompletionLogprobs(utf8_length(req_.prompt_texts[p]));
        }
      }
  }

  void begin(std::string& sse_out) override {
    if (!req_.echo) return;
    for (size_t c = 0; c < choices_.size(); ++c) sse_out += sse(chunk(c, req_.prompt_texts[c / req_.params.n], Json(nullptr), Json(nullptr)));
  }

  void on_events(std::vector<TokenEvent>& events, std::string& sse_out) override {
    for (TokenEvent& e : events) {
      const size_t c = static_cast<size_t>(e.prompt) * static_cast<size_t>(req_.params.n) + static_cast<size_t>(e.sample);
      if (c >= choices_.size()) continue;
      Choice& ch = choices_[c];
      if (ch.reason) continue;
      ch.text += e.piece;
      if (e.token >= 0) ++ch.tokens;
      bool with_lp = false;
      if (e.token >= 0 && e.logprobs && req_.logprobs >= 0) {
        ch.logprobs.add(tok_, *e.logprobs, req_.logprobs);
        with_lp = true;
      }
      if (e.finished) {
        ch.reason = *e.finished;
        ch.error = e.error;
        ++finished_;
      }
      if (!req_.stream) continue;
      if (e.finished && *e.finished == StopReason::error) {
        sse_out += sse(error_body(ApiError(500, "generation failed: " + e.error, {}, "internal_error")));
        continue;
      }
      if (e.piece.empty() && !with_lp && !e.finished) continue;
      sse_out += sse(chunk(c, e.piece, with_lp ? ch.logprobs.take() : Json(nullptr),
                           e.finished ? Json(finish_reason(*e.finished)) : Json(nullptr)));
    }
  }

  bool done() const override { return finished_ == choices_.size(); }

  void end(std::string& sse_out) override {
    if (req_.include_usage) {
      Json u{{"id", id_}, {"object", "text_completion"}, {"created", created_}, {"model", model_},
             {"choices", Json::array()}, {"usage", usage()}};
      sse_out += sse(u);
    }
  }

  // Non-streamed: the whole response (500 when a choice failed inside the engine).
  Json response() {
    Json cs = Json::array();
    for (size_t c = 0; c < choices_.size(); ++c) {
      Choice& ch = choices_[c];
      if (ch.reason == StopReason::error) throw ApiError(500, "generation failed: " + ch.error, {}, "internal_error");
      cs.push_back(Json{{"index", c},
                        {"text", ch.text},
                        {"logprobs", req_.logprobs >= 0 ? ch.logprobs.take() : Json(nullptr)},
                        {"finish_reason", finish_reason(ch.reason.value_or(StopReason::max_tokens))},
                        {"stop_reason", nullptr}});
    }
    return Json{{"id", id_}, {"object", "text_completion"}, {"created", created_}, {"model", model_},
                {"choices", std::move(cs)}, {"usage", usage()}};
  }

 private:
  Json chunk(size_t c, const std::string& text, Json logprobs, Json finish) const {
    return Json{{"id", id_},
                {"object", "text_completion"},
                {"created", created_},
                {"model", model_},
                {"choices", Json::array({Json{{"index", c}, {"text", text}, {"logprobs", std::move(logprobs)},
                                              {"finish_reason", std::move(finish)}}})}};
  }

  Json usage() const {
    int64_t prompt = 0, completion = 0;
    for (const auto& p : req_.prompts) prompt += static_cast<int64_t>(p.size());
    for (const Choice& ch : choices_) completion += ch.tokens;
    return usage_json(prompt, completion, 0);
  }

  const Tokenizer& tok_;
  const CompletionRequest& req_;
  std::string model_, id_;
  int64_t created_;
  std::vector<Choice> choices_;
  size_t finished_ = 0;
};

// The request must outlive the sink (streaming: both live in the provider's captures).
struct StreamState {
  CompletionRequest req;
  std::unique_ptr<CompletionSink> sink;
};

}  // namespace

void completions_route(const ServerContext& ctx, const Json& body, httplib::Response& res) {
  const std::string model = ctx.resolve_model(body);
  auto state = std::make_shared<StreamState>();
  state->req = parse_completion_request(body, ctx.engine.tokenizer(), ctx.limits());
  state->sink = std::make_unique<CompletionSink>(ctx, state->req, model);
  auto gen = std::make_shared<Generation>(ctx.engine, ctx.metrics, ctx.opt.max_queued_events);
  gen->submit(state->req.prompts, state->req.params);
  const Deadline deadline = deadline_after(ctx.opt.request_timeout_s);
  if (!state->req.stream) {
    collect(*gen, *state->sink, deadline);
    send_json(res, 200, state->sink->response());
    return;
  }
  // The sink handed to the stream keeps the request alive through the aliasing constructor.
  std::shared_ptr<EventSink> sink(state, state->sink.get());
  stream_sse(res, std::move(gen), std::move(sink), deadline, ctx.log);
}

}  // namespace dsv4::server
