// Token sampling (contract in include/dsv4/sampler.hpp). Order: logit bias → repetition penalty
// (seen) → frequency / presence (generated) → greedy or temperature → top-k → softmax → min-p →
// top-p → a seeded splitmix64 draw; logprobs from the raw row.
//
// Cost per draw, V = vocabulary, no sort of the vocabulary and no allocation once the buffers grew:
//   greedy: one pass for the maximum (and the NaN / +inf check), one to find its lowest id.
//   no top-k, no top-p (the default; min-p allowed): exact rejection sampling, which needs no total
//     mass. One pass for the maxima m_g of groups of kEnvBlock tokens (the lanes of the vectorised
//     maximum), then trials: a group with probability ∝ len_g · w(m_g), a token of it uniformly,
//     accepted with probability w(l) / w(m_g) ≤ 1 (and min-p). Each group's maximum is accepted
//     for sure, so a trial succeeds with probability ≥ 1/kEnvBlock whatever the row (about 1/50 on
//     N(0, 2.5) logits at T = 1): O(V) compares, O(V / kEnvBlock) weights, and the trials.
//   top-k: a bounded selection of the k best (nth_element on at most 2k keys at a time), a sort
//     of those k: O(V + k log k); with top-p the prefix of those.
//   top-p without top-k (min-p allowed): one pass computes every weight (the total mass) and, for
//     the candidates, tokens above a bar some depth below the maximum, adds the weight into a
//     histogram of buckets keyed by the (scaled) distance below the maximum (monotone in the logit:
//     bucket order is rank order) and lists them. The walk from the top bucket finds the bucket
//     where the mass reaches top_p of the total; only that bucket's members are sorted by (logit
//     desc, id asc) and taken until it does. The depth is guessed from the group maxima and a
//     sample; a cut below the candidates costs a compare pass for a deeper band (exp only there).
//     O(V + C + B log B): C candidates (the kept tokens and a margin), B in the boundary bucket.
//   top-k and top-p end in one draw from their kept tokens walked in id order, so the same kept set
//   draws the same token for a seed whichever filter found it (the tests use this).
// The ranking is (logit desc, id asc) everywhere (a 64-bit key per candidate, so nth_element and
// sort compare integers), so every cut keeps exactly what a full sort of the vocabulary would keep.
//
// exp is a small polynomial (fast_exp2) rather than std::exp so that the passes vectorise; the
// same function gives every weight. On x86-64 the O(V) passes are also compiled for AVX2 and picked
// at load time (target_clones): the same IEEE operations in the same order per lane (no FMA: AVX2
// alone does not enable it), and every sum that decides a cut or a draw runs in a fixed order
// (explicit lanes, then a fixed tree), so both clones give the same draws for a seed. The trials
// and walks are scalar. (A build whose flags allow FMA contraction, -march=native say, may draw
// its own sequence, as deterministic.)
#include "dsv4/sampler.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <limits>

#include "dsv4/error.hpp"
#include "dsv4/rng.hpp"

namespace dsv4 {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kLog2e = 1.4426950408889634f;
// Independent accumulators: GCC vectorises a loop over 32 of them (8 and fewer get fully unrolled
// and then scalarised), which a plain float reduction never is without -ffast-math.
constexpr int64_t kLanes = 32;
constexpr int64_t kBlock = 512;     // tokens per block of the weight passes (a multiple of kLanes; 2 KB, in L1)
constexpr int64_t kEnvBlock = 128;  // tokens per group of the rejection draw's envelope
constexpr int64_t kBuckets = 1024;  // top-p's histogram at most
constexpr int kMaxLogprobs = 20;
constexpr float kGuessMargin = 0.5f;  // top-p: log2 units added to the guessed depth of the cut
constexpr float kBandStep = 1.0f;     // top-p: log2 units per deeper band when the guess fell short

// x86-64 ELF with GCC or Clang: the O(V) passes get an AVX2 clone chosen at load time. The
// helpers they call must be inlined into them (DSV4_INLINE) to be compiled for AVX2 as well.
#if defined(__x86_64__) && defined(__ELF__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define DSV4_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef DSV4_VECTOR_CLONES
#define DSV4_VECTOR_CLONES
#endif
#if defined(__GNUC__)
#define DSV4_INLINE inline __attribute__((always_inline))
#else
#define DSV4_INLINE inline
#endif

// 2^x for x ≤ 0: x = n + f with n = round(x), |f| ≤ 1/2, 2^f by a degree-5 polynomial (a
// relative minimax fit with 2^0 = 1 exact; 2e-7 relative error in float). One-step reduction is
// enough: x itself, (l − max)·log2(e)/T in float, already carries a relative rounding error of
// 6e-8. Below −124 the result is 0 (such a token weighs under 1e-37 of the maximum, and 0 keeps
// denormals, slow on some cores, out of the sums); −inf (a banned token) gives exactly 0. Written
// so that GCC vectorises loops over it without -ffast-math: no float select with arithmetic after
// it (under the default -ftrapping-math GCC turns that into a branch), the cut is a bit mask at
// the end, and n is read from the rounding sum's bits (no float→int conversion, undefined for −inf).
// kMayUnderflow = false drops the cut for callers that know x ≥ −124 (bit-identical results).
// 2^0 is exactly 1 and x < 0 gives less than 1 (the rejection draw relies on both).
template <bool kMayUnderflow = true>
DSV4_INLINE float fast_exp2(float x) {
  constexpr float lo = -124.0f;
  constexpr float round_magic = 12582912.0f;  // 1.5·2^23: t = magic + round(x) exactly
  const float t = x + round_magic;
  const float f = x - (t - round_magic);
  float p = 1.326472731e-03f;
  p = p * f + 9.671512991e-03f;
  p = p * f + 5.550733581e-02f;
  p = p * f + 2.402224243e-01f;
  p = p * f + 6.931470037e-01f;
  p = p * f + 1.0f;
  // bits(t) − bits(magic) = n (mod 2^32); + 127, shifted into the exponent field: 2^n.
  constexpr uint32_t bias = std::bit_cast<uint32_t>(round_magic) - 127u;
  const float scale = std::bit_cast<float>((std::bit_cast<uint32_t>(t) - bias) << 23);
  if constexpr (!kMayUnderflow) return p * scale;  // the caller knows x ≥ −124: the same value
  const uint32_t keep = x < lo ? 0u : ~0u;
  return std::bit_cast<float>(std::bit_cast<uint32_t>(p * scale) & keep);
}

// log2(e)/T. A temperature so small that it overflows acts as the smallest one that does not (an
// infinite scale would turn the maximum's 0·scale into NaN).
inline float weight_scale(float temperature) {
  return std::min(static_cast<float>(1.4426950408889634 / temperature), std::numeric_limits<float>::max());
}

// How a logit becomes a weight (unnormalised probability): 2^((l − max)·scale) with
// scale = log2(e)/T, and 0 below min_p (relative to the maximum's weight, which is exactly 1).
struct Weigh {
  float max, scale, min_p;
  DSV4_INLINE float operator()(float l) const {
    const float e = fast_exp2((l - max) * scale);
    const uint32_t keep = e >= min_p ? ~0u : 0u;
    return std::bit_cast<float>(std::bit_cast<uint32_t>(e) & keep);
  }
};

inline double uniform01(uint64_t& rng) { return static_cast<double>(splitmix64(rng) >> 11) * 0x1.0p-53; }

struct RowScan {
  float max = -kInf;
  bool finite = true;  // no NaN, no +inf (−inf is a banned token, allowed)
};

// One pass: the maximum and whether every value is < +inf (false for NaN too).
DSV4_VECTOR_CLONES RowScan scan_row(const float* v, int64_t n) {
  float mx[kLanes];
  uint32_t bad[kLanes];
  for (int64_t j = 0; j < kLanes; ++j) mx[j] = -kInf, bad[j] = 0;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) {
      const float x = v[i + j];
      mx[j] = x > mx[j] ? x : mx[j];
      bad[j] |= x < kInf ? 0u : 1u;
    }
  RowScan s;
  for (int64_t j = 0; j < kLanes; ++j) {
    s.max = std::max(s.max, mx[j]);
    if (bad[j]) s.finite = false;
  }
  for (; i < n; ++i) {
    if (!(v[i] < kInf)) s.finite = false;
    s.max = std::max(s.max, v[i]);
  }
  return s;
}

// The rejection envelope's groups: a chunk of kChunk tokens is kEnvBlock rows of kLanes, and group
// (chunk c, lane j) holds the tokens c·kChunk + j + kLanes·t, t < kEnvBlock: the lanes of the
// vectorised maximum pass, so the groups' maxima come without a horizontal reduction.
constexpr int64_t kChunk = kLanes * kEnvBlock;
inline int64_t group_count(int64_t n) { return (n + kChunk - 1) / kChunk * kLanes; }
inline int64_t group_of(int64_t i) { return i / kChunk * kLanes + i % kLanes; }
inline int64_t group_token(int64_t g, int64_t t) { return g / kLanes * kChunk + g % kLanes + kLanes * t; }
inline int64_t group_len(int64_t n, int64_t g) {
  const int64_t first = group_token(g, 0);
  return first < n ? std::min(kEnvBlock, (n - first + kLanes - 1) / kLanes) : 0;
}

// The same pass, also keeping the maximum of every group in gmax[group_count(n)] (−inf for a group
// of banned tokens or past the row's end). Doubles hold the floats exactly; the callers keep them
// in their double work buffer.
DSV4_VECTOR_CLONES RowScan group_maxima(const float* v, int64_t n, double* gmax) {
  uint32_t bad_any = 0;
  for (int64_t c0 = 0, g = 0; c0 < n; c0 += kChunk, g += kLanes) {
    const int64_t c1 = std::min(n, c0 + kChunk);
    float mx[kLanes];
    uint32_t bad[kLanes];
    for (int64_t j = 0; j < kLanes; ++j) mx[j] = -kInf, bad[j] = 0;
    int64_t i = c0;
    for (; i + kLanes <= c1; i += kLanes)
      for (int64_t j = 0; j < kLanes; ++j) {
        const float x = v[i + j];
        mx[j] = x > mx[j] ? x : mx[j];
        bad[j] |= x < kInf ? 0u : 1u;
      }
    for (int64_t j = 0; i + j < c1; ++j) {  // the row's last, partial row
      const float x = v[i + j];
      mx[j] = x > mx[j] ? x : mx[j];
      bad[j] |= x < kInf ? 0u : 1u;
    }
    for (int64_t j = 0; j < kLanes; ++j) {
      gmax[g + j] = mx[j];
      bad_any |= bad[j];
    }
  }
  RowScan s;
  s.finite = bad_any == 0;
  for (int64_t g = 0, ng = group_count(n); g < ng; ++g) s.max = std::max(s.max, static_cast<float>(gmax[g]));
  return s;
}

// A NaN would break every comparison of the ranking (nth_element and sort need a strict weak
// order): a NaN or +inf logit is an error of the model, not something to guess a token from. With
// bias / penalties applied, `row` is the sampler's copy: a value finite in `raw` and not in `row`
// overflowed there.
[[noreturn]] void fail_non_finite(const float* raw, const float* row, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!(raw[i] < kInf))
      fail(Status::backend, "sampler: logit of token {} is {} (the forward pass produced non-finite values)", i,
           raw[i]);
  for (int64_t i = 0; i < n; ++i)
    if (!(row[i] < kInf))
      fail(Status::invalid_argument, "sampler: logit of token {} overflows to {} after logit_bias / penalties", i,
           row[i]);
  fail(Status::internal, "sampler: non-finite logit reported but not found");
}

[[noreturn]] void fail_all_banned(int64_t n) {
  fail(Status::invalid_argument, "sampler: every token of the row ({} of them) is banned (logit -inf)", n);
}

// Lowest id holding `value` (greedy's tie rule); blocks are tested whole first so the common
// no-match case vectorises.
DSV4_VECTOR_CLONES int32_t first_equal(const float* v, int64_t n, float value) {
  constexpr int64_t step = 64;
  int64_t i = 0;
  for (; i + step <= n; i += step) {
    uint32_t any = 0;
    for (int64_t j = 0; j < step; ++j) any |= v[i + j] == value ? 1u : 0u;
    if (any) break;
  }
  for (; i < n; ++i)
    if (v[i] == value) return static_cast<int32_t>(i);
  return static_cast<int32_t>(n - 1);  // unreachable: `value` is the row's maximum
}

// Σ weight(v[i]) over [b0, b1), b1 − b0 ≤ kBlock: the weights into a block-sized buffer, then a
// pairwise sum in a fixed order. Every step is a plain elementwise loop, which GCC vectorises
// without -ffast-math (a running float sum it cannot reorder), and pairwise is also the more
// accurate order.
template <typename W>
DSV4_INLINE double block_sum(const float* v, int64_t b0, int64_t b1, const W& weight) {
  float w[kBlock];
  const int64_t n = b1 - b0;
  for (int64_t i = 0; i < n; ++i) w[i] = weight(v[b0 + i]);
  for (int64_t i = n; i < kBlock; ++i) w[i] = 0.0f;  // the row's last, partial block
  for (int64_t half = kBlock / 2; half >= 1; half /= 2)
    for (int64_t i = 0; i < half; ++i) w[i] += w[i + half];
  return w[0];
}

// Weight relative to a block's own maximum (the one-pass softmax).
template <bool kMayUnderflow = true>
struct WeighRel {
  float ref, scale;
  DSV4_INLINE float operator()(float l) const { return fast_exp2<kMayUnderflow>((l - ref) * scale); }
};

struct Softmax {
  float max = -kInf;
  double total = 0;
  bool finite = true;
};

// The one-pass softmax mass (the logprobs' normaliser): per block its maximum m_b (and the NaN /
// +inf check), then S_b = Σ 2^((l − m_b)·scale) while the block is in L1. blocks[0, nb) gets the
// block masses relative to the row maximum M, S_b · 2^((m_b − M)·scale); blocks[nb, 2nb) the block
// maxima. Stops at the first non-finite block (finite = false).
DSV4_VECTOR_CLONES Softmax block_softmax(const float* v, int64_t n, float scale, double* blocks) {
  const int64_t nb = (n + kBlock - 1) / kBlock;
  Softmax s;
  for (int64_t b0 = 0, bi = 0; b0 < n; b0 += kBlock, ++bi) {
    const int64_t b1 = std::min(n, b0 + kBlock);
    float mx[kLanes], mn[kLanes];
    uint32_t bad[kLanes];
    for (int64_t j = 0; j < kLanes; ++j) mx[j] = -kInf, mn[j] = kInf, bad[j] = 0;
    int64_t i = b0;
    for (; i + kLanes <= b1; i += kLanes)
      for (int64_t j = 0; j < kLanes; ++j) {
        const float x = v[i + j];
        mx[j] = x > mx[j] ? x : mx[j];
        mn[j] = x < mn[j] ? x : mn[j];
        bad[j] |= x < kInf ? 0u : 1u;
      }
    for (int64_t w = kLanes / 2; w >= 1; w /= 2)
      for (int64_t j = 0; j < w; ++j) {
        mx[j] = mx[j + w] > mx[j] ? mx[j + w] : mx[j];
        mn[j] = mn[j + w] < mn[j] ? mn[j + w] : mn[j];
        bad[j] |= bad[j + w];
      }
    float m = mx[0], lo = mn[0];
    uint32_t any_bad = bad[0];
    for (; i < b1; ++i) {
      any_bad |= v[i] < kInf ? 0u : 1u;
      m = std::max(m, v[i]);
      lo = std::min(lo, v[i]);
    }
    if (any_bad) {
      s.finite = false;
      return s;
    }
    // A block of banned tokens only weighs 0 (and l − m would be −inf − −inf there). A block
    // whose every weight stays in range (the common case) skips the underflow cut.
    if (m == -kInf)
      blocks[bi] = 0.0;
    else if ((lo - m) * scale >= -124.0f)
      blocks[bi] = block_sum(v, b0, b1, WeighRel<false>{m, scale});
    else
      blocks[bi] = block_sum(v, b0, b1, WeighRel<true>{m, scale});
    blocks[nb + bi] = m;
    s.max = std::max(s.max, m);
  }
  if (s.max == -kInf) return s;
  for (int64_t bi = 0; bi < nb; ++bi) {
    blocks[bi] *= fast_exp2((static_cast<float>(blocks[nb + bi]) - s.max) * scale);
    s.total += blocks[bi];
  }
  return s;
}

// Ranking key: larger = better by (logit desc, id asc). The high half is the float's bits mapped
// to an unsigned order (−0 first made +0: they compare equal as logits), the low half ~id.
DSV4_INLINE uint64_t rank_key(float v, int32_t id) {
  const uint32_t b = std::bit_cast<uint32_t>(v == 0.0f ? 0.0f : v);
  const uint32_t ordered = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return (static_cast<uint64_t>(ordered) << 32) | static_cast<uint32_t>(~static_cast<uint32_t>(id));
}
inline int32_t key_id(uint64_t key) { return static_cast<int32_t>(~static_cast<uint32_t>(key)); }

// The keys of the best tokens above `bar` into `keys` (unordered): at most k of them, exactly the
// top k when at least k tokens are above `bar`. A bounded buffer: tokens above the bar are
// appended, and when 2k have gathered nth_element cuts back to k and raises the bar to the k-th
// best value. A later token equal to that value ranks below it (larger id), so a strict > stays
// exact. Runs with nothing above the bar are skipped by one vectorised test.
DSV4_VECTOR_CLONES void collect_best(const float* v, int64_t n, int64_t k, float bar, std::vector<uint64_t>& keys) {
  keys.clear();
  const size_t cap = static_cast<size_t>(std::max<int64_t>(2 * k, k + 256));
  keys.reserve(cap);
  auto add = [&](int64_t i) {
    keys.push_back(rank_key(v[i], static_cast<int32_t>(i)));
    if (keys.size() == cap) {
      std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), std::greater<>());
      keys.resize(static_cast<size_t>(k));
      bar = v[key_id(keys.back())];
    }
  };
  // Runs of 32: one compare per token into a bit mask (a loop GCC keeps and vectorises rather
  // than unrolling it into scalar compares), then only the set bits are visited, without a
  // branch per token.
  constexpr int64_t step = 32;
  int64_t b0 = 0;
  for (; b0 + step <= n; b0 += step) {
    const float b = bar;  // a plain local: `bar` escapes into add()
    uint32_t mask = 0;
    for (uint32_t j = 0; j < step; ++j) mask |= v[b0 + j] > b ? 1u << j : 0u;
    for (; mask != 0; mask &= mask - 1) {
      const int64_t i = b0 + std::countr_zero(mask);
      if (v[i] > bar) add(i);  // the bar may rise within the run
    }
  }
  for (int64_t i = b0; i < n; ++i)
    if (v[i] > bar) add(i);
  if (keys.size() > static_cast<size_t>(k)) {
    std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), std::greater<>());
    keys.resize(static_cast<size_t>(k));
  }
}

// The keys of the min(k, #tokens above −inf) best tokens into `keys`, sorted best first. A first
// bar from a strided sample of the row (its value with about 2k tokens expected at or above it)
// lets most of the row fail the vectorised test; when fewer than k tokens reach it (a row whose
// sample misleads, many ties), the selection runs again from −inf. Either way the result is exact.
void select_best(const float* v, int64_t n, int64_t k, std::vector<uint64_t>& keys) {
  keys.clear();
  if (k <= 0) return;
  constexpr int64_t sample = 512;
  float bar = -kInf;
  if (n >= 8 * sample && 8 * k <= n) {
    float s[sample];
    for (int64_t j = 0; j < sample; ++j) s[j] = v[j * n / sample];
    // Rank r (0 = best): about (r + 1)·n/sample tokens at or above it; r ≥ 7 makes "fewer than
    // k" unlikely for any k.
    const int64_t r = std::min<int64_t>(sample - 1, std::max<int64_t>(7, 2 * k * sample / n));
    std::nth_element(s, s + r, s + sample, std::greater<>());
    bar = std::nextafter(s[r], -kInf);  // "> bar" keeps the value itself
  }
  collect_best(v, n, k, bar, keys);
  if (static_cast<int64_t>(keys.size()) < k && bar > -kInf) collect_best(v, n, k, -kInf, keys);
  std::sort(keys.begin(), keys.end(), std::greater<>());
}

// The work buffers of a draw: prob (doubles: the group maxima [0, ng), then the path's own),
// cand (int32: the rejection draw's guide table; top-p's candidate weights), keys (ranking keys,
// top-p's candidates, kept entries). They only grow: a smaller resize would make the next larger
// one zero the difference again.
struct Buffers {
  std::vector<int32_t>& cand;
  std::vector<double>& prob;
  std::vector<uint64_t>& keys;
  int64_t ng;
};
template <typename T>
T* at_least(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

// ---- No top-k, no top-p: rejection sampling ----------------------------------------------------

// One draw ∝ weight(l) (relative to the row maximum, 0 below min-p) from the group maxima
// gmax[0, ng) of group_maxima, without the total mass. Envelope: every token of group g weighs at
// most e_g = weight(m_g), so a group is picked with probability ∝ len_g·e_g (prefix sums, and a
// guide table of ng entries for an O(1) lookup), a token of it uniformly, and accepted with
// probability a = 2^((l − m_g)·scale) ∈ [0, 1] when it passes min-p: P(token) ∝ e_g · a = weight(l)
// up to the rounding of the split. The group maximum has a = 1, so a trial succeeds with
// probability ≥ 1/kEnvBlock: kEnvBlock trials on average at worst (about 50 on N(0, 2.5) logits at
// T = 1). Three splitmix64 outputs per trial. Scalar and in a fixed order: the same draws on
// every CPU.
int32_t draw_rejection(const float* row, int64_t V, const Weigh& weight, const Buffers& buf, uint64_t& rng) {
  const int64_t ng = buf.ng;
  double* prefix = at_least(buf.prob, 2 * ng) + ng;
  const double* gmax = buf.prob.data();
  int32_t* guide = at_least(buf.cand, ng);
  double total = 0;
  for (int64_t g = 0; g < ng; ++g) {  // a group of banned tokens, or past the row, weighs 0
    total += static_cast<double>(weight(static_cast<float>(gmax[g]))) * static_cast<double>(group_len(V, g));
    prefix[g] = total;
  }
  // guide[k] = the first group whose prefix passes k/ng of the total.
  for (int64_t k = 0, g = 0; k < ng; ++k) {
    const double t = total * (static_cast<double>(k) / static_cast<double>(ng));
    while (g < ng - 1 && prefix[g] <= t) ++g;
    guide[k] = static_cast<int32_t>(g);
  }
  for (;;) {
    const double u = uniform01(rng), t = u * total;
    if (!(t < total)) continue;  // rounding put u·total at the very end: draw again
    int64_t g = guide[std::min<int64_t>(ng - 1, static_cast<int64_t>(u * static_cast<double>(ng)))];
    while (g > 0 && prefix[g - 1] > t) --g;
    while (prefix[g] <= t) ++g;  // stops at the last group with mass at the latest: its prefix is the total
    const int64_t i = group_token(g, static_cast<int64_t>(splitmix64(rng) % static_cast<uint64_t>(group_len(V, g))));
    const float l = row[i];
    const float a = fast_exp2((l - static_cast<float>(gmax[g])) * weight.scale);
    if (uniform01(rng) < a && weight(l) > 0.0f) return static_cast<int32_t>(i);
  }
}

// ---- top-k and top-p: the kept list ------------------------------------------------------------
//
// Both end in a list of the kept tokens, entries id << 32 | bits(weight) in id order, and one draw
// from it: a uniform times the list's mass, walked in id order. So the draw depends on the kept
// set only, not on the filter that found it: top-k = K and a top-p that keeps the same K tokens
// draw the same token for a seed.
DSV4_INLINE uint64_t kept_entry(int64_t id, float w) {
  return static_cast<uint64_t>(id) << 32 | std::bit_cast<uint32_t>(w);
}
DSV4_INLINE int32_t entry_id(uint64_t e) { return static_cast<int32_t>(e >> 32); }
DSV4_INLINE double entry_weight(uint64_t e) { return std::bit_cast<float>(static_cast<uint32_t>(e)); }

// One draw from kept[0, n) (id order): block sums of 64 entries, the block where u·total falls, a
// walk inside it (its last positive weight when its sum in that order falls short by a rounding).
int32_t draw_list(const uint64_t* kept, int64_t n, double* blocks, uint64_t& rng) {
  constexpr int64_t kRun = 64;
  const int64_t nb = (n + kRun - 1) / kRun;
  double total = 0;
  for (int64_t b = 0; b < nb; ++b) {
    double lanes[8] = {};
    const int64_t e0 = b * kRun, e1 = std::min(n, e0 + kRun);
    int64_t e = e0;
    for (; e + 8 <= e1; e += 8)
      for (int64_t j = 0; j < 8; ++j) lanes[j] += entry_weight(kept[e + j]);
    for (int64_t j = 0; e < e1; ++e, ++j) lanes[j] += entry_weight(kept[e]);
    blocks[b] = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
    total += blocks[b];
  }
  const double u = uniform01(rng) * total;
  double cum = 0;
  int64_t b = 0;
  while (b < nb - 1 && !(u < cum + blocks[b])) cum += blocks[b++];
  const int64_t e0 = b * kRun, e1 = std::min(n, e0 + kRun);
  int64_t last = e0;
  for (int64_t e = e0; e < e1; ++e) {
    const double w = entry_weight(kept[e]);
    if (w > 0) last = e;
    cum += w;
    if (u < cum) return entry_id(kept[e]);
  }
  return entry_id(kept[last]);
}

// top-k (with or without top-p): the k best, sorted; top-p's prefix of them; those with a positive
// weight (min-p) kept.
int32_t draw_top_k(const SamplerParams& p, const float* row, int64_t V, const Weigh& weight, uint64_t& rng,
                   const Buffers& buf) {
  auto& keys = buf.keys;
  select_best(row, V, p.top_k, keys);
  const int64_t n = static_cast<int64_t>(keys.size());
  double mass = 0;
  for (int64_t j = 0; j < n; ++j) {  // the weights into the keys' low halves (the ids stay in reach)
    const int32_t id = key_id(keys[static_cast<size_t>(j)]);
    const float w = weight(row[id]);
    keys[static_cast<size_t>(j)] = kept_entry(id, w);
    mass += w;
  }
  int64_t keep = n;
  if (p.top_p < 1.0f) {  // the smallest prefix of the k whose mass reaches top_p of theirs
    const double target = static_cast<double>(p.top_p) * mass;
    double cum = 0;
    for (int64_t j = 0; j < n; ++j) {
      cum += entry_weight(keys[static_cast<size_t>(j)]);
      if (cum >= target) {
        keep = j + 1;
        break;
      }
    }
  }
  int64_t kept = 0;
  for (int64_t j = 0; j < keep; ++j)
    if (entry_weight(keys[static_cast<size_t>(j)]) > 0) keys[static_cast<size_t>(kept++)] = keys[static_cast<size_t>(j)];
  std::sort(keys.begin(), keys.begin() + kept);
  return draw_list(keys.data(), kept, at_least(buf.prob, buf.ng + kept / 64 + 1) + buf.ng, rng);
}

// ---- top-p without top-k: the mass histogram ----------------------------------------------------

// The bucket of a token: its distance below the maximum in log2 units of weight,
// −(l − max)·scale, times `per_unit`, truncated, at most `last`. Monotone: a larger logit never
// lands in a later bucket, equal logits land together.
struct Bucket {
  float max, scale, per_unit, last;
  DSV4_INLINE uint32_t operator()(float l) const {
    const float d = -((l - max) * scale) * per_unit;
    return static_cast<uint32_t>(static_cast<int32_t>(d < last ? d : last));
  }
};

// Candidates into the histogram and, through block-sized buffers, the lists: keys (bucket << 32 |
// id) and ws (the weight's bits). Held by value on the pass's stack so that the bucket's parameters
// stay in registers.
struct Collector {
  Bucket bucket;
  double* hist;
  std::vector<uint64_t>& keys;
  std::vector<int32_t>& ws;
  int64_t n = 0;
  uint64_t kbuf[kBlock];  // not initialised: written before read
  int32_t wbuf[kBlock];
  Collector(const Bucket& b, double* h, std::vector<uint64_t>& k, std::vector<int32_t>& w)
      : bucket(b), hist(h), keys(k), ws(w) {}
  DSV4_INLINE void add(float l, float w, int64_t id) {
    const uint32_t k = bucket(l);
    hist[k] += w;
    kbuf[n] = static_cast<uint64_t>(k) << 32 | static_cast<uint64_t>(id);
    wbuf[n++] = std::bit_cast<int32_t>(w);
  }
  DSV4_INLINE void flush() {  // at most kBlock adds between two flushes
    keys.insert(keys.end(), kbuf, kbuf + n);
    ws.insert(ws.end(), wbuf, wbuf + n);
    n = 0;
  }
};

// Whether any of v[0, 32) is above `bar` (or in (lo, hi]), and which ones with a positive weight w,
// as a bit mask: vectorised tests of a run.
DSV4_INLINE bool any_above(const float* v, float bar) {
  uint32_t any = 0;
  for (int64_t j = 0; j < 32; ++j) any |= v[j] > bar ? 1u : 0u;
  return any != 0;
}
DSV4_INLINE bool any_in(const float* v, float lo, float hi) {
  uint32_t any = 0;
  for (int64_t j = 0; j < 32; ++j) any |= (v[j] > lo) & (v[j] <= hi) ? 1u : 0u;
  return any != 0;
}
DSV4_INLINE uint32_t candidate_mask(const float* v, const float* w, float bar) {
  uint32_t mask = 0;
  for (uint32_t j = 0; j < 32; ++j) mask |= (v[j] > bar) & (w[j] > 0.0f) ? 1u << j : 0u;
  return mask;
}

// One pass over the row: the total weight, and the candidates, tokens above `bar` with a positive
// weight, into the histogram and the lists (in id order). The weights of a block of kBlock go into
// kLanes float sums (a fixed order), added up pairwise into the block's sum, added in double into
// the total (as exact as the per-block sums of the plain passes); the candidates of a run of 32 are
// looked for only when a vectorised test finds one.
template <bool kMinP>
DSV4_INLINE double mass_pass_body(const float* v, int64_t n, const Weigh& weight, float bar, const Bucket& bucket,
                                  double* hist, std::vector<uint64_t>& keys, std::vector<int32_t>& ws) {
  const Weigh wt = weight;
  auto weigh = [&](float l) { return kMinP ? wt(l) : fast_exp2((l - wt.max) * wt.scale); };
  Collector out(bucket, hist, keys, ws);
  double total = 0;
  for (int64_t b0 = 0; b0 < n; b0 += kBlock) {
    const int64_t len = std::min(kBlock, n - b0);
    const float* x = v + b0;
    float w[kBlock], acc[kLanes];
    for (int64_t j = 0; j < kLanes; ++j) acc[j] = 0.0f;
    int64_t i = 0;
    for (; i + kLanes <= len; i += kLanes)
      for (int64_t j = 0; j < kLanes; ++j) {
        w[i + j] = weigh(x[i + j]);
        acc[j] += w[i + j];
      }
    for (; i < len; ++i) {
      w[i] = weigh(x[i]);
      acc[i - (len / kLanes) * kLanes] += w[i];
    }
    for (int64_t j = 0; j < 16; ++j) acc[j] += acc[j + 16];
    for (int64_t j = 0; j < 8; ++j) acc[j] += acc[j + 8];
    for (int64_t j = 0; j < 4; ++j) acc[j] += acc[j + 4];
    for (int64_t j = 0; j < 2; ++j) acc[j] += acc[j + 2];
    total += static_cast<double>(acc[0] + acc[1]);
    int64_t g = 0;
    for (; g + 32 <= len; g += 32) {
      if (!any_above(x + g, bar)) continue;
      for (uint32_t mask = candidate_mask(x + g, w + g, bar); mask != 0; mask &= mask - 1) {
        const int64_t j = g + std::countr_zero(mask);
        out.add(x[j], w[j], b0 + j);
      }
    }
    for (int64_t j = g; j < len; ++j)
      if (x[j] > bar && w[j] > 0.0f) out.add(x[j], w[j], b0 + j);
    out.flush();
  }
  return total;
}
DSV4_VECTOR_CLONES double mass_pass(const float* v, int64_t n, const Weigh& weight, float bar, const Bucket& bucket,
                                    double* hist, std::vector<uint64_t>& keys, std::vector<int32_t>& ws) {
  return mass_pass_body<false>(v, n, weight, bar, bucket, hist, keys, ws);
}
DSV4_VECTOR_CLONES double mass_pass_min_p(const float* v, int64_t n, const Weigh& weight, float bar,
                                          const Bucket& bucket, double* hist, std::vector<uint64_t>& keys,
                                          std::vector<int32_t>& ws) {
  return mass_pass_body<true>(v, n, weight, bar, bucket, hist, keys, ws);
}

// The tokens in (lo, hi] with a positive weight into the histogram and the lists (in id order): a
// deeper band of candidates after mass_pass (a compare pass; exp only for the band's tokens).
DSV4_VECTOR_CLONES void band_pass(const float* v, int64_t n, const Weigh& weight, float lo, float hi,
                                  const Bucket& bucket, double* hist, std::vector<uint64_t>& keys,
                                  std::vector<int32_t>& ws) {
  const Weigh wt = weight;
  Collector out(bucket, hist, keys, ws);
  auto visit = [&](int64_t j) {
    const float w = wt(v[j]);
    if (w > 0.0f) out.add(v[j], w, j);
  };
  for (int64_t b0 = 0; b0 < n; b0 += kBlock) {
    const int64_t b1 = std::min(n, b0 + kBlock);
    int64_t g = b0;
    for (; g + 32 <= b1; g += 32) {
      if (!any_in(v + g, lo, hi)) continue;
      uint32_t mask = 0;
      for (uint32_t j = 0; j < 32; ++j) mask |= (v[g + j] > lo) & (v[g + j] <= hi) ? 1u << j : 0u;
      for (; mask != 0; mask &= mask - 1) visit(g + std::countr_zero(mask));
    }
    for (; g < b1; ++g)
      if (v[g] > lo && v[g] <= hi) visit(g);
    out.flush();
  }
}

// How deep below the maximum (log2 units of weight) top-p's cut probably lies, from the group
// maxima (exact: each group's heaviest token) and a strided sample of the other tokens, weighted
// up, in bins of 1/4 unit, plus kGuessMargin; +inf past 32 units. Only the cost depends on it: too
// shallow costs a pass over the row without exp, too deep more candidates.
DSV4_VECTOR_CLONES float guess_depth(const float* row, int64_t V, const Weigh& weight, float top_p,
                                     const double* gmax, int64_t ng) {
  constexpr int kBins = 128;
  constexpr float kPerUnit = 4.0f;
  constexpr int64_t kSample = 1024, kStep = 256;
  double bins[kBins] = {};
  // Weights and bins of l[0, n) (vectorised), then into the bins.
  float l[kStep], e[kStep];
  int32_t at[kStep];
  auto add = [&](int64_t n, double times) {
    for (int64_t j = 0; j < n; ++j) {
      e[j] = weight(l[j]);
      const float d = -((l[j] - weight.max) * weight.scale) * kPerUnit;
      at[j] = static_cast<int32_t>(d < kBins - 1 ? d : kBins - 1);  // −inf gives e = 0: its bin is unused
    }
    for (int64_t j = 0; j < n; ++j)
      if (e[j] > 0.0f) bins[at[j]] += static_cast<double>(e[j]) * times;
  };
  int64_t groups = 0;
  for (int64_t g0 = 0; g0 < ng; g0 += kStep) {
    const int64_t n = std::min(kStep, ng - g0);
    for (int64_t j = 0; j < n; ++j) {
      l[j] = static_cast<float>(gmax[g0 + j]);
      groups += l[j] > -kInf;
    }
    add(n, 1.0);
  }
  const int64_t samples = std::min(kSample, V);
  const double times = static_cast<double>(std::max<int64_t>(0, V - groups)) / static_cast<double>(samples);
  for (int64_t s0 = 0; s0 < samples; s0 += kStep) {
    const int64_t n = std::min(kStep, samples - s0);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = (s0 + j) * V / samples;
      l[j] = row[i] != static_cast<float>(gmax[group_of(i)]) ? row[i] : -kInf;  // a group maximum: counted
    }
    add(n, times);
  }
  double total = 0;
  for (double x : bins) total += x;
  const double target = static_cast<double>(top_p) * total;
  double cum = 0;
  for (int k = 0; k < kBins - 1; ++k) {
    cum += bins[k];
    if (cum >= target) return static_cast<float>(k + 1) / kPerUnit + kGuessMargin;
  }
  return kInf;
}

// top-p (and min-p) without top-k: the smallest prefix of the ranking whose mass reaches top_p of
// the total. Candidates are the tokens above a bar, a depth below the maximum (log2 units: the
// guess, then deeper bands). Buckets are monotone in the logit, so the buckets before bucket(bar)
// hold every token they will ever hold, and bucket(bar)'s candidates rank above its other tokens:
// the walk over those buckets is exact. Every bucket before the boundary bucket is kept, and the
// boundary bucket's members by rank until the mass reaches the target.
int32_t draw_top_p(const SamplerParams& p, const float* row, int64_t V, const Weigh& weight, uint64_t& rng,
                   const Buffers& buf) {
  // Depths that surely hold the cut: every positive weight is at most 124 units down (fast_exp2
  // gives 0 below), at most −log2(min_p) (plus fast_exp2's error) with min-p; past
  // log2(V / (1 − top_p)) + 1 the tail weighs under half of (1 − top_p) times the maximum's
  // weight 1, so the cut lies above it (up to rounding: a last pass takes every token).
  float range = std::min(125.0f, static_cast<float>(std::log2(static_cast<double>(V) / (1.0 - p.top_p))) + 1.0f);
  if (p.min_p > 0.0f) range = std::min(range, -std::log2(p.min_p) * 1.00001f + 1e-3f);
  float depth = std::min(range, guess_depth(row, V, weight, p.top_p, buf.prob.data(), buf.ng));
  // Buckets over [0, range): about 16 tokens each in a row of V, kBuckets at most.
  const int64_t nbk = std::clamp<int64_t>(V / 16, 64, kBuckets);
  double* hist = at_least(buf.prob, buf.ng + nbk) + buf.ng;
  std::fill(hist, hist + nbk, 0.0);
  const Bucket bucket{weight.max, weight.scale, static_cast<float>(nbk) / range, static_cast<float>(nbk - 1)};
  auto bar_at = [&](float d) {  // the maximum itself is always a candidate
    return std::min(weight.max - d / weight.scale, std::nextafter(weight.max, -kInf));
  };
  // keys: the candidates (bucket << 32 | id) [0, m), then the boundary bucket's rank keys; ws:
  // the candidates' weights. runs: where each pass's candidates (each in id order) begin.
  auto& keys = buf.keys;
  auto& ws = buf.cand;
  keys.clear();
  ws.clear();
  int64_t runs[8] = {0};
  int nruns = 1;
  float bar = bar_at(depth);
  const double total =
      (p.min_p > 0.0f ? mass_pass_min_p : mass_pass)(row, V, weight, bar, bucket, hist, keys, ws);
  const double target = static_cast<double>(p.top_p) * total;
  for (int bands = 0;; ++bands) {
    const int64_t m = static_cast<int64_t>(keys.size());
    // Buckets before bucket(bar) hold all their tokens; bucket(bar) holds those above bar, which
    // rank above the rest of it: a cut among them is exact too.
    const int64_t complete = bar == -kInf ? nbk : std::min<int64_t>(nbk, bucket(bar) + 1);
    // The boundary bucket: the first where the running mass reaches the target. Its members by
    // rank until it does; should their sum in that order fall short of the bucket's (rounding),
    // the cut moves on to the next bucket.
    double cum = 0;
    int64_t b = 0;
    bool reached = false;
    uint64_t cut = 0;  // the rank key of the last kept token
    while (!reached) {
      while (b < complete && cum + hist[b] < target) cum += hist[b++];
      if (b == complete) break;
      const uint64_t kb = static_cast<uint64_t>(b);
      int64_t count = 0;
      for (int64_t c = 0; c < m; ++c) count += (keys[static_cast<size_t>(c)] >> 32) == kb;
      keys.resize(static_cast<size_t>(m + count));
      uint64_t* kd = keys.data();
      for (int64_t c = 0, j = m; c < m; ++c)
        if ((kd[c] >> 32) == kb) {
          const int32_t id = static_cast<int32_t>(kd[c] & 0xffffffffu);
          kd[j++] = rank_key(row[id], id);
        }
      std::sort(keys.begin() + m, keys.end(), std::greater<>());
      for (auto it = keys.begin() + m; it != keys.end() && !reached; ++it) {
        cum += weight(row[key_id(*it)]);
        reached = cum >= target;
        cut = *it;
      }
      if (!reached) ++b;
    }
    keys.resize(static_cast<size_t>(m));
    if (!reached && bar > -kInf) {
      // The cut lies deeper than the complete buckets: a band kBandStep deeper, then 2·kBandStep,
      // then down to `range`, and past it every token.
      const float next =
          depth >= range
              ? -kInf
              : bar_at(depth = bands < 2 ? std::min(range, depth + kBandStep * static_cast<float>(bands + 1)) : range);
      band_pass(row, V, weight, next, bar, bucket, hist, keys, ws);
      runs[nruns++] = m;
      bar = next;
      continue;
    }
    // The kept list: the candidates of the buckets before b and bucket b's members ranked at or
    // above `cut` (every candidate if rounding kept the target out of reach to the very end), in
    // place, then the passes' runs merged into id order.
    if (!reached) b = nbk;
    int64_t kept = 0;
    uint64_t* kd = keys.data();
    const int32_t* wd = ws.data();
    const uint64_t kb = static_cast<uint64_t>(b);
    for (int r = 0; r < nruns; ++r) {
      const int64_t c1 = r + 1 < nruns ? runs[r + 1] : m;
      const int64_t start = kept;
      for (int64_t c = runs[r]; c < c1; ++c) {  // branch-free: the buckets come in no order
        const uint64_t e = kd[c], k = e >> 32, id = e & 0xffffffffu;
        const bool keep = (k < kb) | ((k == kb) & (rank_key(row[id], static_cast<int32_t>(id)) >= cut));
        kd[kept] = kept_entry(static_cast<int64_t>(id), std::bit_cast<float>(wd[c]));
        kept += keep;
      }
      runs[r] = start;
    }
    keys.resize(static_cast<size_t>(kept));
    keys.reserve(static_cast<size_t>(2 * kept));  // no reallocation under the merge's iterators
    for (int r = 1; r < nruns; ++r) {  // merge run r into [0, runs[r]) through the space after them
      const int64_t end = r + 1 < nruns ? runs[r + 1] : kept;
      std::merge(keys.begin(), keys.begin() + runs[r], keys.begin() + runs[r], keys.begin() + end,
                 std::back_inserter(keys));
      std::copy(keys.begin() + kept, keys.end(), keys.begin());
      keys.resize(static_cast<size_t>(kept));
    }
    return draw_list(keys.data(), kept, at_least(buf.prob, buf.ng + kept / 64 + 1) + buf.ng, rng);
  }
}

}  // namespace

Sampler::Sampler(const SamplerParams& p) : p_(p), own_(p.seed) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
    fail(Status::invalid_argument, "sampler: temperature {} must be finite and ≥ 0", p.temperature);
  if (p.top_k < 0) fail(Status::invalid_argument, "sampler: top_k {} must be ≥ 0 (0 = off)", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    fail(Status::invalid_argument, "sampler: top_p {} must be in (0, 1] (1 = off)", p.top_p);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f))
    fail(Status::invalid_argument, "sampler: min_p {} must be in [0, 1] (0 = off)", p.min_p);
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty))
    fail(Status::invalid_argument, "sampler: repetition_penalty {} must be finite and > 0 (1 = off)",
         p.repetition_penalty);
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f))
    fail(Status::invalid_argument, "sampler: frequency_penalty {} must be in [-2, 2]", p.frequency_penalty);
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f))
    fail(Status::invalid_argument, "sampler: presence_penalty {} must be in [-2, 2]", p.presence_penalty);
  if (p.logprobs < -1 || p.logprobs > kMaxLogprobs)
    fail(Status::invalid_argument, "sampler: logprobs {} must be in [-1, {}] (-1 = none)", p.logprobs, kMaxLogprobs);
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0) fail(Status::invalid_argument, "sampler: logit_bias id {} must be ≥ 0", id);
    if (!std::isfinite(bias))
      fail(Status::invalid_argument, "sampler: logit_bias value {} for id {} must be finite", bias, id);
  }
}

SampleResult Sampler::sample(std::span<const float> logits, SamplerState& state) {
  const int64_t V = static_cast<int64_t>(logits.size());
  if (V == 0) fail(Status::invalid_argument, "sampler: empty logits row");
  if (V > std::numeric_limits<int32_t>::max())
    fail(Status::invalid_argument, "sampler: logits row of {} values exceeds the int32 token id range", V);
  for (const auto& [id, bias] : p_.logit_bias)
    if (id >= V)
      fail(Status::invalid_argument, "sampler: logit_bias id {} must be < the vocabulary size {}", id, V);

  // Bias and penalties touch few tokens: copy the row only when one of them applies. The NaN /
  // +inf check runs on the row the draw reads (a raw NaN or +inf stays one after the changes).
  const float* raw = logits.data();
  const float* row = raw;
  const float rep = p_.repetition_penalty, freq = p_.frequency_penalty, pres = p_.presence_penalty;
  const bool use_rep = rep != 1.0f && !state.seen.empty();
  const bool use_openai = (freq != 0.0f || pres != 0.0f) && !state.generated.empty();
  if (!p_.logit_bias.empty() || use_rep || use_openai) {
    work_.assign(logits.begin(), logits.end());
    for (const auto& [id, bias] : p_.logit_bias) work_[static_cast<size_t>(id)] += bias;
    // Ids outside the row (a state shared with a larger vocabulary) have no logit to change.
    if (use_rep)
      for (const auto& [t, n] : state.seen)
        if (t >= 0 && t < V && n > 0) {
          float& l = work_[static_cast<size_t>(t)];
          l = l > 0.0f ? l / rep : l * rep;
        }
    if (use_openai)
      for (const auto& [t, n] : state.generated)
        if (t >= 0 && t < V && n > 0) work_[static_cast<size_t>(t)] -= static_cast<float>(n) * freq + pres;
    row = work_.data();
  }

  SampleResult result;
  if (p_.temperature == 0.0f) {
    const RowScan s = scan_row(row, V);
    if (!s.finite) fail_non_finite(raw, row, V);
    if (s.max == -kInf) fail_all_banned(V);
    result.id = first_equal(row, V, s.max);
  } else {
    // Without top-k, the group maxima at the front of prob_ (the rejection draw's envelope,
    // top-p's guess); top-k needs the maximum only.
    const bool top_k = p_.top_k > 0 && p_.top_k < V;
    const int64_t ng = top_k ? 0 : group_count(V);
    const RowScan s = top_k ? scan_row(row, V) : group_maxima(row, V, at_least(prob_, ng));
    if (!s.finite) fail_non_finite(raw, row, V);
    if (s.max == -kInf) fail_all_banned(V);
    const Weigh weight{s.max, weight_scale(p_.temperature), p_.min_p};
    const Buffers buf{cand_, prob_, keys_, ng};
    if (top_k)
      result.id = draw_top_k(p_, row, V, weight, state.rng, buf);
    else if (p_.top_p < 1.0f)
      result.id = draw_top_p(p_, row, V, weight, state.rng, buf);
    else
      result.id = draw_rejection(row, V, weight, buf, state.rng);
  }

  if (p_.logprobs >= 0) {
    // log_softmax of the raw row by the one-pass softmax at T = 1. The row passed the checks
    // above: no NaN / +inf (they would have survived into `row`) and a token above −inf (bias and
    // penalties cannot lift a −inf logit). A token at −inf has logprob −inf; the top-n are taken
    // among the others.
    const Softmax sm = block_softmax(raw, V, kLog2e, at_least(prob_, 2 * ((V + kBlock - 1) / kBlock)));
    const double lse = sm.max + std::log(sm.total);
    auto logprob = [&](int32_t id) { return static_cast<float>(static_cast<double>(raw[id]) - lse); };
    result.logprob = logprob(result.id);
    if (p_.logprobs > 0) {
      select_best(raw, V, p_.logprobs, keys_);
      result.top.reserve(keys_.size());
      for (uint64_t key : keys_) result.top.push_back({key_id(key), logprob(key_id(key))});
    }
  }
  state.add_generated(result.id);
  return result;
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
  // Counts of the caller's history, rebuilt every call (clear() keeps the maps' buckets). Without
  // penalties they are never read, so the history is not even counted.
  own_.seen.clear();
  own_.generated.clear();
  if (p_.repetition_penalty != 1.0f || p_.frequency_penalty != 0.0f || p_.presence_penalty != 0.0f)
    for (int32_t t : history) {
      ++own_.seen[t];
      ++own_.generated[t];
    }
  const int32_t id = sample(logits, own_).id;
  // sample() recorded the draw; the history is the caller's, so the next call must not see it.
  for (auto* counts : {&own_.seen, &own_.generated}) {
    const auto it = counts->find(id);
    if (it != counts->end() && --it->second <= 0) counts->erase(it);
  }
  return id;
}

}  // namespace dsv4
