// UTF-8 validation / lossy decoding and the GPT-2 byte-level alphabet.
// Well-formedness follows Unicode Table 3-7 (no overlongs, no surrogates, nothing above U+10FFFF);
// lossy decoding replaces each maximal ill-formed subpart with one U+FFFD, which is what Rust's
// from_utf8_lossy (and therefore the `tokenizers` ByteLevel decoder) does.
#include <array>

#include "tokenizer_impl.hpp"

namespace dsv4::tok {
namespace {

// Length of the sequence a lead byte starts (0: not a lead byte) and the allowed range of the
// second byte (the later ones are always 80..BF).
struct Lead {
  uint8_t len, lo, hi;
};
constexpr Lead lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b < 0xC2) return {0, 0, 0};
  if (b < 0xE0) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b < 0xF0) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b < 0xF4) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Number of bytes of the well-formed prefix of a sequence starting at s[i] (stops at the first
// byte that cannot continue it, or at the end of input); `complete` tells whether it is whole.
size_t scan_sequence(std::string_view s, size_t i, bool& complete) {
  const Lead L = lead_info(static_cast<uint8_t>(s[i]));
  complete = false;
  if (L.len == 0) return 0;
  if (L.len == 1) {
    complete = true;
    return 1;
  }
  size_t k = 1;
  for (; k < L.len; ++k) {
    if (i + k >= s.size()) return k;
    const uint8_t c = static_cast<uint8_t>(s[i + k]);
    const uint8_t lo = k == 1 ? L.lo : 0x80, hi = k == 1 ? L.hi : 0xBF;
    if (c < lo || c > hi) return k;
  }
  complete = true;
  return k;
}

constexpr std::array<int32_t, 256> make_byte_to_char() {
  std::array<int32_t, 256> t{};
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    t[b] = printable ? b : next++;
  }
  return t;
}
constexpr std::array<int32_t, 256> kByteToChar = make_byte_to_char();

constexpr std::array<int16_t, 324> make_char_to_byte() {
  std::array<int16_t, 324> t{};
  for (auto& v : t) v = -1;
  for (int b = 0; b < 256; ++b) t[kByteToChar[b]] = static_cast<int16_t>(b);
  return t;
}
constexpr std::array<int16_t, 324> kCharToByte = make_char_to_byte();

}  // namespace

size_t append_utf8_lossy(std::string& out, std::string_view bytes, bool final) {
  size_t i = 0, run = 0;  // [run, i) is well-formed and not yet copied
  const size_t n = bytes.size();
  while (i < n) {
    if (static_cast<uint8_t>(bytes[i]) < 0x80) {
      ++i;
      continue;
    }
    bool complete;
    const size_t k = scan_sequence(bytes, i, complete);
    if (complete) {
      i += k;
      continue;
    }
    out.append(bytes.data() + run, i - run);
    if (i + k >= n && k > 0 && !final) return i;  // may still be completed by later bytes
    out.append("\xEF\xBF\xBD");
    i += k == 0 ? 1 : k;  // a maximal subpart is at least one byte
    run = i;
  }
  out.append(bytes.data() + run, n - run);
  return n;
}

char32_t byte_to_char(uint8_t b) { return static_cast<char32_t>(kByteToChar[b]); }

int char_to_byte(char32_t c) { return c < kCharToByte.size() ? kCharToByte[c] : -1; }

std::optional<std::string> byte_level_decode(std::string_view token) {
  // Token spellings come from JSON, so they are valid UTF-8; the alphabet is below U+0144, so
  // every character we accept is one or two bytes long.
  std::string raw;
  raw.reserve(token.size());
  for (size_t i = 0; i < token.size();) {
    const uint8_t b0 = static_cast<uint8_t>(token[i]);
    char32_t cp;
    if (b0 < 0x80) {
      cp = b0;
      i += 1;
    } else if ((b0 & 0xE0) == 0xC0 && i + 1 < token.size()) {
      cp = (static_cast<char32_t>(b0 & 0x1F) << 6) | (static_cast<uint8_t>(token[i + 1]) & 0x3F);
      i += 2;
    } else {
      return std::nullopt;
    }
    const int b = char_to_byte(cp);
    if (b < 0) return std::nullopt;
    raw.push_back(static_cast<char>(b));
  }
  return raw;
}

std::string byte_level_encode(std::string_view raw) {
  std::string s;
  s.reserve(raw.size() * 2);
  for (char c : raw) append_utf8(s, byte_to_char(static_cast<uint8_t>(c)));
  return s;
}

}  // namespace dsv4::tok
