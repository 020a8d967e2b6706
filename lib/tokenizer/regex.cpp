// PCRE2 (UTF + UCP, JIT) wrapper for the pre-tokenizer patterns, which `tokenizers` compiles with
// Oniguruma. The two engines agree on \p{..} classes, alternation order and lookarounds; they
// differ on a few shorthands, which translate_onig_pattern rewrites into explicit properties:
// Oniguruma's Unicode \s is White_Space (PCRE2's also matches U+180E), its \w is L|M|N|Pc, \h is
// a hex digit (PCRE2: horizontal space), and \uHHHH is a code point escape.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cstdint>

#include "dsv4/error.hpp"
#include "tokenizer_impl.hpp"

namespace dsv4::tok {

MatchScratch::MatchScratch() {
  // One ovector pair is enough: only the whole match is used (a pattern with groups still reports
  // the whole match in pair 0, with rc == 0 meaning "ovector too small").
  md_ = pcre2_match_data_create(1, nullptr);
  mctx_ = pcre2_match_context_create(nullptr);
  if (!md_ || !mctx_) {
    if (md_) pcre2_match_data_free(md_);
    throw std::bad_alloc();
  }
}

MatchScratch::~MatchScratch() {
  if (mctx_) pcre2_match_context_free(mctx_);
  if (stack_) pcre2_jit_stack_free(stack_);
  pcre2_match_data_free(md_);
}

pcre2_match_context* MatchScratch::context(size_t subject_bytes) {
  // PCRE2's default limits (10 M backtracking steps, 20 MB of interpreter heap) are per call and
  // independent of the text, so one long match (a 10 M-character whitespace run is a single
  // `\s+` piece) would fail although the pattern is linear. The budget grows with the text the call
  // may look at instead: a linear pattern always fits, a pathological one still stops (with an
  // error) after a bounded amount of work.
  const uint64_t steps = std::min<uint64_t>(UINT32_MAX, 10'000'000 + 64 * static_cast<uint64_t>(subject_bytes));
  pcre2_set_match_limit(mctx_, static_cast<uint32_t>(steps));
  pcre2_set_depth_limit(mctx_, static_cast<uint32_t>(steps));
  // Interpreter heap (KiB): 20 MB plus 64 bytes per subject byte.
  pcre2_set_heap_limit(mctx_, static_cast<uint32_t>(std::min<uint64_t>(UINT32_MAX, 20'000 + subject_bytes / 16)));
  return mctx_;
}

void MatchScratch::grow_jit_stack() {
  if (stack_) return;
  stack_ = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, nullptr);
  if (!stack_) throw std::bad_alloc();
  pcre2_jit_stack_assign(mctx_, nullptr, stack_);
}

std::string translate_onig_pattern(std::string_view p, const std::string& what) {
  std::string out;
  out.reserve(p.size() + 16);
  int class_depth = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[++i];
      const bool in_class = class_depth > 0;
      switch (e) {
        case 's': out += "\\p{White_Space}"; break;
        case 'S': out += "\\P{White_Space}"; break;
        case 'w': out += in_class ? "\\p{L}\\p{M}\\p{N}\\p{Pc}" : "[\\p{L}\\p{M}\\p{N}\\p{Pc}]"; break;
        case 'h': out += in_class ? "0-9a-fA-F" : "[0-9a-fA-F]"; break;
        case 'W':
        case 'H':
          if (in_class) fail(Status::unsupported, "{}: \\{} inside a character class is not supported", what, e);
          out += e == 'W' ? "[^\\p{L}\\p{M}\\p{N}\\p{Pc}]" : "[^0-9a-fA-F]";
          break;
        case 'u': {
          if (i + 4 >= p.size()) fail(Status::format, "{}: truncated \\u escape", what);
          out += "\\x{";
          out.append(p.substr(i + 1, 4));
          out += "}";
          i += 4;
          break;
        }
        default:
          out += c;
          out += e;
      }
      continue;
    }
    if (c == '[') {
      if (class_depth > 0 && !(i + 1 < p.size() && p[i + 1] == ':'))
        fail(Status::unsupported, "{}: nested character classes are not supported", what);
      if (class_depth > 0) {  // POSIX bracket [:name:] — copy through the closing ":]"
        const size_t close = p.find(":]", i + 2);
        if (close == std::string_view::npos) fail(Status::format, "{}: unterminated [: in pattern", what);
        out.append(p.substr(i, close + 2 - i));
        i = close + 1;
        continue;
      }
      class_depth = 1;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == ']' && class_depth > 0) class_depth = 0;
    if (c == '&' && class_depth > 0 && i + 1 < p.size() && p[i + 1] == '&')
      fail(Status::unsupported, "{}: class intersection '&&' is not supported", what);
    out += c;
  }
  return out;
}

Regex::Regex(std::string_view onig_pattern, const std::string& what, bool literal) {
  const std::string pat = literal ? std::string(onig_pattern) : translate_onig_pattern(onig_pattern, what);
  int err = 0;
  PCRE2_SIZE erroff = 0;
  // Oniguruma's ^ and $ are line anchors (Ruby syntax); PCRE2_MULTILINE gives the same meaning.
  const uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | (literal ? PCRE2_LITERAL : 0);
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.data()), pat.size(), opts, &err, &erroff, nullptr);
  if (!code_) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof buf);
    fail(Status::format, "{}: regex does not compile at offset {}: {} (pattern {})", what, erroff,
         reinterpret_cast<const char*>(buf), pat);
  }
  // JIT may be unavailable (e.g. SELinux exec restrictions); the interpreter gives the same matches.
  jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(code_); }

bool Regex::find(std::string_view subject, size_t start, MatchScratch& ms, size_t& mbeg, size_t& mend) const {
  const auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
  // Input was validated as UTF-8 once per encode() call, so PCRE2's own check is skipped.
  pcre2_match_context* ctx = ms.context(subject.size() - std::min(start, subject.size()));
  int rc = jit_ ? pcre2_jit_match(code_, s, subject.size(), start, PCRE2_NO_UTF_CHECK, ms.match_data(), ctx)
                : pcre2_match(code_, s, subject.size(), start, PCRE2_NO_UTF_CHECK, ms.match_data(), ctx);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    ms.grow_jit_stack();
    rc = pcre2_jit_match(code_, s, subject.size(), start, PCRE2_NO_UTF_CHECK, ms.match_data(), ctx);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(rc, buf, sizeof buf);
    // Only a pathological pattern from the tokenizer file gets here (see MatchScratch::context).
    fail(Status::unsupported, "tokenizer regex match failed on a {}-byte piece of text: {}", subject.size(),
         reinterpret_cast<const char*>(buf));
  }
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(ms.match_data());
  mbeg = ov[0];
  mend = ov[1];
  return true;
}

bool Regex::match_prefix(std::string_view s, MatchScratch& ms, size_t& mend) const {
  const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0,
                             PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, ms.match_data(), ms.context(s.size()));
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) fail(Status::internal, "tokenizer regex match failed (code {})", rc);
  mend = pcre2_get_ovector_pointer(ms.match_data())[1];
  return true;
}

}  // namespace dsv4::tok
