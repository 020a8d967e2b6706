// UTF-8 helpers shared by the tokenizer and the chat format: encoding of one code point and a
// strict validator. Encoding writes surrogates (U+D800–DFFF) in their 3-byte form, as Python keeps
// them in a str; callers that need strict UTF-8 validate with first_invalid_utf8. Code points above
// U+10FFFF are the caller's error.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dsv4 {

inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Offset of the first ill-formed UTF-8 sequence in `s` (Unicode Table 3-7: no overlongs, no
// surrogates, nothing above U+10FFFF), or std::string_view::npos when `s` is well-formed. With
// `allow_incomplete_tail`, a sequence cut off by the end of `s` that later bytes could still complete
// is not an error; `*complete_end` (if given) then receives where that tail starts (s.size() when
// there is none).
inline size_t first_invalid_utf8(std::string_view s, bool allow_incomplete_tail = false,
                                 size_t* complete_end = nullptr) {
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const auto b = static_cast<uint8_t>(s[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (b >= 0xC2 && b < 0xE0) {
      len = 2;
    } else if (b >= 0xE0 && b < 0xF0) {
      len = 3;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    for (size_t k = 1; k < len; ++k) {
      if (i + k >= n) {
        if (!allow_incomplete_tail) return i;
        if (complete_end) *complete_end = i;
        return std::string_view::npos;
      }
      const auto c = static_cast<uint8_t>(s[i + k]);
      if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xBF)) return i;
    }
    i += len;
  }
  if (complete_end) *complete_end = n;
  return std::string_view::npos;
}

}  // namespace dsv4
