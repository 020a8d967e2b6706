// Lenient completion parsing as an incremental state machine, shared by the batch lenient parser
// (whole text + finish) and StreamParser (chunk by chunk), so both give the same message for any
// split. Invariant: a byte is emitted only once no later byte can change its meaning (text that
// may begin a marker, up to two newlines that may precede a tool block, and incomplete UTF-8 are
// held back); markers are never emitted. On text the release accepts, the result equals it.
#include <algorithm>
#include <array>
#include <string>
#include <unordered_set>
#include <vector>

#include "chat_internal.hpp"
#include "dsv4/chat_format.hpp"
#include "dsv4/chat_stream.hpp"
#include "dsv4/error.hpp"
#include "dsv4/utf8.hpp"

namespace dsv4::chat::detail {

namespace {
const std::string& dsml_str() {
  static const std::string s(kDsml);  // immutable after first use
  return s;
}
std::string tag(std::string_view prefix, std::string_view name) { return std::string(prefix) + dsml_str() + std::string(name); }

// Position and index of the earliest pattern occurrence in `text` at or after `from` (the lowest
// index on a tie). One pass over the text, so the cost is the distance to the match, not the
// distance to the farthest occurrence of every pattern.
std::pair<size_t, size_t> find_first(std::string_view text, size_t from, const std::vector<std::string>& pats) {
  std::string firsts;
  for (const auto& p : pats)
    if (firsts.find(p[0]) == std::string::npos) firsts.push_back(p[0]);
  for (size_t i = text.find_first_of(firsts, from); i != std::string_view::npos; i = text.find_first_of(firsts, i + 1)) {
    const std::string_view rest = text.substr(i);
    for (size_t k = 0; k < pats.size(); ++k)
      if (rest.starts_with(pats[k])) return {i, k};
  }
  return {std::string_view::npos, 0};
}

// Length of the longest suffix of text[from..] that is a proper prefix of some pattern.
size_t partial_suffix(std::string_view text, size_t from, const std::vector<std::string>& pats) {
  size_t best = 0;
  const size_t avail = text.size() - from;
  for (const auto& p : pats) {
    for (size_t l = std::min(p.size() - 1, avail); l > best; --l) {
      if (text.substr(text.size() - l) == std::string_view(p).substr(0, l)) {
        best = l;
        break;
      }
    }
  }
  return best;
}

size_t skip_ws(std::string_view s, size_t i) {
  while (i < s.size()) {
    const size_t n = py_space_len(s, i);
    if (!n) break;
    i += n;
  }
  return i;
}
std::string_view rtrim_ascii(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Whitespace-tolerant forms, tried when the release's exact patterns do not match.
std::optional<std::string> tolerant_invoke_name(std::string_view h) {
  size_t i = skip_ws(h, 0);
  if (h.substr(i, 6) != "name=\"") return std::nullopt;
  std::string_view rest = rtrim_ascii(h.substr(i + 6));
  if (rest.empty() || rest.back() != '>') return std::nullopt;
  rest = rtrim_ascii(rest.substr(0, rest.size() - 1));
  if (rest.empty() || rest.back() != '"') return std::nullopt;
  return std::string(rest.substr(0, rest.size() - 1));
}

std::optional<DsmlParam> tolerant_param(std::string_view b) {
  size_t i = skip_ws(b, 0);
  if (b.substr(i, 6) != "name=\"") return std::nullopt;
  i += 6;
  const size_t q = b.find('"', i);
  if (q == std::string_view::npos) return std::nullopt;
  DsmlParam p;
  p.name = std::string(b.substr(i, q - i));
  i = skip_ws(b, q + 1);
  if (b.substr(i, 8) != "string=\"") return std::nullopt;
  i += 8;
  const size_t q2 = b.find('"', i);
  if (q2 == std::string_view::npos) return std::nullopt;
  const std::string_view flag = b.substr(i, q2 - i);
  if (flag != "true" && flag != "false") return std::nullopt;
  p.is_string = flag == "true";
  i = skip_ws(b, q2 + 1);
  if (i >= b.size() || b[i] != '>') return std::nullopt;
  std::string_view v = rtrim_ascii(b.substr(i + 1));
  if (v.empty() || v.back() != '<') return std::nullopt;
  p.value = std::string(v.substr(0, v.size() - 1));
  return p;
}

// Largest end <= e such that text[from, end) does not stop inside a UTF-8 sequence.
size_t utf8_boundary(std::string_view text, size_t from, size_t e) {
  for (size_t k = e; k > from && e - k < 4; --k) {
    const auto c = static_cast<unsigned char>(text[k - 1]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return (k - 1) + need > e ? k - 1 : e;
  }
  return e;
}
}  // namespace

class LenientMachine {
 public:
  explicit LenientMachine(ThinkingMode mode)
      : state_(mode == ThinkingMode::thinking ? State::start : State::content),
        reasoning_closed_(mode != ThinkingMode::thinking),
        text_pats_{std::string(kEos), std::string(kBos), std::string(kThinkStart), std::string(kThinkEnd), "<" + dsml_str(),
                   "</" + dsml_str(), dsml_str()},
        block_pats_{tag("<", "invoke"), tag("</", "tool_calls>"), std::string(kEos)},
        header_pats_{tag("<", "parameter"), tag("</", "invoke")},
        param_pats_{tag("/", "parameter")},
        after_param_pats_{tag("<", "parameter"), tag("</", "invoke"), std::string(kEos)},
        after_block_pats_{std::string(kEos), tag("<", "tool_calls")} {
    for (const auto& p : text_pats_)
      for (const char c : p) marker_byte_[static_cast<unsigned char>(c)] = true;
  }

  void feed(std::string_view chunk, std::vector<Delta>& out) {
    if (eof_) fail(Status::invalid_argument, "StreamParser: feed() after finish()");
    // Validate first (an incomplete character at the end may still be completed by the next chunk),
    // so a rejected chunk leaves the parser as it was.
    size_t complete_end = 0;
    const std::string_view unchecked = std::string_view(raw_).substr(utf8_ok_);
    std::string joined;
    std::string_view text = chunk;
    if (!unchecked.empty()) {
      joined = std::string(unchecked) + std::string(chunk);
      text = joined;
    }
    if (const size_t bad = first_invalid_utf8(text, true, &complete_end); bad != std::string_view::npos)
      fail(Status::invalid_argument, "completion text: invalid UTF-8 at byte offset {}", utf8_ok_ + bad);
    utf8_ok_ += complete_end;
    raw_.append(chunk);
    // Bounded pieces keep erasing a stray marker cheap (it moves only the rest of the piece); the
    // machine gives the same result for any split.
    constexpr size_t kPiece = 4096;
    size_t i = 0;
    do {
      buf_.append(chunk.substr(i, kPiece));
      run(out);
      i += kPiece;
    } while (i < chunk.size());
  }

  void finish(std::vector<Delta>& out) {
    if (eof_) return;
    if (utf8_ok_ < raw_.size())
      fail(Status::invalid_argument, "completion text: invalid UTF-8 at byte offset {} (truncated character)", utf8_ok_);
    eof_ = true;
    run(out);
    msg_.ended = saw_eos_ || block_closed_at_end_;
    if (saw_eos_ && pos_ < buf_.size()) msg_.warnings.push_back("text after the end-of-sentence marker ignored");
    if (!reasoning_closed_) msg_.warnings.push_back("reasoning not closed by </think> (output truncated?)");
  }

  const ParsedMessage& message() const { return msg_; }
  const std::string& text() const { return raw_; }
  bool saw_eos() const { return saw_eos_; }

 private:
  enum class State { start, reasoning, content, stray_tag, block, invoke_header, param, after_param, after_block, end };

  void emit_text(State field, size_t from, size_t to, std::vector<Delta>& out) {
    if (to <= from) return;
    const std::string_view s(buf_.data() + from, to - from);
    const bool reasoning = field == State::reasoning;
    (reasoning ? msg_.reasoning_content : msg_.content).append(s);
    push(out, reasoning ? Delta::Kind::reasoning : Delta::Kind::content, s, -1);
  }
  static void push(std::vector<Delta>& out, Delta::Kind kind, std::string_view s, int index) {
    if (!out.empty() && out.back().kind == kind && out.back().tool_index == index) {
      out.back().text.append(s);
    } else {
      out.push_back(Delta{kind, std::string(s), index});
    }
  }

  // Advances as far as the buffered text allows; returns when more text is needed (or at END).
  void run(std::vector<Delta>& out) {
    while (true) {
      const State before = state_;
      const size_t pos_before = pos_, edits_before = edits_;
      step(out);
      if (state_ == State::end) return;
      if (state_ == before && pos_ == pos_before && edits_ == edits_before) return;  // waiting for more text
    }
  }

  void step(std::vector<Delta>& out) {
    switch (state_) {
      case State::start: {
        const std::string_view head = std::string_view(buf_).substr(0, kThinkStart.size());
        if (buf_.size() < kThinkStart.size() && !eof_ && kThinkStart.starts_with(head)) return;
        if (head == kThinkStart) {
          pos_ = kThinkStart.size();  // the prompt already opened <think>; a repeated one is dropped
        }
        state_ = State::reasoning;
        return;
      }
      case State::reasoning:
      case State::content: return step_text(out);
      case State::stray_tag: {
        const size_t gt = buf_.find('>', std::max(stray_at_ + 1, gt_from_));
        if (gt == std::string::npos) gt_from_ = buf_.size();  // no '>' before here: not searched again
        if (gt == std::string::npos && !eof_) return;
        const size_t n = gt == std::string::npos ? buf_.size() - stray_at_ : gt + 1 - stray_at_;
        msg_.warnings.push_back("stray DSML markup dropped: " + buf_.substr(stray_at_, n));
        erase(stray_at_, n);
        state_ = return_state_;
        return;
      }
      case State::block: {
        auto [p, k] = search(block_pats_);
        if (p == std::string::npos) {
          if (eof_) {
            msg_.warnings.push_back("tool-call block not closed");
            pos_ = buf_.size();
            state_ = State::end;
          }
          return;
        }
        pos_ = p + block_pats_[k].size();
        if (k == 0) {
          state_ = State::invoke_header;
        } else if (k == 1) {
          state_ = State::after_block;
        } else {
          saw_eos_ = true;
          msg_.warnings.push_back("tool-call block not closed before the end-of-sentence marker");
          state_ = State::end;
        }
        return;
      }
      case State::invoke_header: {
        auto [p, k] = search(header_pats_);
        if (p == std::string::npos && !eof_) return;
        const size_t end = p == std::string::npos ? buf_.size() : p;
        start_invoke(std::string_view(buf_).substr(pos_, end - pos_));
        if (p == std::string::npos) {
          pos_ = buf_.size();
          end_invoke(out);
          state_ = State::end;
        } else {
          pos_ = p + header_pats_[k].size();
          if (k == 0) {
            state_ = State::param;
          } else {
            end_invoke(out);
            state_ = State::block;
          }
        }
        return;
      }
      case State::param: {
        auto [p, k] = search(param_pats_);
        if (p == std::string::npos) {
          if (!eof_) return;
          drop_invoke("text ends inside a parameter");
          pos_ = buf_.size();
          end_invoke(out);
          state_ = State::end;
          return;
        }
        add_param(std::string_view(buf_).substr(pos_, p - pos_));
        pos_ = p + param_pats_[k].size();
        state_ = State::after_param;
        return;
      }
      case State::after_param: {
        auto [p, k] = search(after_param_pats_);
        if (p == std::string::npos) {
          if (!eof_) return;
          pos_ = buf_.size();
          end_invoke(out);
          state_ = State::end;
          return;
        }
        pos_ = p + after_param_pats_[k].size();
        if (k == 0) {
          state_ = State::param;
        } else if (k == 1) {
          end_invoke(out);
          state_ = State::block;
        } else {
          end_invoke(out);
          saw_eos_ = true;
          state_ = State::end;
        }
        return;
      }
      case State::after_block: {
        // After a closed block only EOS or another block may follow (as in vLLM); other text is
        // dropped, which also keeps content from being glued together across a block.
        auto [p, k] = search(after_block_pats_);
        if (p == std::string::npos && !eof_) return;
        const size_t end = p == std::string::npos ? buf_.size() : p;
        if (std::string_view(buf_).substr(pos_, end - pos_).find_first_not_of(" \t\r\n") != std::string_view::npos)
          msg_.warnings.push_back("text after a tool-call block dropped: " + buf_.substr(pos_, end - pos_));
        if (p == std::string::npos) {
          block_closed_at_end_ = pos_ == buf_.size();
          pos_ = buf_.size();
          state_ = State::end;
          return;
        }
        pos_ = p + after_block_pats_[k].size();
        if (k == 0) {
          saw_eos_ = true;
          state_ = State::end;
        } else {
          state_ = State::block;
        }
        return;
      }
      case State::end: return;
    }
  }

  // Earliest pattern at or after pos_; remembers how far the text is known to be pattern-free so a
  // long parameter value is not rescanned on every chunk.
  std::pair<size_t, size_t> search(const std::vector<std::string>& pats) {
    if (scan_state_ != state_ || scan_from_ < pos_) {
      scan_state_ = state_;
      scan_from_ = pos_;
    }
    auto r = find_first(buf_, scan_from_, pats);
    if (r.first == std::string::npos) {
      size_t longest = 0;
      for (const auto& p : pats) longest = std::max(longest, p.size());
      scan_from_ = std::max(pos_, buf_.size() >= longest ? buf_.size() - longest + 1 : size_t{0});
    }
    return r;
  }

  // Text of the reasoning / content fields. Markers that end a field (EOS, </think> in reasoning,
  // a tool block) close it; markers that do not belong there are erased from the working buffer
  // and the text is scanned again, so the two sides of an erased marker can never join into a new
  // marker in the output.
  void step_text(std::vector<Delta>& out) {
    const State field = state_;
    auto [p, k] = search(text_pats_);
    // Up to two newlines right before a tool block belong to the block's syntax.
    auto trim_newlines = [&](size_t end) {
      for (int n = 0; n < 2 && end > pos_ && buf_[end - 1] == '\n'; ++n) --end;
      return end;
    };
    // Emits text before `end` that no later byte can change: not a partial marker, not newlines
    // that may precede a tool block, not an incomplete UTF-8 character.
    auto emit_safe = [&](size_t end) {
      // The emitted text must end in no proper prefix of a marker at all: an erasure further on
      // could otherwise complete one (e.g. "<｜end▁of▁sentence" + erased "｜DSML｜" + "｜>"). So the
      // held-back text starts at the last "clean" point, and the newlines right before it stay too.
      const size_t e = eof_ ? end : utf8_boundary(buf_, pos_, trim_newlines(clean_point(end)));
      emit_text(field, pos_, e, out);
      pos_ = e;
      hold_pos_ = e;  // clean_point's knowledge stays valid: e <= clean_
    };
    if (p == std::string::npos) return emit_safe(buf_.size());
    const std::string& pat = text_pats_[k];
    if (k == 4) {  // "<｜DSML｜": a tool block when "tool_calls" follows, else stray markup
      constexpr std::string_view kName = "tool_calls";
      const size_t name_at = p + pat.size();
      if (buf_.size() < name_at + kName.size() && !eof_) return emit_safe(p);
      if (std::string_view(buf_).substr(name_at, kName.size()) == kName) {
        emit_text(field, pos_, trim_newlines(p), out);
        if (field == State::reasoning) {
          msg_.warnings.push_back("tool-call block inside reasoning: reasoning ends there");
          reasoning_closed_ = true;
        }
        pos_ = name_at + kName.size();
        state_ = State::block;
        return;
      }
    }
    if (k == 4 || k == 5) {  // other DSML markup: erased up to its '>' once that arrives
      emit_safe(p);
      stray_at_ = p;
      gt_from_ = 0;
      return_state_ = field;
      state_ = State::stray_tag;
      return;
    }
    if (k == 0 || (k == 3 && field == State::reasoning)) {
      emit_text(field, pos_, p, out);
      pos_ = p + pat.size();
      if (k == 0) {
        saw_eos_ = true;
        state_ = State::end;
      } else {
        reasoning_closed_ = true;
        state_ = State::content;
      }
      return;
    }
    msg_.warnings.push_back("stray marker dropped: " + pat);
    erase(p, pat.size());
  }

  void erase(size_t at, size_t n) {
    buf_.erase(at, n);
    ++edits_;
    // Nothing before `at` changed: a pattern can only newly start where it would reach `at`.
    size_t longest = 0;
    for (const auto& p : text_pats_) longest = std::max(longest, p.size());
    const size_t reach = at >= longest ? at - longest + 1 : 0;
    if (scan_state_ != State::end) scan_from_ = std::max(pos_, std::min(scan_from_, reach));
    if (clean_ > at) {
      hold_pos_ = std::string::npos;  // clean_point's knowledge is stale
    } else {
      checked_ = std::min(checked_, at);
    }
  }

  // Whether no suffix of buf_[pos_, x) is a proper prefix of a text marker.
  bool is_clean(size_t x) const {
    if (x <= pos_ || !marker_byte_[static_cast<unsigned char>(buf_[x - 1])]) return true;
    return partial_suffix(std::string_view(buf_).substr(0, x), pos_, text_pats_) == 0;
  }

  // The largest clean point <= end. Amortised O(1) per byte: remembers that clean_ is clean and
  // every point in (clean_, checked_] is not; that stays true while pos_ only moves up to clean_
  // (a prefix reaching past clean_ would make clean_ unclean) and buf_ changes only after checked_.
  size_t clean_point(size_t end) {
    if (hold_pos_ != pos_ || clean_ > end || clean_ < pos_) {
      clean_ = checked_ = hold_pos_ = pos_;
    }
    for (size_t x = end; x > checked_; --x) {
      if (is_clean(x)) {
        clean_ = x;
        break;
      }
    }
    checked_ = std::max(checked_, end);
    return clean_;
  }

  // An invoke is emitted only when it ends, and only if every part of it parsed: a malformed or
  // cut-off call is dropped rather than sent with guessed arguments (spec §8.4).
  void start_invoke(std::string_view header) {
    invoke_open_ = true;
    param_names_.clear();
    pending_args_.clear();
    auto name = strict_invoke_name(header);
    if (!name) name = tolerant_invoke_name(header);
    pending_ok_ = name.has_value();
    if (!pending_ok_) {
      msg_.warnings.push_back("tool call with an unparsable header dropped: " + std::string(header));
      return;
    }
    pending_name_ = std::move(*name);
  }

  void add_param(std::string_view body) {
    if (!pending_ok_) return;
    auto p = strict_param(body);
    if (!p) p = tolerant_param(body);
    if (!p) {
      msg_.warnings.push_back("tool call '" + pending_name_ + "' dropped: unparsable parameter: " + std::string(body));
      pending_ok_ = false;
      return;
    }
    if (!param_names_.insert(p->name).second) {
      msg_.warnings.push_back("tool call '" + pending_name_ + "' dropped: duplicate parameter " + p->name);
      pending_ok_ = false;
      return;
    }
    pending_args_ += param_names_.size() == 1 ? "{" : ", ";
    pending_args_ += arguments_member(*p);
  }

  void drop_invoke(const char* why) {
    if (invoke_open_ && pending_ok_) msg_.warnings.push_back("tool call '" + pending_name_ + "' dropped: " + why);
    pending_ok_ = false;
  }

  void end_invoke(std::vector<Delta>& out) {
    if (!invoke_open_) return;
    invoke_open_ = false;
    if (!pending_ok_) return;
    pending_args_ += param_names_.empty() ? "{}" : "}";
    const int index = static_cast<int>(msg_.tool_calls.size());
    msg_.tool_calls.push_back({pending_name_, pending_args_});
    push(out, Delta::Kind::tool_call_name, pending_name_, index);
    push(out, Delta::Kind::tool_call_arguments, pending_args_, index);
  }

  std::string buf_;
  std::string raw_;  // the text exactly as fed (buf_ loses erased markers)
  size_t pos_ = 0;
  size_t stray_at_ = 0;
  size_t gt_from_ = 0;     // stray_tag: no '>' in buf_[stray_at_ + 1, gt_from_)
  size_t utf8_ok_ = 0;     // raw_[0, utf8_ok_) is valid UTF-8 ending on a character boundary
  size_t hold_pos_ = std::string::npos;  // pos_ for which clean_ / checked_ hold (npos: none)
  size_t clean_ = 0, checked_ = 0;
  size_t edits_ = 0;
  bool eof_ = false;
  State state_;
  bool reasoning_closed_;
  State return_state_ = State::content;
  State scan_state_ = State::end;
  size_t scan_from_ = 0;
  bool saw_eos_ = false;
  bool block_closed_at_end_ = false;
  bool invoke_open_ = false;
  bool pending_ok_ = false;
  std::string pending_name_, pending_args_;
  std::unordered_set<std::string> param_names_;  // of the open invoke (a set: O(1) duplicate check)
  ParsedMessage msg_;
  const std::vector<std::string> text_pats_, block_pats_, header_pats_, param_pats_, after_param_pats_, after_block_pats_;
  std::array<bool, 256> marker_byte_{};  // bytes that occur in some text marker
};

ParsedMessage parse_lenient(std::string_view text, ThinkingMode mode) {
  LenientMachine m(mode);
  std::vector<Delta> sink;
  m.feed(text, sink);
  m.finish(sink);
  return m.message();
}

}  // namespace dsv4::chat::detail

namespace dsv4::chat {

StreamParser::StreamParser(ThinkingMode mode, ParseMode parse_mode)
    : mode_(mode), parse_mode_(parse_mode), machine_(std::make_unique<detail::LenientMachine>(mode)) {
}
StreamParser::StreamParser(StreamParser&&) noexcept = default;
StreamParser& StreamParser::operator=(StreamParser&&) noexcept = default;
StreamParser::~StreamParser() = default;

std::vector<Delta> StreamParser::feed(std::string_view chunk) {
  if (finished_) fail(Status::invalid_argument, "StreamParser: feed() after finish()");
  std::vector<Delta> out;
  machine_->feed(chunk, out);
  return out;
}

std::vector<Delta> StreamParser::finish() {
  std::vector<Delta> out;
  if (finished_) return out;
  finished_ = true;
  machine_->finish(out);
  return out;
}

bool StreamParser::saw_eos() const { return machine_->saw_eos(); }

ParsedMessage StreamParser::result() const {
  if (!finished_) fail(Status::invalid_argument, "StreamParser: result() before finish()");
  if (parse_mode_ == ParseMode::strict)
    return parse_message_from_completion_text(machine_->text(), mode_, ParseMode::strict);
  return machine_->message();
}

}  // namespace dsv4::chat
