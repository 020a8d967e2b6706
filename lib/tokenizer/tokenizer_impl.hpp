// Internal pieces of the tokenizer (private to lib/tokenizer): UTF-8 helpers, the PCRE2 regex
// wrapper, added-token splitting, the pre-tokenizer pipeline, the BPE model and the loaded data.
// Invariant: all text handled here is raw UTF-8 bytes of the caller's input; the ByteLevel alphabet
// is only used at the JSON boundary (vocab / merges / id_to_token), never on the hot path.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dsv4/utf8.hpp"

// pcre2.h is C and defines many macros; keep it out of this header.
struct pcre2_real_code_8;
struct pcre2_real_match_data_8;
struct pcre2_real_jit_stack_8;
struct pcre2_real_match_context_8;

namespace dsv4::tok {

// ---- utf8.cpp --------------------------------------------------------------------------------
// Appends `bytes` decoded the way Rust's String::from_utf8_lossy does (each maximal ill-formed
// subpart becomes one U+FFFD). When `final` is false an incomplete sequence at the very end, which
// later bytes could still complete, is left unconsumed. Returns the number of bytes consumed.
size_t append_utf8_lossy(std::string& out, std::string_view bytes, bool final);
using dsv4::append_utf8;
// GPT-2 byte-level alphabet: printable Latin-1 bytes map to themselves, the others to U+0100+n.
char32_t byte_to_char(uint8_t b);
int char_to_byte(char32_t c);  // -1 when `c` is not in the alphabet
// Decodes a byte-level token spelling into raw bytes; nullopt if a character is outside the alphabet.
std::optional<std::string> byte_level_decode(std::string_view token);
std::string byte_level_encode(std::string_view raw);

// ---- regex.cpp -------------------------------------------------------------------------------
// Per-call matching state (PCRE2 match data and, on demand, a larger JIT stack). Not shareable.
class MatchScratch {
 public:
  MatchScratch();
  ~MatchScratch();
  MatchScratch(const MatchScratch&) = delete;
  MatchScratch& operator=(const MatchScratch&) = delete;
  pcre2_real_match_data_8* match_data() { return md_; }
  // The match context for one call over `subject_bytes` bytes: limits scaled to the text.
  pcre2_real_match_context_8* context(size_t subject_bytes);
  void grow_jit_stack();  // after a JIT stack overflow: a 64 MB stack from then on

 private:
  pcre2_real_match_data_8* md_ = nullptr;
  pcre2_real_jit_stack_8* stack_ = nullptr;
  pcre2_real_match_context_8* mctx_ = nullptr;
};

// An Oniguruma-syntax pattern (as `tokenizers` compiles it) translated to PCRE2 and JIT-compiled.
class Regex {
 public:
  // Throws Status::format naming `what` when the pattern does not compile, Status::unsupported for
  // Oniguruma constructs PCRE2 cannot express.
  Regex(std::string_view onig_pattern, const std::string& what, bool literal = false);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // First match in subject[start..] (lookarounds see all of `subject`); false when none.
  bool find(std::string_view subject, size_t start, MatchScratch& ms, size_t& mbeg, size_t& mend) const;
  // Whether the whole of `s` matches at its start (anchored).
  bool match_prefix(std::string_view s, MatchScratch& ms, size_t& mend) const;

 private:
  pcre2_real_code_8* code_ = nullptr;
  bool jit_ = false;
};
// Oniguruma → PCRE2 translation of the class shorthands whose meaning differs (\s \S \w \W \h \H \u).
std::string translate_onig_pattern(std::string_view p, const std::string& what);

// ---- added_vocab.cpp -------------------------------------------------------------------------
struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, normalized = false, single_word = false;
};

struct Segment {
  uint32_t begin, end;
  int32_t id;  // added-token id, or -1 for text to pre-tokenize
};

// Splits text around added tokens the way `tokenizers`' AddedVocabulary does: first the tokens with
// normalized=false over the whole text, then the normalized ones inside each remaining part
// (the normalizer is the identity here); each pass is leftmost-longest, non-overlapping.
class AddedVocab {
 public:
  explicit AddedVocab(std::vector<AddedToken> tokens);
  void split(std::string_view text, std::vector<Segment>& out, MatchScratch& ms) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  bool empty() const { return tokens_.empty(); }

 private:
  struct Trie {
    std::unordered_map<uint64_t, int32_t> edges;  // (node << 8 | byte) → child
    std::vector<int32_t> token_at;                // node → index into tokens_ or -1
    std::array<bool, 256> first{};                // bytes that can start a token
    bool empty = true;
    void add(std::string_view s, int32_t token);
    // Longest token starting at s[i], as (end, token index); token index -1 when none.
    std::pair<size_t, int32_t> longest_at(std::string_view s, size_t i) const;
  };
  void split_pass(const Trie& trie, std::string_view text, uint32_t base, std::vector<Segment>& out,
                  MatchScratch& ms) const;
  std::vector<AddedToken> tokens_;
  Trie raw_, normalized_;
  std::unique_ptr<Regex> trailing_space_, word_char_end_;  // one-character tests
};

// ---- pretokenizer.cpp ------------------------------------------------------------------------
struct Piece {
  uint32_t begin, end;  // byte range in the encoded text
  bool prefix_space;    // ByteLevel add_prefix_space put a ' ' in front of it
};

enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

struct PreStep {
  std::unique_ptr<Regex> regex;  // null: ByteLevel without regex
  SplitBehavior behavior = SplitBehavior::isolated;
  bool invert = false;
  bool byte_level = false;        // the final ByteLevel step
  bool add_prefix_space = false;  // ByteLevel only
};

struct PreScratch {
  std::vector<Piece> a, b;
  std::vector<std::pair<Piece, bool>> matches;
  std::string tmp;
};

class PreTokenizer {
 public:
  PreTokenizer() = default;
  explicit PreTokenizer(std::vector<PreStep> steps) : steps_(std::move(steps)) {}
  // Pieces of text[seg.begin, seg.end) in order, into `out` (cleared first).
  void run(std::string_view text, uint32_t begin, uint32_t end, PreScratch& ps, MatchScratch& ms,
           std::vector<Piece>& out) const;

 private:
  void apply_split(const PreStep& st, std::string_view text, const Piece& p, PreScratch& ps,
                   MatchScratch& ms, std::vector<Piece>& out) const;
  std::vector<PreStep> steps_;
};

// ---- bpe.cpp ---------------------------------------------------------------------------------
struct BpeScratch {
  std::vector<int32_t> sym_id, sym_prev, sym_next;
  std::vector<std::pair<uint64_t, uint64_t>> heap;  // (rank << 32 | pos, left id << 32 | right id)
  std::vector<int32_t> word_ids;
  std::string word;
};

// Merge table: (left id, right id) → (rank, merged id), open addressing.
class MergeTable {
 public:
  void reserve(size_t n);
  // Inserts or overwrites; false when the pair was already present.
  bool insert(int32_t a, int32_t b, int32_t rank, int32_t merged);
  // rank (or -1) and merged id of the pair.
  inline std::pair<int32_t, int32_t> find(int32_t a, int32_t b) const {
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
    size_t i = hash(key) & mask_;
    while (true) {
      const Entry& e = slots_[i];
      if (e.key == key) return {e.rank, e.merged};
      if (e.key == kEmpty) return {-1, -1};
      i = (i + 1) & mask_;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Entry {
    uint64_t key = kEmpty;
    int32_t rank = -1, merged = -1;
  };
  static inline size_t hash(uint64_t k) { return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> 20); }
  std::vector<Entry> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

// Bounded cache word bytes → ids, shared by concurrent encode() calls; never blocks (a busy lock
// just means computing the word again).
class WordCache {
 public:
  bool lookup(std::string_view word, std::vector<int32_t>& out) const;  // appends on hit
  void insert(std::string_view word, const int32_t* ids, size_t n) const;

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Eq {
    using is_transparent = void;
    bool operator()(std::string_view a, std::string_view b) const { return a == b; }
  };
  static constexpr size_t kMaxEntries = 1 << 16;
  static constexpr size_t kMaxWordBytes = 256;  // longer words are rare; not worth the memory
  mutable std::mutex mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, Hash, Eq> map_;
};

class Bpe {
 public:
  std::array<int32_t, 256> byte_id{};  // id of each single byte, -1 if missing
  MergeTable merges;
  int32_t unk_id = -1;
  bool fuse_unk = false;
  bool ignore_merges = false;
  std::unordered_map<std::string, int32_t> raw_vocab;  // raw bytes → id, used with ignore_merges
  WordCache cache;

  // Appends the ids of one pre-tokenized word (raw bytes).
  void encode_word(std::string_view word, std::vector<int32_t>& out, BpeScratch& bs) const;

 private:
  void merge(std::string_view word, BpeScratch& bs) const;  // result in bs.word_ids
};

// ---- tokenizer.cpp ---------------------------------------------------------------------------
struct TokenizerData {
  std::string origin;  // file path, for messages
  std::unordered_map<std::string, int32_t> vocab;  // byte-level spelling (and added content) → id
  std::vector<std::string> id_token;               // id → spelling ("" for holes)
  std::vector<uint8_t> id_kind;                    // 0 hole, 1 model token, 2 added, 3 added special
  std::vector<uint32_t> bytes_off;                 // id → offset into `bytes` (size vocab+1)
  std::string bytes;                               // ByteLevel-decoder bytes of every id
  std::unique_ptr<AddedVocab> added;
  PreTokenizer pre;
  Bpe bpe;
  std::vector<int32_t> post_prefix, post_suffix;  // ids the post-processor adds around a sequence
  int32_t bos = -1, eos = -1;
};

}  // namespace dsv4::tok
