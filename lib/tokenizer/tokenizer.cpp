// Tokenizer front end: encode (UTF-8 check → added-token split → pre-tokenize → BPE per piece →
// post-processor ids), decode (ByteLevel bytes of every id → lossy UTF-8) and vocabulary lookups.
// All per-call state lives on the stack of encode(); the only shared mutable state is the BPE word
// cache, which guards itself.
#include "dsv4/tokenizer.hpp"

#include "dsv4/error.hpp"
#include "tokenizer_impl.hpp"

namespace dsv4 {

Tokenizer::Tokenizer(std::unique_ptr<tok::TokenizerData> d) : d_(std::move(d)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
  if (const size_t bad = first_invalid_utf8(text); bad != std::string_view::npos)
    fail(Status::invalid_argument, "input text is not valid UTF-8: ill-formed sequence at byte offset {}", bad);
  if (text.size() >= (size_t{1} << 32) - 1)
    fail(Status::invalid_argument, "input text of {} bytes is too long to tokenize at once", text.size());
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 8);
  if (add_special) out.insert(out.end(), d_->post_prefix.begin(), d_->post_prefix.end());

  tok::MatchScratch ms;
  tok::PreScratch ps;
  tok::BpeScratch bs;
  std::vector<tok::Segment> segments;
  std::vector<tok::Piece> pieces;
  d_->added->split(text, segments, ms);
  for (const tok::Segment& seg : segments) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
      continue;
    }
    d_->pre.run(text, seg.begin, seg.end, ps, ms, pieces);
    for (const tok::Piece& p : pieces) {
      std::string_view word = text.substr(p.begin, p.end - p.begin);
      if (p.prefix_space) {
        bs.word.assign(1, ' ');
        bs.word.append(word);
        word = bs.word;
      }
      d_->bpe.encode_word(word, out, bs);
    }
  }
  if (add_special) out.insert(out.end(), d_->post_suffix.begin(), d_->post_suffix.end());
  return out;
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= d_->id_kind.size() || d_->id_kind[id] == 0)
    fail(Status::invalid_argument, "token id {} is not in the vocabulary of {} (size {})", id, d_->origin,
         d_->id_kind.size());
  return std::string_view(d_->bytes).substr(d_->bytes_off[id], d_->bytes_off[id + 1] - d_->bytes_off[id]);
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < d_->id_kind.size() && d_->id_kind[id] == 3;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  for (int32_t id : ids) {
    const std::string_view b = token_bytes(id);  // validates the id even when skipped
    if (skip_special && d_->id_kind[id] == 3) continue;
    bytes.append(b);
  }
  std::string out;
  out.reserve(bytes.size());
  tok::append_utf8_lossy(out, bytes, /*final=*/true);
  return out;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = d_->vocab.find(std::string(token));
  if (it == d_->vocab.end()) return std::nullopt;
  return it->second;
}

std::string Tokenizer::id_to_token(int32_t id) const {
  (void)token_bytes(id);  // range check with the usual message
  return d_->id_token[id];
}

int32_t Tokenizer::bos_id() const { return d_->bos; }
int32_t Tokenizer::eos_id() const { return d_->eos; }
size_t Tokenizer::vocab_size() const { return d_->id_kind.size(); }

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(&tokenizer), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  const std::string_view b = tokenizer_->token_bytes(id);
  std::string out;
  if (skip_special_ && tokenizer_->is_special(id)) return out;
  pending_.append(b);
  // Emit everything up to an incomplete sequence at the end, which the next token may complete.
  const size_t used = tok::append_utf8_lossy(out, pending_, /*final=*/false);
  pending_.erase(0, used);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  tok::append_utf8_lossy(out, pending_, /*final=*/true);
  pending_.clear();
  return out;
}

}  // namespace dsv4
