// dsv4-bench: end-to-end speed of the CUDA backend on a synthetic full-width DeepSeek-V4-Flash
// (the 155 GB checkpoint fits neither one H200 nor the GPU machine's disk): every tensor with its
// real name, dtype and shape is built directly in device memory by make_cuda_backend_synthetic
// (same loader, formats, layouts and kernels as a loaded checkpoint; random values scaled as
// make-model scales them). Batch-1 decode reads the same bytes with 192 experts as with 256 (only
// the K chosen are read), so the default 43 layers × 192 experts (≈ 125 GB) is the full model's
// decode; batch throughput wants all 256 experts (--experts 256 --layers 36). Every figure is
// printed next to its floor — bytes ÷ 4.6 TB/s (read-only HBM peak) or FLOPs ÷ the measured FP8
// tensor peak (1260 TFLOP/s, cuBLASLt at 4096³, docs/performance.md) — and written as JSON.
// A table, never an assertion. Usage:
//   dsv4-bench [--layers 43] [--experts 192] [--top-k 4,6] [--context 512] [--decode-steps 16]
//              [--batches 8,32,128] [--prefill 1024,8192] [--numerics official] [--params k=v,...]
//              [--json FILE]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "dsv4/backend.hpp"
#include "dsv4/checkpoint_schema.hpp"
#include "dsv4/cuda/cuda_backend.hpp"
#include "dsv4/error.hpp"
#include "dsv4/model_gen.hpp"
#include "dsv4/sampler.hpp"

namespace {
using Clock = std::chrono::steady_clock;
constexpr double kHbmPeak = 4.6e12;       // B/s, read-only
constexpr double kFp8Peak = 1260e12;      // FLOP/s, measured (cuBLASLt block-scaled FP8, 4096³)

std::vector<int> int_list(const std::string& s) {
  std::vector<int> v;
  size_t b = 0;
  while (b < s.size()) {
    const size_t e = std::min(s.find(',', b), s.size());
    if (e > b) v.push_back(std::stoi(s.substr(b, e - b)));
    b = e + 1;
  }
  return v;
}

// Bytes and parameters of one decode token, from the tensor inventory.
struct Footprint {
  double dense_bytes = 0, expert_bytes = 0;    // per token: non-expert weights; one routed expert, all layers
  double dense_params = 0, expert_params = 0;  // multiply-adds per token (same split)
  int layers = 0;
};
Footprint footprint(const dsv4::ModelConfig& cfg) {
  Footprint f;
  f.layers = cfg.num_layers;
  for (const dsv4::TensorSpec& s : dsv4::expected_tensors(cfg)) {
    const double bytes = static_cast<double>(dsv4::TensorHeader{s.name, s.dtype, s.shape}.nbytes());
    if (s.name.rfind("mtp.", 0) == 0 || s.name == "embed.weight") continue;  // one embedding row: negligible
    double params = 0;
    if (s.role == dsv4::TensorRole::fp8_weight || s.role == dsv4::TensorRole::linear_bf16) params = static_cast<double>(s.shape[0]) * s.shape[1];
    if (s.role == dsv4::TensorRole::fp4_weight) params = 2.0 * static_cast<double>(s.shape[0]) * s.shape[1];
    if (s.name.find(".ffn.experts.") != std::string::npos) {
      f.expert_bytes += bytes / cfg.n_routed_experts;
      f.expert_params += params / cfg.n_routed_experts;
    } else {
      f.dense_bytes += bytes;
      f.dense_params += params;
    }
  }
  return f;
}

struct Row {
  std::string what;
  double value = 0;
  std::string unit;
  double floor = 0;  // same unit
  bool higher_better = false;
  std::string note;
};

class Bench {
 public:
  Bench(const dsv4::ModelConfig& cfg, const dsv4::BackendOptions& opt)
      : cfg_(cfg), be_(dsv4::cuda::make_cuda_backend_synthetic(cfg, opt, dsv4::Logger(dsv4::LogLevel::info), 1)),
        rng_(7) {}

  std::vector<int32_t> random_ids(int64_t n) {
    std::uniform_int_distribution<int32_t> d(0, cfg_.vocab_size - 1);
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (auto& t : v) t = d(rng_);
    return v;
  }
  // Prefills `n` random tokens into a new sequence; returns it and the seconds taken (to the
  // sampled first token).
  std::pair<dsv4::SeqHandle, double> prefill(int64_t n, int64_t max_ctx) {
    const dsv4::SeqHandle h = be_->create_sequence(max_ctx);
    const std::vector<int32_t> ids = random_ids(n);
    dsv4::ForwardChunk c;
    c.seq = h;
    c.tokens = ids;
    c.sampler = &greedy_;
    dsv4::SamplerState st(0, false);
    c.sampler_state = &st;
    const auto t0 = Clock::now();
    check(be_->forward({&c, 1}));
    return {h, std::chrono::duration<double>(Clock::now() - t0).count()};
  }
  // Seconds per step of `steps` decode steps over the sequences (one token each, sampled ids fed
  // back on the device path: from_last_sample).
  double decode(const std::vector<dsv4::SeqHandle>& seqs, int steps) {
    std::vector<dsv4::SamplerState> states(seqs.size(), dsv4::SamplerState(0, false));
    std::vector<dsv4::ForwardChunk> step(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
      step[i].seq = seqs[i];
      step[i].from_last_sample = true;
      step[i].sampler = &greedy_;
      step[i].sampler_state = &states[i];
    }
    check(be_->forward(step));  // warm-up (workspace sizing)
    const auto t0 = Clock::now();
    for (int s = 0; s < steps; ++s) check(be_->forward(step));
    return std::chrono::duration<double>(Clock::now() - t0).count() / steps;
  }
  void release(dsv4::SeqHandle h) { be_->release_sequence(h); }

 private:
  static void check(const dsv4::StepResult& r) {
    for (const auto& c : r.chunks)
      if (c.status != dsv4::ChunkStatus::ok) dsv4::fail(dsv4::Status::backend, "benchmark step failed: {}", c.error);
  }
  dsv4::ModelConfig cfg_;
  std::unique_ptr<dsv4::Backend> be_;
  std::mt19937 rng_;
  dsv4::Sampler greedy_{dsv4::SamplerParams{0.0f}};
};

}  // namespace

int main(int argc, char** argv) try {
  std::map<std::string, std::string> a = {{"layers", "43"},   {"experts", "192"},      {"top-k", "4,6"},
                                          {"context", "512"}, {"decode-steps", "16"},  {"batches", "8,32,128"},
                                          {"prefill", "1024,8192"}, {"numerics", "official"}, {"json", ""},
                                          {"params", ""}};
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || !a.count(k.substr(2)) || i + 1 >= argc) {
      std::fprintf(stderr, "usage: dsv4-bench [--layers N] [--experts E] [--top-k 4,6] [--context T] "
                           "[--decode-steps N] [--batches 8,32,128] [--prefill 1024,8192] [--numerics official|reference] "
                           "[--json FILE]\n");
      return 2;
    }
    a[k.substr(2)] = argv[++i];
  }
  const int layers = std::stoi(a["layers"]), experts = std::stoi(a["experts"]);
  const int64_t context = std::stoll(a["context"]);
  const int steps = std::stoi(a["decode-steps"]);
  std::vector<Row> rows;
  nlohmann::json out = nlohmann::json::object();
  out["params"] = a["params"];
  out["synthetic"] = fmt::format("full-width DeepSeek-V4-Flash, {} layers x {} experts, weights made in device memory",
                                 layers, experts);
  for (int k : int_list(a["top-k"])) {
    dsv4::ModelConfig cfg = dsv4::preset_config("flash");
    dsv4::apply_overrides(cfg, layers, experts, k);
    dsv4::BackendOptions opt;
    opt.numerics = a["numerics"] == "reference" ? dsv4::Numerics::reference : dsv4::Numerics::official;
    opt.max_context = 16384;
    // Backend settings (the CUDA backend's kill switches: gemm=off, attn_mma=off).
    for (size_t b = 0; b < a["params"].size();) {
      const size_t e = std::min(a["params"].find(',', b), a["params"].size());
      const std::string kv = a["params"].substr(b, e - b);
      const size_t eq = kv.find('=');
      if (eq != std::string::npos) opt.params.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
      b = e + 1;
    }
    const Footprint fp = footprint(cfg);
    const double scale43 = 43.0 / layers;  // the 43-layer equivalent of a per-token time
    std::printf("== %d layers x %d experts, top-%d (43-layer equivalent = x %.3f) ==\n", layers, experts, k, scale43);
    Bench b(cfg, opt);

    // Batch-1 decode at `context` tokens of context.
    auto [h, ttft_ctx] = b.prefill(context, context + steps + 8);
    const double t1 = b.decode({h}, steps);
    b.release(h);
    const double bytes1 = fp.dense_bytes + k * fp.expert_bytes;
    rows.push_back({fmt::format("decode batch 1, top-{} (ms/token, 43-layer eq.)", k), t1 * 1e3 * scale43, "ms",
                    bytes1 / kHbmPeak * 1e3 * (43.0 / layers), false,
                    fmt::format("{:.2f} GB/token", bytes1 / 1e9)});
    // Batch throughput: B sequences, one token each per step.
    if (k == int_list(a["top-k"]).front())
      for (int B : int_list(a["batches"])) {
        std::vector<dsv4::SeqHandle> seqs;
        for (int i = 0; i < B; ++i) seqs.push_back(b.prefill(64, 64 + steps + 8).first);
        const double t = b.decode(seqs, std::max(2, steps / 4));
        for (auto s : seqs) b.release(s);
        const double touched = experts * (1.0 - std::pow(1.0 - static_cast<double>(k) / experts, B));
        const double bytes = fp.dense_bytes + touched * fp.expert_bytes;
        const double flops = 2.0 * B * (fp.dense_params + k * fp.expert_params);
        const double floor_s = std::max(bytes / kHbmPeak, flops / kFp8Peak);
        rows.push_back({fmt::format("decode batch {}, top-{} (tokens/s, 43-layer eq.)", B, k), B / (t * scale43), "tok/s",
                        B / (floor_s * (43.0 / layers)), true,
                        fmt::format("{:.1f} ms/step at {} layers", t * 1e3, layers)});
      }
    // Prefill and time to first token.
    if (k == int_list(a["top-k"]).front())
      for (int n : int_list(a["prefill"])) {
        auto [hp, secs] = b.prefill(n, n + 8);
        b.release(hp);
        const double flops = 2.0 * n * (fp.dense_params + k * fp.expert_params);
        // 43-layer equivalent: the time scales with the layers (the head is one row of the chunk).
        rows.push_back({fmt::format("prefill {} tokens, top-{} (tokens/s, 43-layer eq.)", n, k), n / (secs * scale43),
                        "tok/s", n / (flops / kFp8Peak * (43.0 / layers)), true,
                        fmt::format("TTFT {:.1f} ms at {} layers", secs * 1e3, layers)});
      }
  }
  std::printf("\n%-52s %12s %12s %8s  %s\n", "metric", "value", "floor", "% floor", "note");
  nlohmann::json jr = nlohmann::json::array();
  for (const Row& r : rows) {
    const double pct = r.higher_better ? 100.0 * r.value / r.floor : 100.0 * r.floor / r.value;
    std::printf("%-52s %10.2f %-2s %10.2f %8.1f  %s\n", r.what.c_str(), r.value, r.unit.c_str(), r.floor, pct,
                r.note.c_str());
    jr.push_back({{"metric", r.what}, {"value", r.value}, {"unit", r.unit}, {"floor", r.floor}, {"pct_of_floor", pct},
                  {"note", r.note}});
  }
  out["rows"] = jr;
  if (!a["json"].empty()) std::ofstream(a["json"]) << out.dump(2) << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "dsv4-bench: %s\n", e.what());
  return 1;
}
