// Added-token splitting with `tokenizers`' AddedVocabulary semantics: leftmost-longest matching
// (a byte trie walked only where a token can start), then single_word / lstrip / rstrip applied to
// each match against the part of the text being split. Whitespace is Unicode White_Space and a
// word character is Rust regex's \w (Alphabetic, M, Nd, Pc, Join_Control), tested through PCRE2.
#include <algorithm>

#include "dsv4/error.hpp"
#include "tokenizer_impl.hpp"

namespace dsv4::tok {
namespace {
// Start of the last UTF-8 character of a non-empty valid string.
size_t last_char_start(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}
size_t first_char_len(std::string_view s) {
  const uint8_t b = static_cast<uint8_t>(s[0]);
  return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}
}  // namespace

void AddedVocab::Trie::add(std::string_view s, int32_t token) {
  if (token_at.empty()) token_at.push_back(-1);
  int32_t node = 0;
  for (char ch : s) {
    const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(ch);
    auto it = edges.find(key);
    if (it == edges.end()) {
      const int32_t child = static_cast<int32_t>(token_at.size());
      token_at.push_back(-1);
      it = edges.emplace(key, child).first;
    }
    node = it->second;
  }
  if (!s.empty()) first[static_cast<uint8_t>(s[0])] = true;
  token_at[node] = token;
  empty = false;
}

std::pair<size_t, int32_t> AddedVocab::Trie::longest_at(std::string_view s, size_t i) const {
  std::pair<size_t, int32_t> best{i, -1};
  int32_t node = 0;
  for (size_t j = i; j < s.size(); ++j) {
    const auto it = edges.find((static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(s[j]));
    if (it == edges.end()) break;
    node = it->second;
    if (token_at[node] >= 0) best = {j + 1, token_at[node]};
  }
  return best;
}

AddedVocab::AddedVocab(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& t = tokens_[i];
    if (t.content.empty()) continue;  // an empty token can never match
    (t.normalized ? normalized_ : raw_).add(t.content, static_cast<int32_t>(i));
  }
  trailing_space_ = std::make_unique<Regex>("\\p{White_Space}", "added-token whitespace");
  word_char_end_ = std::make_unique<Regex>("[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]",
                                           "added-token word character");
}

void AddedVocab::split(std::string_view text, std::vector<Segment>& out, MatchScratch& ms) const {
  out.clear();
  const uint32_t n = static_cast<uint32_t>(text.size());
  if (raw_.empty) {
    out.push_back({0, n, -1});
  } else {
    split_pass(raw_, text, 0, out, ms);
  }
  if (normalized_.empty) return;
  // Second pass over the parts the first one left; the normalizer is the identity, so the
  // normalized text is the text itself.
  std::vector<Segment> first;
  first.swap(out);
  for (const Segment& s : first) {
    if (s.id >= 0) {
      out.push_back(s);
      continue;
    }
    split_pass(normalized_, text.substr(s.begin, s.end - s.begin), s.begin, out, ms);
  }
}

void AddedVocab::split_pass(const Trie& trie, std::string_view s, uint32_t base, std::vector<Segment>& out,
                            MatchScratch& ms) const {
  auto is_space = [&](std::string_view ch) {
    size_t e;
    return trailing_space_->match_prefix(ch, ms, e);
  };
  auto is_word = [&](std::string_view ch) {
    size_t e;
    return word_char_end_->match_prefix(ch, ms, e);
  };
  size_t emitted = 0;  // end of what has been assigned to a segment
  size_t i = 0;
  while (i < s.size()) {
    if (!trie.first[static_cast<uint8_t>(s[i])]) {
      ++i;
      continue;
    }
    auto [stop, tok] = trie.longest_at(s, i);
    if (tok < 0) {
      ++i;
      continue;
    }
    size_t start = i;
    i = stop;  // resume after the raw match, also when it is discarded below
    const AddedToken& t = tokens_[tok];
    if (t.single_word) {
      const bool start_ok = start == 0 || !is_word(s.substr(last_char_start(s.substr(0, start))));
      const bool stop_ok = stop == s.size() || !is_word(s.substr(stop, first_char_len(s.substr(stop))));
      if (!start_ok || !stop_ok) continue;
    }
    if (t.lstrip) {
      size_t ns = start;
      while (ns > 0) {
        const size_t cs = last_char_start(s.substr(0, ns));
        if (!is_space(s.substr(cs, ns - cs))) break;
        ns = cs;
      }
      start = std::max(ns, emitted);  // spaces already consumed by a previous match stay there
    }
    if (t.rstrip) {
      while (stop < s.size()) {
        const size_t len = first_char_len(s.substr(stop));
        if (!is_space(s.substr(stop, len))) break;
        stop += len;
      }
    }
    if (emitted < start) out.push_back({base + static_cast<uint32_t>(emitted), base + static_cast<uint32_t>(start), -1});
    out.push_back({base + static_cast<uint32_t>(start), base + static_cast<uint32_t>(stop), t.id});
    // Matching resumes at the raw end of the match even when rstrip took spaces beyond it: a
    // token starting inside those spaces is still found (and both tokens are kept), as in
    // `tokenizers`, whose matches all come from one pass over the unstripped text.
    emitted = stop;
  }
  if (emitted < s.size()) out.push_back({base + static_cast<uint32_t>(emitted), base + static_cast<uint32_t>(s.size()), -1});
}

}  // namespace dsv4::tok
