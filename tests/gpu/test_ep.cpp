// Expert parallelism on the CUDA backend (lib/cuda/ep_*.{cpp,cu}; docs/expert-parallel.md):
//  - ep_local_ids and ep_reduce against their CPU loops, bit for bit, on fresh random inputs at odd
//    sizes with poisoned outputs; moe_combine's partial mode (no shared expert) likewise; and the
//    W = 1 identity the bit-identical world-size-1 run rests on: ep_reduce over one partial ==
//    moe_combine with the shared expert;
//  - tiny-a end to end: world size 1 through NCCL (and through the host transport) gives the plain
//    backend's logits bit for bit, in both numerics, for full prefill and one token at a time;
//    2 and 3 ranks sharing this one GPU (host transport: the same rank code, the exchange by
//    same-process copies) against the CPU backend's EP emulation with the same ranks — the same
//    rank-order partial sums — within the bounds of test_cuda_forward.cpp (official: the f32
//    summation-order envelope; reference: max |Δlogit| ≤ 1e-3). Replica equality is checked by the
//    backend itself at every step that returns logits (a difference fails the step).
// NCCL world size > 1 needs several GPUs: the multi-GPU issue runs it.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "catch.hpp"
#include "cuda/kernels.hpp"
#include "dsv4/backend.hpp"
#include "dsv4/dtypes.hpp"
#include "dsv4/engine.hpp"
#include "fixture.hpp"

namespace {
namespace dc = dsv4::cuda;

template <class T>
struct Buf {
  T* p = nullptr;
  size_t n = 0;
  explicit Buf(size_t count) : n(count) { REQUIRE(cudaMalloc(&p, (n ? n : 1) * sizeof(T)) == cudaSuccess); }
  explicit Buf(const std::vector<T>& h) : Buf(h.size()) {
    REQUIRE(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  std::vector<T> get() const {
    std::vector<T> h(n);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    REQUIRE(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return h;
  }
  void poison() { REQUIRE(cudaMemset(p, 0xff, n * sizeof(T)) == cudaSuccess); }
};

uint64_t fresh_seed() {
  std::random_device rd;
  return (uint64_t{rd()} << 32) ^ rd();
}

std::vector<float> randv(std::mt19937_64& rng, size_t n, bool bf16) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& f : v) {
    f = nd(rng);
    if (f == 0.f) f = 0.5f;
    if (bf16) f = dsv4::round_bf16(f);
  }
  return v;
}

int64_t bits_differ(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  int64_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += std::memcmp(&a[i], &b[i], 4) != 0;
  return n;
}

}  // namespace

TEST_CASE("ep_local_ids keeps the rank's own experts, renumbered, and drops the rest", "[gpu][ep]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> id(-1, 40);
  for (const int64_t n : {int64_t{1}, int64_t{7}, int64_t{1003}}) {
    for (const auto [lo, hi] : {std::pair{0, 41}, std::pair{0, 14}, std::pair{14, 27}, std::pair{27, 41}, std::pair{5, 5}}) {
      CAPTURE(n, lo, hi);
      std::vector<int32_t> ids(static_cast<size_t>(n));
      for (auto& v : ids) v = id(rng);
      Buf<int32_t> d_ids(ids), d_out(static_cast<size_t>(n));
      d_out.poison();
      REQUIRE(dc::ep_local_ids(d_ids.p, n, lo, hi, d_out.p, nullptr) == cudaSuccess);
      const std::vector<int32_t> got = d_out.get();
      int64_t bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        const int32_t e = ids[static_cast<size_t>(i)];
        bad += got[static_cast<size_t>(i)] != (e >= lo && e < hi ? e - lo : -1);
      }
      CHECK(bad == 0);
    }
  }
  CHECK(dc::ep_local_ids(nullptr, 3, 0, 4, nullptr, nullptr) == cudaErrorInvalidValue);
  CHECK(dc::ep_local_ids(nullptr, 0, 0, 4, nullptr, nullptr) == cudaSuccess);
}

TEST_CASE("ep_reduce sums the partials in rank order, shared last, one rounding", "[gpu][ep]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (const bool official : {false, true}) {
    for (const int W : {1, 2, 3, 5}) {
      for (const auto [S, D] : {std::pair<int64_t, int64_t>{1, 4096}, {3, 129}, {17, 1001}}) {
        CAPTURE(official, W, S, D);
        const size_t n = static_cast<size_t>(S * D);
        const std::vector<float> parts = randv(rng, n * W, false), sh = randv(rng, n, official);
        Buf<float> d_p(parts), d_sh(sh), d_f(n);
        d_f.poison();
        REQUIRE(dc::ep_reduce(d_p.p, W, S, D, d_sh.p, official, d_f.p, nullptr) == cudaSuccess);
        std::vector<float> want(n);
        for (size_t i = 0; i < n; ++i) {
          float acc = 0.0f;
          for (int r = 0; r < W; ++r) acc += parts[static_cast<size_t>(r) * n + i];
          const float a = acc + sh[i];
          want[i] = official ? dsv4::round_bf16(a) : a;
        }
        CHECK(bits_differ(d_f.get(), want) == 0);
      }
    }
  }
  CHECK(dc::ep_reduce(nullptr, 0, 1, 1, nullptr, true, nullptr, nullptr) == cudaErrorInvalidValue);
  CHECK(dc::ep_reduce(nullptr, 2, 0, 5, nullptr, true, nullptr, nullptr) == cudaSuccess);
}

TEST_CASE("moe_combine's partial sum, then ep_reduce at W = 1, is moe_combine with the shared expert", "[gpu][ep]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> wd(0.05f, 1.0f);
  const int K = 6, E = 24;
  for (const bool official : {false, true}) {
    for (const auto [S, D] : {std::pair<int64_t, int64_t>{1, 4096}, {5, 203}}) {
      CAPTURE(official, S, D);
      // Distinct ids per token; token 0 has one unused slot, the last token (when S > 1) only one valid.
      std::vector<int32_t> ids(static_cast<size_t>(S * K)), perm(E);
      for (int64_t s = 0; s < S; ++s) {
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), rng);
        for (int k = 0; k < K; ++k) ids[static_cast<size_t>(s * K + k)] = perm[static_cast<size_t>(k)];
      }
      ids[2] = -1;
      if (S > 1)
        for (int k = 1; k < K; ++k) ids[static_cast<size_t>((S - 1) * K + k)] = -1;
      std::vector<float> wt(static_cast<size_t>(S * K));
      for (auto& v : wt) v = wd(rng);
      const std::vector<float> ys = randv(rng, static_cast<size_t>(S * K * D), official),
                               ysh = randv(rng, static_cast<size_t>(S * D), official);
      Buf<float> d_ys(ys), d_w(wt), d_sh(ysh), d_part(static_cast<size_t>(S * D)), d_f(static_cast<size_t>(S * D)),
          d_one(static_cast<size_t>(S * D));
      Buf<int32_t> d_ids(ids);
      d_part.poison();
      d_f.poison();
      d_one.poison();
      const float* w = official ? nullptr : d_w.p;
      REQUIRE(dc::moe_combine(d_ys.p, d_ids.p, w, nullptr, S, K, D, official, d_part.p, nullptr) == cudaSuccess);
      REQUIRE(dc::ep_reduce(d_part.p, 1, S, D, d_sh.p, official, d_f.p, nullptr) == cudaSuccess);
      REQUIRE(dc::moe_combine(d_ys.p, d_ids.p, w, d_sh.p, S, K, D, official, d_one.p, nullptr) == cudaSuccess);
      // The partial itself: the f32 sum over the valid slots in ascending expert id, unrounded.
      const std::vector<float> part = d_part.get();
      std::vector<float> want(part.size());
      for (int64_t s = 0; s < S; ++s) {
        std::vector<int> order;
        for (int k = 0; k < K; ++k)
          if (ids[static_cast<size_t>(s * K + k)] >= 0) order.push_back(k);
        std::sort(order.begin(), order.end(),
                  [&](int a, int b) { return ids[static_cast<size_t>(s * K + a)] < ids[static_cast<size_t>(s * K + b)]; });
        for (int64_t d = 0; d < D; ++d) {
          float acc = 0.0f;
          for (int k : order) {
            const float y = ys[static_cast<size_t>((s * K + k) * D + d)];
            acc = official ? acc + y : std::fmaf(wt[static_cast<size_t>(s * K + k)], y, acc);
          }
          want[static_cast<size_t>(s * D + d)] = acc;
        }
      }
      CHECK(bits_differ(part, want) == 0);
      CHECK(bits_differ(d_f.get(), d_one.get()) == 0);
    }
  }
}

namespace {

std::unique_ptr<dsv4::Model> load(const dsv4_test::Fixture& f, const std::string& backend, dsv4::Numerics num,
                                  std::vector<std::pair<std::string, std::string>> params = {}) {
  dsv4::LoadOptions o;
  o.backend = backend;
  o.backend_params = std::move(params);
  o.numerics = num;
  o.load_tokenizer = false;
  return dsv4::Model::load(f.dir + "/model", o, dsv4::Logger(dsv4::LogLevel::warn));
}

// Every logits row of `ids`, in chunks of `chunk` tokens (0: one chunk).
std::vector<float> logits_of(const dsv4::Model& m, const std::vector<int32_t>& ids, size_t chunk) {
  dsv4::Backend& be = m.backend();
  const dsv4::SeqHandle h = be.create_sequence(static_cast<int64_t>(ids.size()) + 8);
  std::vector<float> all, rows;
  for (size_t pos = 0; pos < ids.size();) {
    const size_t n = chunk ? std::min(chunk, ids.size() - pos) : ids.size();
    dsv4::ForwardChunk c;
    c.seq = h;
    c.tokens = std::span<const int32_t>(ids).subspan(pos, n);
    c.logits = dsv4::LogitsMode::all;
    c.logits_out = &rows;
    const dsv4::StepResult r = be.forward({&c, 1});
    INFO(r.chunks[0].error);
    REQUIRE(r.ok());
    all.insert(all.end(), rows.begin(), rows.end());
    pos += n;
  }
  be.release_sequence(h);
  return all;
}

struct Diff {
  double max = 0, mean = 0, top1 = 0;
};
Diff diff(const std::vector<float>& a, const std::vector<float>& b, int64_t V) {
  REQUIRE(a.size() == b.size());
  Diff d;
  const int64_t rows = static_cast<int64_t>(a.size()) / V;
  double sum = 0;
  int64_t agree = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = a.data() + r * V;
    const float* y = b.data() + r * V;
    agree += std::max_element(x, x + V) - x == std::max_element(y, y + V) - y;
    for (int64_t v = 0; v < V; ++v) {
      const double e = std::fabs(static_cast<double>(x[v]) - y[v]);
      d.max = std::isnan(e) ? INFINITY : std::max(d.max, e);
      sum += e;
    }
  }
  d.mean = sum / static_cast<double>(a.size());
  d.top1 = static_cast<double>(agree) / static_cast<double>(rows);
  return d;
}

// NCCL is loaded at run time; a machine without libnccl.so.2 skips the NCCL case loudly.
std::unique_ptr<dsv4::Model> load_nccl(const dsv4_test::Fixture& f, dsv4::Numerics num) {
  try {
    return load(f, "cuda", num, {{"ep_ranks", "1"}, {"ep_transport", "nccl"}});
  } catch (const dsv4::Error& e) {
    if (e.status() != dsv4::Status::unsupported) throw;
    WARN(std::string("NCCL world size 1 skipped: ") + e.what());
    return nullptr;
  }
}

}  // namespace

TEST_CASE("expert parallelism at world size 1 (NCCL, host) is the plain backend bit for bit, tiny-a", "[forward][ep]") {
  auto f = dsv4_test::open_fixture("tiny-a");
  if (!f) {
    WARN("../shared/fixtures/tiny-a not found: test skipped");
    return;
  }
  for (const dsv4::Numerics num : {dsv4::Numerics::official, dsv4::Numerics::reference}) {
    const bool off = num == dsv4::Numerics::official;
    CAPTURE(off);
    auto plain = load(*f, "cuda", num);
    auto host = load(*f, "cuda", num, {{"ep_ranks", "1"}, {"ep_transport", "host"}});
    auto nccl = load_nccl(*f, num);
    for (int i = 0; i < f->prompts(); ++i) {
      const std::vector<int32_t> ids = f->ids("prompt" + std::to_string(i) + ".input_ids");
      for (const size_t chunk : {size_t{0}, size_t{1}}) {  // prefill (GEMM path in official), decode path
        CAPTURE(i, chunk);
        const std::vector<float> want = logits_of(*plain, ids, chunk);
        CHECK(bits_differ(logits_of(*host, ids, chunk), want) == 0);
        if (nccl) CHECK(bits_differ(logits_of(*nccl, ids, chunk), want) == 0);
      }
    }
    std::printf("tiny-a, %s numerics: world size 1 through %s equals the plain CUDA backend bit for bit\n",
                off ? "official" : "reference", nccl ? "NCCL and host copies" : "host copies (NCCL skipped)");
  }
}

TEST_CASE("expert parallelism over 2 and 3 ranks on one GPU matches the CPU EP emulation, tiny-a", "[forward][ep]") {
  auto f = dsv4_test::open_fixture("tiny-a");
  if (!f) {
    WARN("../shared/fixtures/tiny-a not found: test skipped");
    return;
  }
  for (const dsv4::Numerics num : {dsv4::Numerics::official, dsv4::Numerics::reference}) {
    const bool off = num == dsv4::Numerics::official;
    for (const int W : {2, 3}) {
      CAPTURE(off, W);
      const std::string w = std::to_string(W);
      auto cpu = load(*f, "cpu", num, {{"ep_ranks", w}, {"ep_combine", "partial"}, {"indexer_ties", "lowest"}});
      auto gpu = load(*f, "cuda", num, {{"ep_ranks", w}});  // one device: the host transport
      const int64_t V = cpu->config().vocab_size;
      for (int i = 0; i < f->prompts(); ++i) {
        const std::vector<int32_t> ids = f->ids("prompt" + std::to_string(i) + ".input_ids");
        const std::vector<float> want = logits_of(*cpu, ids, 0);
        for (const size_t chunk : {size_t{0}, size_t{1}}) {
          CAPTURE(i, chunk);
          const Diff d = diff(logits_of(*gpu, ids, chunk), want, V);
          std::printf("  tiny-a %s, %d ranks, prompt %d (%zu tokens) %s: max %.3g mean %.3g top-1 %.0f%%\n",
                      off ? "official" : "reference", W, i, ids.size(), chunk ? "one token at a time" : "prefill",
                      d.max, d.mean, 100 * d.top1);
          if (off) {  // test_cuda_forward.cpp's envelope for the prefill GEMM path
            CHECK(d.max <= 3.0);
            CHECK(d.mean <= 0.15);
            CHECK(d.top1 >= 0.7);
          } else {
            CHECK(d.max <= 1e-3);
          }
        }
      }
    }
  }
}

TEST_CASE("expert-parallel settings are validated", "[forward][ep]") {
  auto f = dsv4_test::open_fixture("tiny-a");
  if (!f) return;
  const auto bad = [&](std::vector<std::pair<std::string, std::string>> p, const std::string& needle) {
    try {
      load(*f, "cuda", dsv4::Numerics::official, std::move(p));
      FAIL("loaded");
    } catch (const dsv4::Error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
  };
  bad({{"ep_ranks", "0"}}, "ep_ranks=0");
  bad({{"ep_ranks", "x"}}, "ep_ranks=x");
  bad({{"ep_transport", "mpi"}}, "ep_transport=mpi");
  bad({{"ep_ranks", "9"}}, "world");  // more ranks than tiny-a's 8 experts
  bad({{"ep_ranks", "2"}, {"ep_transport", "nccl"}}, "repeat a device");
}
