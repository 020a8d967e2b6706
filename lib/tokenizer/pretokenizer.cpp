// Pre-tokenizer pipeline: each Split step runs its regex over every piece the previous step made
// (a piece is its own subject, so lookarounds never see past it), with `tokenizers`' match
// iteration (an empty match right after the previous match is skipped by one character) and its
// five split behaviours; the ByteLevel step comes last and only marks a virtual prefix space.
// Pieces are byte ranges of the input, so nothing is copied on the common path.
#include "dsv4/error.hpp"
#include "tokenizer_impl.hpp"

namespace dsv4::tok {
namespace {
// Calls f(begin, end) for each match of `re` in `subject`, iterating as `tokenizers` (via the onig
// crate) does: an empty match right where the previous match ended is skipped by one character.
template <typename F>
void for_each_match(const Regex& re, std::string_view subject, MatchScratch& ms, F&& f) {
  size_t search = 0, last_end = 0;
  bool have_last = false;
  while (search <= subject.size()) {
    size_t s, e;
    if (!re.find(subject, search, ms, s, e)) break;
    if (s == e && have_last && last_end == e) {
      if (search >= subject.size()) break;
      const uint8_t b = static_cast<uint8_t>(subject[search]);
      search += b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
      continue;
    }
    search = e;
    have_last = true;
    last_end = e;
    f(s, e);
  }
}

// Every match and every gap of `subject` in order, as (range, is_match).
void find_matches(const Regex& re, std::string_view subject, MatchScratch& ms,
                  std::vector<std::pair<Piece, bool>>& out) {
  out.clear();
  size_t prev = 0;
  for_each_match(re, subject, ms, [&](size_t s, size_t e) {
    if (prev != s) out.push_back({{static_cast<uint32_t>(prev), static_cast<uint32_t>(s), false}, false});
    out.push_back({{static_cast<uint32_t>(s), static_cast<uint32_t>(e), false}, true});
    prev = e;
  });
  if (prev != subject.size()) out.push_back({{static_cast<uint32_t>(prev), static_cast<uint32_t>(subject.size()), false}, false});
}
}  // namespace

void PreTokenizer::apply_split(const PreStep& st, std::string_view text, const Piece& p, PreScratch& ps,
                               MatchScratch& ms, std::vector<Piece>& out) const {
  const std::string_view subject = text.substr(p.begin, p.end - p.begin);
  auto emit = [&](uint32_t b, uint32_t e) {
    if (b != e) out.push_back({p.begin + b, p.begin + e, false});
  };
  if (st.behavior == SplitBehavior::isolated && !st.invert) {
    // Hot path: every match and every gap becomes a piece, with no intermediate list.
    size_t prev = 0;
    for_each_match(*st.regex, subject, ms, [&](size_t s, size_t e) {
      emit(static_cast<uint32_t>(prev), static_cast<uint32_t>(s));
      emit(static_cast<uint32_t>(s), static_cast<uint32_t>(e));
      prev = e;
    });
    emit(static_cast<uint32_t>(prev), static_cast<uint32_t>(subject.size()));
    return;
  }
  find_matches(*st.regex, subject, ms, ps.matches);
  auto& m = ps.matches;
  if (st.invert)
    for (auto& x : m) x.second = !x.second;
  switch (st.behavior) {
    case SplitBehavior::isolated:
      for (auto& [r, is_match] : m) emit(r.begin, r.end);
      break;
    case SplitBehavior::removed:
      for (auto& [r, is_match] : m)
        if (!is_match) emit(r.begin, r.end);
      break;
    case SplitBehavior::merged_with_previous: {
      // A match joins the piece before it (unless the piece before is itself a match).
      std::vector<Piece> acc;
      bool prev_match = false;
      for (auto& [r, is_match] : m) {
        if (is_match && !prev_match && !acc.empty()) acc.back().end = r.end;
        else acc.push_back(r);
        prev_match = is_match;
      }
      for (auto& r : acc) emit(r.begin, r.end);
      break;
    }
    case SplitBehavior::merged_with_next: {
      // Mirror image: walk backwards, a match joins the piece after it.
      std::vector<Piece> acc;
      bool prev_match = false;
      for (size_t k = m.size(); k-- > 0;) {
        auto& [r, is_match] = m[k];
        if (is_match && !prev_match && !acc.empty()) acc.back().begin = r.begin;
        else acc.push_back(r);
        prev_match = is_match;
      }
      for (size_t k = acc.size(); k-- > 0;) emit(acc[k].begin, acc[k].end);
      break;
    }
    case SplitBehavior::contiguous: {
      // Runs of consecutive matches (or consecutive non-matches) become one piece.
      std::vector<Piece> acc;
      bool prev_match = false;
      for (auto& [r, is_match] : m) {
        if (is_match == prev_match && !acc.empty()) acc.back().end = r.end;
        else acc.push_back(r);
        prev_match = is_match;
      }
      for (auto& r : acc) emit(r.begin, r.end);
      break;
    }
  }
}

void PreTokenizer::run(std::string_view text, uint32_t begin, uint32_t end, PreScratch& ps, MatchScratch& ms,
                       std::vector<Piece>& out) const {
  std::vector<Piece>* cur = &ps.a;
  std::vector<Piece>* next = &ps.b;
  cur->clear();
  if (begin != end) cur->push_back({begin, end, false});
  for (const PreStep& st : steps_) {
    next->clear();
    if (!st.byte_level) {
      for (const Piece& p : *cur) apply_split(st, text, p, ps, ms, *next);
    } else {
      for (const Piece& p : *cur) {
        const bool prefix = st.add_prefix_space && text[p.begin] != ' ';
        if (!st.regex) {
          next->push_back({p.begin, p.end, prefix});
          continue;
        }
        // ByteLevel's own regex sees the prefixed text; map offsets back, the prefix being
        // part of whichever piece starts at offset 0.
        std::string_view subject = text.substr(p.begin, p.end - p.begin);
        if (prefix) {
          ps.tmp.assign(1, ' ');
          ps.tmp.append(subject);
          subject = ps.tmp;
        }
        find_matches(*st.regex, subject, ms, ps.matches);
        const uint32_t shift = prefix ? 1 : 0;
        for (auto& [r, is_match] : ps.matches) {
          if (r.begin == r.end) continue;
          if (prefix && r.begin == 0) next->push_back({p.begin, p.begin + r.end - shift, true});
          else next->push_back({p.begin + r.begin - shift, p.begin + r.end - shift, false});
        }
      }
    }
    std::swap(cur, next);
  }
  out.assign(cur->begin(), cur->end());
}

}  // namespace dsv4::tok
