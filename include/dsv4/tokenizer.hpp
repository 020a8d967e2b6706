// Byte-level BPE tokenizer read from a Hugging Face `tokenizer.json`, reproducing the `tokenizers`
// library id for id: added tokens are split out first (special / lstrip / rstrip / normalized /
// single_word honoured), the rest goes through the `Split` regex sequence (PCRE2, JIT) and the
// ByteLevel alphabet, then BPE merges by rank. Decoding follows the ByteLevel decoder (invalid UTF-8
// becomes U+FFFD exactly as Rust's from_utf8_lossy does); StreamDecoder emits only complete UTF-8.
// Thread-safety: a Tokenizer is immutable after from_file except for an internal word cache guarded
// by a mutex, so every const method may be called concurrently. A StreamDecoder is single-owner.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4 {

namespace tok {
struct TokenizerData;  // lib/tokenizer/tokenizer_impl.hpp
}

class Tokenizer {
 public:
  // Loads and validates `tokenizer.json`. Throws dsv4::Error: Status::io (missing / unreadable),
  // Status::format (not JSON, missing or ill-typed field, bad regex), Status::unsupported (model
  // other than BPE, unknown normalizer / pre-tokenizer / decoder / post-processor). The BOS / EOS
  // ids come from the post-processor template, else a sibling `tokenizer_config.json`, else the
  // conventional DeepSeek / Llama / GPT names among the added tokens (-1 when none is found).
  // Bounds (Status::format): at most 512 MB of JSON nested at most 64 levels; the largest id below
  // 2 × (number of tokens) + 1024, so id tables never outgrow the file; post-processor ids must be
  // ids of the vocabulary. Encoding is linear in the text for the DeepSeek patterns: the regex step
  // budget grows with the text, so a long whitespace run encodes like any other valid text.
  static Tokenizer from_file(const std::string& path);
  // Same, from the JSON text itself; `origin` names it in error messages.
  static Tokenizer from_json(std::string_view json_text, const std::string& origin);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Token ids of `text` (which must be valid UTF-8: otherwise Status::invalid_argument naming the
  // byte offset). Added tokens are recognised anywhere in the text. `add_special` applies the
  // post-processor as `tokenizers` does with add_special_tokens=True (for DeepSeek's ByteLevel
  // post-processor that adds nothing; a TemplateProcessing one adds its BOS/EOS).
  std::vector<int32_t> encode(std::string_view text, bool add_special = false) const;
  // Text of `ids` (ByteLevel decoder, lossy UTF-8). `skip_special` drops added tokens marked special.
  // An id outside the vocabulary is Status::invalid_argument.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // Vocabulary lookups in the `tokenizer.json` spelling (byte-level alphabet, e.g. "Ġthe"; added
  // tokens by their content). id_to_token of an unknown id is Status::invalid_argument.
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::string id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;  // an added token with "special": true
  int32_t bos_id() const;
  int32_t eos_id() const;
  size_t vocab_size() const;  // one past the largest id (model vocabulary and added tokens)

  // Raw bytes the ByteLevel decoder gives for one id (may be a partial UTF-8 sequence).
  std::string_view token_bytes(int32_t id) const;

 private:
  explicit Tokenizer(std::unique_ptr<tok::TokenizerData> d);
  std::unique_ptr<tok::TokenizerData> d_;
};

// Incremental detokenizer for token-by-token output: push() returns the text that became complete
// (never a partial UTF-8 character); flush() returns what is left (an incomplete tail becomes
// U+FFFD). The concatenation of all results equals Tokenizer::decode of all pushed ids.
// Holds a reference to the tokenizer, which must outlive it.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  std::string push(int32_t id);
  std::string flush();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;  // bytes of an incomplete UTF-8 sequence (at most 3)
};

}  // namespace dsv4
