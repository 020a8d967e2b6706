// Token sampling (contract in include/dsv4/sampler.hpp). Order: logit bias → repetition penalty
// (seen) → frequency / presence (generated) → greedy or temperature → top-k → softmax → min-p →
// top-p → one splitmix64 draw; logprobs from the raw row.
//
// Cost per draw, V = vocabulary, no sort of the vocabulary and no allocation once the buffers grew:
//   greedy: one pass for the maximum (and the NaN / +inf check), one to find its lowest id.
//   default (no filter): one pass; per block of kBlock tokens the block maximum, then the block's
//     Σ exp relative to it (the block is in L1 by then); block masses relative to the row maximum
//     follow from the block maxima. The draw walks the block masses and rescans one block.
//   min-p alone: it only needs the maximum: the same, with a maximum pass first and the weights
//     below min_p·p_max set to 0.
//   top-k: a bounded selection of the k best (nth_element on at most 2k keys at a time), a sort
//     of those k: O(V + k log k).
//   top-p without top-k: the total mass in one pass, then growing prefixes of the ranking (the
//     64 best, 256, 1024, ...) until one holds top_p of it: O(V·rounds + K log K) for K kept.
// The ranking is (logit desc, id asc) everywhere (a 64-bit key per candidate, so nth_element and
// sort compare integers), so every cut keeps exactly what a full sort of the vocabulary would keep.
//
// exp is a small polynomial (fast_exp2) rather than std::exp so that the passes vectorise; the
// same function gives every weight (block sums, rescans, candidates), so the mass that decides a
// cut and the mass that is drawn from agree. On x86-64 the O(V) passes are also compiled for AVX2
// and picked at load time (target_clones): the same IEEE operations in the same order per lane
// (no FMA: AVX2 alone does not enable it), so both clones give the same draws for a seed. (A build
// whose flags allow FMA contraction, -march=native say, draws its own sequence, as deterministic.)
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
constexpr int64_t kBlock = 512;  // tokens per block of the plain draw (a multiple of kLanes; 2 KB, in L1)
constexpr int64_t kFirstCandidates = 64;  // top-p without top-k: first prefix tried, then ×4
constexpr int kMaxLogprobs = 20;

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

// Σ weight over the row (weights relative to the row maximum, min-p applied), per block into
// `blocks` when given; the total is the sum of the block sums in order, so a walk over `blocks`
// reproduces its partial sums exactly.
DSV4_VECTOR_CLONES double block_masses(const float* v, int64_t n, const Weigh& weight, double* blocks) {
  double total = 0;
  for (int64_t b0 = 0, bi = 0; b0 < n; b0 += kBlock, ++bi) {
    const double s = block_sum(v, b0, std::min(n, b0 + kBlock), weight);
    if (blocks) blocks[bi] = s;
    total += s;
  }
  return total;
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

// The one-pass softmax mass: per block its maximum m_b (and the NaN / +inf check), then
// S_b = Σ 2^((l − m_b)·scale) while the block is in L1. blocks[0, nb) gets the block masses
// relative to the row maximum M, S_b · 2^((m_b − M)·scale); blocks[nb, 2nb) the block maxima.
// Stops at the first non-finite block (finite = false).
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

// The block whose running mass passes u, and the mass before it. When rounding left u at the
// very end (u = total), the last block with mass and u = +inf, so that the rescan settles on its
// last positive weight.
struct BlockPick {
  int64_t block = 0;
  double before = 0, u = 0;
};
BlockPick walk_blocks(const double* mass, int64_t nb, double u) {
  double cum = 0;
  int64_t last = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const double next = cum + mass[b];
    if (mass[b] > 0) last = b;
    if (u < next) return {b, cum, u};
    cum = next;
  }
  return {last, 0.0, INFINITY};
}

// The token of block [b0, b1) where the running mass (from `pick.before`, weights `weight`)
// passes pick.u; the block's last positive weight when its sum in this order falls short of the
// lane-wise sum by a rounding.
template <typename W>
int32_t rescan_block(const float* v, int64_t b0, int64_t b1, const BlockPick& pick, const W& weight) {
  double cum = pick.before;
  int64_t last = b0;
  for (int64_t i = b0; i < b1; ++i) {
    const double w = weight(v[i]);
    if (w > 0) last = i;
    cum += w;
    if (pick.u < cum) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(last);
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

// Index into prob[0, n) where the running sum passes u (the last positive weight if rounding left
// u at the very end).
int64_t pick(const double* prob, int64_t n, double u) {
  double cum = 0;
  int64_t last = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (prob[i] > 0) last = i;
    cum += prob[i];
    if (u < cum) return i;
  }
  return last;
}

struct Buffers {
  std::vector<int32_t>& cand;
  std::vector<double>& prob;
  std::vector<uint64_t>& keys;
};

// The default draw (temperature > 0, no filter): the one-pass softmax (into *out), the walk, one
// rescan. Fails on a non-finite or all-banned row.
int32_t draw_plain(const float* raw, const float* row, int64_t V, float temperature, uint64_t& rng,
                   std::vector<double>& prob, Softmax* out) {
  const int64_t nb = (V + kBlock - 1) / kBlock;
  prob.resize(static_cast<size_t>(2 * nb));
  const float scale = weight_scale(temperature);
  const Softmax sm = *out = block_softmax(row, V, scale, prob.data());
  if (!sm.finite) fail_non_finite(raw, row, V);
  if (sm.max == -kInf) fail_all_banned(V);
  const BlockPick at = walk_blocks(prob.data(), nb, uniform01(rng) * sm.total);
  const float ref = static_cast<float>(prob[static_cast<size_t>(nb + at.block)]);
  const double rel = fast_exp2((ref - sm.max) * scale);  // the block's factor, as in block_softmax
  const WeighRel<true> w{ref, scale};
  const int64_t b0 = at.block * kBlock;
  return rescan_block(row, b0, std::min(V, b0 + kBlock), at,
                      [&](float l) { return static_cast<double>(w(l)) * rel; });
}

// A draw with min-p, top-k and / or top-p (temperature > 0, row maximum `max`).
int32_t draw_filtered(const SamplerParams& p, const float* row, int64_t V, float max, uint64_t& rng,
                      const Buffers& buf) {
  const Weigh weight{max, weight_scale(p.temperature), p.min_p};
  const bool top_k = p.top_k > 0 && p.top_k < V;
  const bool top_p = p.top_p < 1.0f;
  auto& prob = buf.prob;

  if (!top_k && !top_p) {  // min-p alone: weights relative to the row maximum, 0 below min_p
    const int64_t nb = (V + kBlock - 1) / kBlock;
    prob.resize(static_cast<size_t>(nb));
    const double total = block_masses(row, V, weight, prob.data());
    const BlockPick at = walk_blocks(prob.data(), nb, uniform01(rng) * total);
    const int64_t b0 = at.block * kBlock;
    return rescan_block(row, b0, std::min(V, b0 + kBlock), at, weight);
  }

  // Candidates: a prefix of the ranking, sorted. With top-k it is the k best; top-p alone grows
  // the prefix until its mass reaches top_p of the whole row's (min-p-filtered) mass.
  const double row_mass = top_k ? 0.0 : block_masses(row, V, weight, nullptr);
  int64_t k = top_k ? p.top_k : std::min<int64_t>(kFirstCandidates, V);
  int64_t keep = 0;
  for (;;) {
    select_best(row, V, k, buf.keys);
    const int64_t n = static_cast<int64_t>(buf.keys.size());
    buf.cand.resize(static_cast<size_t>(n));
    prob.resize(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) {
      const int32_t id = key_id(buf.keys[static_cast<size_t>(j)]);
      buf.cand[static_cast<size_t>(j)] = id;
      prob[static_cast<size_t>(j)] = weight(row[id]);
    }
    keep = n;
    if (!top_p) break;
    double mass = row_mass;
    if (top_k) {
      mass = 0;
      for (int64_t j = 0; j < n; ++j) mass += prob[static_cast<size_t>(j)];
    }
    const double target = static_cast<double>(p.top_p) * mass;
    double cum = 0;
    int64_t j = 0;
    bool reached = false;
    while (j < n && !reached) {
      cum += prob[static_cast<size_t>(j++)];
      reached = cum >= target;
    }
    // Done when the prefix reached top_p, when the candidates are every token above −inf (n < k,
    // or the whole row), or when the last one is already below min-p (nothing after it weighs).
    if (reached) keep = j;
    if (reached || top_k || n < k || k >= V || prob[static_cast<size_t>(n - 1)] == 0) break;
    k = std::min<int64_t>(V, k * 4);
  }
  double total = 0;
  for (int64_t j = 0; j < keep; ++j) total += prob[static_cast<size_t>(j)];
  return buf.cand[static_cast<size_t>(pick(prob.data(), keep, uniform01(rng) * total))];
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
  const bool plain = p_.temperature > 0.0f && p_.min_p == 0.0f && !(p_.top_k > 0 && p_.top_k < V) && p_.top_p >= 1.0f;
  Softmax plain_sm;
  if (plain) {
    result.id = draw_plain(raw, row, V, p_.temperature, state.rng, prob_, &plain_sm);
  } else {
    const RowScan s = scan_row(row, V);
    if (!s.finite) fail_non_finite(raw, row, V);
    if (s.max == -kInf) fail_all_banned(V);
    result.id = p_.temperature == 0.0f ? first_equal(row, V, s.max)
                                       : draw_filtered(p_, row, V, s.max, state.rng, {cand_, prob_, keys_});
  }

  if (p_.logprobs >= 0) {
    // log_softmax of the raw row by the one-pass softmax at T = 1 (which the plain draw at T = 1
    // on the raw row has just computed). The row passed the checks above: no NaN / +inf (they
    // would have survived into `row`) and a token above −inf (bias and penalties cannot lift a
    // −inf logit). A token at −inf has logprob −inf; the top-n are taken among the others.
    Softmax sm = plain_sm;
    if (!(plain && row == raw && weight_scale(p_.temperature) == kLog2e)) {
      prob_.resize(static_cast<size_t>(2 * ((V + kBlock - 1) / kBlock)));
      sm = block_softmax(raw, V, kLog2e, prob_.data());
    }
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
