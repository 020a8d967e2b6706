// tokenizer.json loading + encode/decode. Input starting with '{': a tokenizer.json, a NUL, then
// text to encode with it. Otherwise: the whole input is text for the real DeepSeek tokenizer
// (data/tokenizer/tokenizer.json, or $DSV4_FUZZ_TOKENIZER), loaded once. Invariants: only
// dsv4::Error escapes; encode of valid UTF-8 never fails; every id is in the vocabulary; the
// StreamDecoder's pieces add up to decode(); with the real tokenizer decode(encode(t)) == t.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "dsv4/error.hpp"
#include "dsv4/tokenizer.hpp"
#include "dsv4/utf8.hpp"
#include "fuzz_util.hpp"

using namespace dsv4;

namespace {
dsv4_fuzz::Tally& tally() { return dsv4_fuzz::tally("tokenizer.json + encode"); }

void exercise(const Tokenizer& t, std::string_view text, bool real) {
  const bool valid = first_invalid_utf8(text) == std::string_view::npos;
  std::vector<int32_t> ids;
  try {
    ids = t.encode(text, /*add_special=*/text.size() % 2 == 1);
  } catch (const Error& e) {
    FUZZ_CHECK(!valid || e.status() != Status::internal);
    // A pathological pattern may hit the regex limits (Status::unsupported); valid text with the
    // real tokenizer must always encode.
    FUZZ_CHECK(!valid || (!real && e.status() == Status::unsupported));
    tally().error(e.status());
    return;
  }
  FUZZ_CHECK(valid);
  for (int32_t id : ids) FUZZ_CHECK(id >= 0 && static_cast<size_t>(id) < t.vocab_size());
  const std::string decoded = t.decode(ids);
  StreamDecoder sd(t);
  std::string streamed;
  for (int32_t id : ids) streamed += sd.push(id);
  streamed += sd.flush();
  FUZZ_CHECK(streamed == decoded);
  if (real) {
    if (text.size() % 2 == 0) FUZZ_CHECK(decoded == text);
    for (int32_t id : ids) (void)t.id_to_token(id);
  }
  tally().ok();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  if (!in.empty() && in[0] == '{') {
    const size_t nul = in.find('\0');
    const std::string_view json = in.substr(0, nul);
    const std::string_view text = nul == std::string_view::npos ? std::string_view() : in.substr(nul + 1);
    try {
      const Tokenizer t = Tokenizer::from_json(json, "fuzz tokenizer.json");
      exercise(t, text, false);
    } catch (const Error& e) {
      FUZZ_CHECK(e.status() != Status::internal);
      tally().error(e.status());
    }
    return 0;
  }
  static const Tokenizer real = [] {
    const char* p = std::getenv("DSV4_FUZZ_TOKENIZER");
    return Tokenizer::from_file(p && *p ? p : DSV4_FUZZ_TOKENIZER);
  }();
  exercise(real, in, true);
  return 0;
}
