// MoE_L (spec §3.6): sqrt-softplus router (bias for selection only, weights from the unbiased
// scores renormalised over the K chosen, × routed scale), hash routing by tid2eid's first K
// columns, routed experts with the clamped SwiGLU, and the shared expert WITHOUT the clamp (the
// official semantics the fixtures follow). Tokens are grouped per expert so each expert's weights
// are read once per chunk.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "dsv4/cpu/ops.hpp"
#include "dsv4/dtypes.hpp"
#include "dsv4/error.hpp"

namespace dsv4::cpu {
namespace {

double softplus(double z) { return z > 20.0 ? z : std::log1p(std::exp(z)); }
double silu(double g) { return g / (1.0 + std::exp(-g)); }

// out[S_e, D] += weight[s] · w2(SwiGLU(w1 x, w3 x)) for the gathered rows xs[S_e, D].
// Reference: f32 GEMMs, double SwiGLU, the weight after w2 ([HF]), double accumulation.
// Official: bf16 GEMM outputs, f32 SwiGLU, the weight applied before w2 and h rounded to bf16,
// accumulation in f32 (acc_f) in the caller's (ascending expert id) order (spec §3.6, §7.2).
void run_expert(const ExpertWeights& ex, const float* xs, int64_t n, const double* weight, double limit, bool clamp,
                bool official, double* acc_rows, float* acc_f, const int64_t* dst_rows, int64_t D, ThreadPool& pool) {
  const int64_t I = ex.w1.out;
  const LinearOut mode = official ? LinearOut::fp8_bf16 : LinearOut::f32;
  std::vector<float> g(static_cast<size_t>(n * I)), u(static_cast<size_t>(n * I)), y(static_cast<size_t>(n * D));
  linear(ex.w1, xs, n, g.data(), pool, mode);
  linear(ex.w3, xs, n, u.data(), pool, mode);
  for (int64_t i = 0; i < n * I; ++i) {
    if (official) {
      float gv = g[i], uv = u[i];
      if (clamp) {
        gv = std::min(gv, static_cast<float>(limit));
        uv = std::clamp(uv, -static_cast<float>(limit), static_cast<float>(limit));
      }
      const float sw = gv / (1.0f + std::exp(-gv)) * uv;
      g[i] = round_bf16(static_cast<float>(weight[i / I]) * sw);
      continue;
    }
    double gv = g[i], uv = u[i];
    if (clamp) {
      gv = std::min(gv, limit);  // gate: from above only
      uv = std::clamp(uv, -limit, limit);
    }
    g[i] = static_cast<float>(silu(gv) * uv);
  }
  linear(ex.w2, g.data(), n, y.data(), pool, mode);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t d = 0; d < D; ++d) {
      if (official) acc_f[dst_rows[r] * D + d] += y[r * D + d];
      else acc_rows[dst_rows[r] * D + d] += weight[r] * y[r * D + d];
    }
}

}  // namespace

void moe(const ModelConfig& cfg, const LayerWeights& layer, const float* x, const int32_t* tokens, int64_t S,
         float* f, ThreadPool& pool, bool official, const MoeEp& ep, int64_t* usage_row) {
  const MoeWeights& m = layer.moe;
  const int64_t D = cfg.hidden_size, E = cfg.n_routed_experts;
  const int K = cfg.experts_per_token;

  // Router: z = x·gateᵀ, s = sqrt(softplus(z)).
  std::vector<std::vector<int64_t>> rows_of(static_cast<size_t>(E));
  std::vector<std::vector<double>> weight_of(static_cast<size_t>(E));
  std::vector<double> score(static_cast<size_t>(E));
  std::vector<int32_t> idx(static_cast<size_t>(E));
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t e = 0; e < E; ++e) score[e] = std::sqrt(softplus(dot(x + s * D, m.gate.data() + e * D, D)));
    std::vector<int32_t> chosen;
    if (layer.spec.hash_routing) {
      const int32_t* row = m.tid2eid.data() + static_cast<int64_t>(tokens[s]) * m.tid2eid_cols;
      for (int k = 0; k < K; ++k)
        if (std::find(chosen.begin(), chosen.end(), row[k]) == chosen.end()) chosen.push_back(row[k]);
    } else {
      std::iota(idx.begin(), idx.end(), 0);
      std::partial_sort(idx.begin(), idx.begin() + K, idx.end(), [&](int32_t a, int32_t b) {
        const double va = score[a] + m.bias[a], vb = score[b] + m.bias[b];
        return va != vb ? va > vb : a < b;
      });
      chosen.assign(idx.begin(), idx.begin() + K);
    }
    double sum = 0;
    for (int32_t e : chosen) sum += score[e];
    for (int32_t e : chosen) {
      if (usage_row) ++usage_row[e];
      const double wgt = cfg.norm_topk_prob ? score[e] / sum : score[e];
      rows_of[e].push_back(s);
      weight_of[e].push_back(wgt * cfg.routed_scaling_factor);
    }
  }

  std::vector<double> acc(official ? 0 : static_cast<size_t>(S * D), 0.0);
  std::vector<float> acc_f(official ? static_cast<size_t>(S * D) : 0, 0.0f);
  std::vector<float> xs;
  // Expert e's rows into (acc | acc_f)[dst[r]] (dst = the rows' tokens, or 0… for a private buffer).
  auto expert = [&](int64_t e, double* a, float* af, const int64_t* dst) {
    const auto& rows = rows_of[e];
    xs.resize(rows.size() * static_cast<size_t>(D));
    for (size_t r = 0; r < rows.size(); ++r) std::copy(x + rows[r] * D, x + (rows[r] + 1) * D, xs.begin() + r * D);
    run_expert(m.experts[e], xs.data(), static_cast<int64_t>(rows.size()), weight_of[e].data(), cfg.swiglu_limit,
               cfg.swiglu_limit > 0, official, a, af, dst, D, pool);
  };
  if (ep.world <= 1) {
    for (int64_t e = 0; e < E; ++e)
      if (!rows_of[e].empty()) expert(e, acc.data(), acc_f.data(), rows_of[e].data());
  } else {
    // The emulated ranks: each runs only the experts it owns (ascending id) and hands the result to
    // the combine — its partial sums, or (exact) every (token, expert) output.
    const EpPlan& plan = ep.plan;
    if (plan.world != ep.world || plan.n_experts != E)
      fail(Status::internal, "moe: expert-parallel plan for {} ranks × {} experts, asked for {} × {}", plan.world,
           plan.n_experts, ep.world, E);
    EpCombineCpu comb(ep.combine, ep.world, S, D, official);
    std::vector<double> part, tmp;
    std::vector<float> part_f, tmp_f;
    std::vector<int64_t> own_rows;
    for (int r = 0; r < ep.world; ++r) {
      if (ep.combine == EpCombine::partial) {
        part.assign(official ? 0 : static_cast<size_t>(S * D), 0.0);
        part_f.assign(official ? static_cast<size_t>(S * D) : 0, 0.0f);
      }
      for (int64_t e = plan.first[static_cast<size_t>(r)]; e < plan.first[static_cast<size_t>(r)] + plan.count[static_cast<size_t>(r)]; ++e) {
        const auto& rows = rows_of[e];
        if (rows.empty()) continue;
        if (ep.combine == EpCombine::partial) {
          expert(e, part.data(), part_f.data(), rows.data());
          continue;
        }
        const size_t n = rows.size();
        tmp.assign(official ? 0 : n * static_cast<size_t>(D), 0.0);
        tmp_f.assign(official ? n * static_cast<size_t>(D) : 0, 0.0f);
        own_rows.resize(n);
        for (size_t i = 0; i < n; ++i) own_rows[i] = static_cast<int64_t>(i);
        expert(e, tmp.data(), tmp_f.data(), own_rows.data());
        std::vector<double> v(static_cast<size_t>(D));
        for (size_t i = 0; i < n; ++i) {
          for (int64_t d = 0; d < D; ++d)
            v[static_cast<size_t>(d)] = official ? tmp_f[i * D + d] : tmp[i * D + d];
          comb.contribute_slot(r, rows[i], e, v);
        }
      }
      if (ep.combine == EpCombine::partial) {
        if (official) part.assign(part_f.begin(), part_f.end());  // exact: floats in double
        comb.contribute_partial(r, part);
      }
    }
    std::vector<double> red(static_cast<size_t>(S * D));
    comb.reduce(red);
    if (official) std::copy(red.begin(), red.end(), acc_f.begin());  // exact: float-valued
    else acc = std::move(red);
  }
  std::vector<int64_t> all(static_cast<size_t>(S));
  std::iota(all.begin(), all.end(), 0);
  std::vector<double> ones(static_cast<size_t>(S), 1.0);
  run_expert(m.shared, x, S, ones.data(), 0.0, /*clamp=*/false, official, acc.data(), acc_f.data(), all.data(), D,
             pool);  // the shared expert last, unclamped
  for (int64_t i = 0; i < S * D; ++i) f[i] = official ? round_bf16(acc_f[i]) : static_cast<float>(acc[i]);
}

}  // namespace dsv4::cpu
