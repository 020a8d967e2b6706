// ChatPipeline (contract in chat_pipeline.hpp).
#include "chat_pipeline.hpp"

#include <algorithm>
#include <random>

namespace dsv4::server {
namespace {

// What ends the reasoning of a thinking-mode turn in the raw text: </think>, or a tool block the
// model opened without closing its thoughts (the lenient parser ends the reasoning there too).
const std::string kDsmlToolCalls = "<" + std::string(chat::kDsml) + "tool_calls";
const size_t kLongestEnd = std::max(chat::kThinkEnd.size(), kDsmlToolCalls.size());

// Appends text to the last delta when it is a lone field of the same kind, so that one token's
// several parser deltas of one kind go out as one.
void append_text(std::vector<Json>& out, const char* key, const std::string& text) {
  if (text.empty()) return;
  if (!out.empty() && out.back().size() == 1 && out.back().contains(key)) {
    out.back()[key] = out.back()[key].get<std::string>() + text;
    return;
  }
  out.push_back(Json{{key, text}});
}

}  // namespace

std::string random_call_id() {
  // Per call: ids only need to be unique within a conversation, so a fresh random_device draw is
  // enough and keeps the server free of shared generator state.
  std::random_device rd;
  std::mt19937_64 g((static_cast<uint64_t>(rd()) << 32) ^ rd());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = "call_";
  for (int i = 0; i < 24; ++i) id += kHex[g() & 15];
  return id;
}

ChatPipeline::ChatPipeline(Options opt)
    : opt_(std::move(opt)), parser_(opt_.mode, chat::ParseMode::lenient), reasoning_(opt_.mode == chat::ThinkingMode::thinking) {
  if (!opt_.make_call_id) opt_.make_call_id = random_call_id;
  if (!opt_.prefill.empty()) {
    track_reasoning(opt_.prefill, /*is_token=*/false);
    // The prefill only opens a tool block (or closes empty reasoning): it yields no text delta; a
    // call it starts is emitted once the model's tokens complete it.
    (void)convert(parser_.feed(opt_.prefill));
  }
}

void ChatPipeline::track_reasoning(std::string_view piece, bool is_token) {
  if (!reasoning_) return;
  const size_t start = fed_bytes_;
  fed_bytes_ += piece.size();
  if (is_token) {
    ++reasoning_tokens_;
    recent_.push_back(start);
  }
  tail_ += piece;
  size_t hit = std::min(tail_.find(chat::kThinkEnd), tail_.find(kDsmlToolCalls));
  if (hit != std::string::npos) {
    // Tokens that began at or after the marker spell the marker (or come after it): they are not
    // reasoning, though a tokenizer without a </think> token needs several to write it.
    const size_t at = fed_bytes_ - tail_.size() + hit;
    for (size_t s : recent_) reasoning_tokens_ -= s >= at ? 1 : 0;
    reasoning_ = false;
    tail_.clear();
    recent_.clear();
    return;
  }
  if (tail_.size() > kLongestEnd) tail_.erase(0, tail_.size() - kLongestEnd);
  const size_t window = fed_bytes_ - tail_.size();
  while (recent_.size() > 1 && recent_[1] <= window) recent_.pop_front();
}

std::vector<Json> ChatPipeline::feed(std::string_view piece) {
  if (finished_) return {};
  track_reasoning(piece, /*is_token=*/true);
  if (piece.empty()) return {};
  return convert(parser_.feed(piece));
}

std::vector<Json> ChatPipeline::finish() {
  if (finished_) return {};
  std::vector<Json> out = convert(parser_.finish());
  parsed_ = parser_.result();
  finished_ = true;
  return out;
}

std::vector<Json> ChatPipeline::convert(const std::vector<chat::Delta>& ds) {
  std::vector<Json> out;
  for (const chat::Delta& d : ds) {
    switch (d.kind) {
      case chat::Delta::Kind::reasoning: append_text(out, "reasoning_content", d.text); break;
      case chat::Delta::Kind::content: append_text(out, "content", d.text); break;
      case chat::Delta::Kind::tool_call_name: {
        const size_t k = static_cast<size_t>(std::max(0, d.tool_index));
        if (call_map_.size() <= k) call_map_.resize(k + 1, -1);
        const bool keep = opt_.tools_enabled &&
                          (opt_.max_tool_calls < 0 || static_cast<int>(ids_.size()) < opt_.max_tool_calls);
        if (!keep) break;
        const int idx = static_cast<int>(ids_.size());
        call_map_[k] = idx;
        ids_.push_back(opt_.make_call_id());
        calls_.push_back({d.text, ""});
        out.push_back(Json{{"tool_calls", Json::array({Json{{"index", idx},
                                                            {"id", ids_.back()},
                                                            {"type", "function"},
                                                            {"function", Json{{"name", d.text}, {"arguments", ""}}}}})}});
        break;
      }
      case chat::Delta::Kind::tool_call_arguments: {
        const size_t k = static_cast<size_t>(std::max(0, d.tool_index));
        if (k >= call_map_.size() || call_map_[k] < 0) break;
        const int idx = call_map_[k];
        calls_[static_cast<size_t>(idx)].arguments += d.text;
        out.push_back(Json{{"tool_calls", Json::array({Json{{"index", idx}, {"function", Json{{"arguments", d.text}}}}})}});
        break;
      }
    }
  }
  return out;
}

Json ChatPipeline::message() const {
  Json m = Json::object();
  m["role"] = "assistant";
  if (calls_.empty() || !parsed_.content.empty()) m["content"] = parsed_.content;
  else m["content"] = nullptr;
  if (opt_.mode == chat::ThinkingMode::thinking) m["reasoning_content"] = parsed_.reasoning_content;
  if (!calls_.empty()) {
    Json calls = Json::array();
    for (size_t i = 0; i < calls_.size(); ++i)
      calls.push_back(Json{{"id", ids_[i]},
                           {"type", "function"},
                           {"function", Json{{"name", calls_[i].name}, {"arguments", calls_[i].arguments}}}});
    m["tool_calls"] = std::move(calls);
  }
  return m;
}

}  // namespace dsv4::server
