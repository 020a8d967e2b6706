// CPU reference of the quantised linears and the FP4 MoE (see dsv4/cpu/gemv_ref.hpp): a direct
// transcription of spec §3.6 and §5.1-§5.5 with float64 accumulation, favouring clarity over
// speed. Rounding points that the official run has (bf16 of g, u, h and of each expert output)
// are applied here too.
#include "dsv4/cpu/gemv_ref.hpp"

#include <algorithm>
#include <cmath>

#include "dsv4/dtypes.hpp"

namespace dsv4::cpu {

void quantize_act_row(const uint16_t* x, int64_t k, uint8_t* q, uint8_t* scale) {
  for (int64_t b = 0; b * 128 < k; ++b) {
    const int64_t k0 = b * 128, k1 = std::min<int64_t>(k, k0 + 128);
    float amax = 0.f;
    for (int64_t i = k0; i < k1; ++i) amax = std::max(amax, std::fabs(bf16_to_f32(x[i])));
    const uint8_t e = fp8_act_scale_e8m0(amax);
    const float s = e8m0_to_f32(e);
    scale[b] = e;
    for (int64_t i = k0; i < k1; ++i) q[i] = f32_to_e4m3(bf16_to_f32(x[i]) / s);  // exact division
  }
}

void fp8_linear_ref(const uint8_t* w, const uint8_t* s, int64_t n, int64_t k, const uint16_t* x,
                    int m, double* y, double* abs_sum) {
  const int64_t kb_n = (k + 127) / 128;
  std::vector<uint8_t> q(static_cast<size_t>(k)), qs(static_cast<size_t>(kb_n));
  std::vector<double> wq(static_cast<size_t>(k));
  for (int i = 0; i < m; ++i) {
    quantize_act_row(x + i * k, k, q.data(), qs.data());
    for (int64_t o = 0; o < n; ++o) {
      double acc = 0, aabs = 0;
      for (int64_t kb = 0; kb < kb_n; ++kb) {
        const double sc = double(e8m0_to_f32(qs[kb])) * e8m0_to_f32(s[(o / 128) * kb_n + kb]);
        double blk = 0, babs = 0;
        for (int64_t kk = kb * 128; kk < std::min<int64_t>(k, kb * 128 + 128); ++kk) {
          const double t = double(e4m3_to_f32(q[kk])) * e4m3_to_f32(w[o * k + kk]);
          blk += t;
          babs += std::fabs(t);
        }
        acc += blk * sc;
        aabs += babs * sc;
      }
      y[i * n + o] = acc;
      if (abs_sum) abs_sum[i * n + o] = aabs;
    }
  }
}

void fp4_linear_ref(const uint8_t* w, const uint8_t* s, int64_t n, int64_t k, const uint8_t* q,
                    const uint8_t* qs, double* y, double* abs_sum, double* max_term) {
  const int64_t kh = (k + 1) / 2, kb32 = (k + 31) / 32;
  for (int64_t o = 0; o < n; ++o) {
    double acc = 0, aabs = 0, amax = 0;
    for (int64_t b = 0; b < kb32; ++b) {
      const double sw = e8m0_to_f32(s[o * kb32 + b]);
      for (int64_t kk = b * 32; kk < std::min<int64_t>(k, b * 32 + 32); ++kk) {
        const double wv = e2m1_to_f32(fp4_get(w + o * kh, kk));
        const double t = double(e4m3_to_f32(q[kk])) * wv * sw * e8m0_to_f32(qs[kk / 128]);
        acc += t;
        aabs += std::fabs(t);
        amax = std::max(amax, std::fabs(t));
      }
    }
    y[o] = acc;
    if (abs_sum) abs_sum[o] = aabs;
    if (max_term) max_term[o] = amax;
  }
}

MoeRef fp4_moe_ref(const std::vector<MoeExpertRef>& experts, int64_t hidden, int64_t inter,
                   const uint16_t* x, int m, const int32_t* ids, const float* weights, int top_k) {
  const int64_t P = int64_t{m} * top_k, ib = (inter + 127) / 128;
  const auto PI = static_cast<size_t>(P * inter), PH = static_cast<size_t>(P * hidden);
  MoeRef r;
  r.g.assign(PI, 0.f);
  r.u.assign(PI, 0.f);
  r.g_abs.assign(PI, 0.);
  r.u_abs.assign(PI, 0.);
  r.h.assign(PI, 0.f);
  r.hq.assign(PI, 0);
  r.hs.assign(static_cast<size_t>(P * ib), 0);
  r.y_slot.assign(PH, 0.);
  r.y_slot_abs.assign(PH, 0.);
  r.y_slot_max.assign(PH, 0.);
  r.y.assign(static_cast<size_t>(m * hidden), 0.);
  const int E = static_cast<int>(experts.size());
  std::vector<uint8_t> qx(static_cast<size_t>(hidden)), qxs(static_cast<size_t>((hidden + 127) / 128));
  std::vector<double> gd(static_cast<size_t>(inter)), ud(static_cast<size_t>(inter));
  std::vector<uint16_t> hb(static_cast<size_t>(inter));
  for (int t = 0; t < m; ++t) {
    quantize_act_row(x + t * hidden, hidden, qx.data(), qxs.data());
    for (int j = 0; j < top_k; ++j) {
      const int64_t p = int64_t{t} * top_k + j;
      const int e = ids[p];
      if (e < 0 || e >= E) continue;  // unused slot
      const MoeExpertRef& ex = experts[static_cast<size_t>(e)];
      fp4_linear_ref(ex.w1, ex.s1, inter, hidden, qx.data(), qxs.data(), gd.data(),
                     &r.g_abs[static_cast<size_t>(p * inter)], nullptr);
      fp4_linear_ref(ex.w3, ex.s3, inter, hidden, qx.data(), qxs.data(), ud.data(),
                     &r.u_abs[static_cast<size_t>(p * inter)], nullptr);
      for (int64_t i = 0; i < inter; ++i) {
        const float g = round_bf16(static_cast<float>(gd[i]));
        const float u = round_bf16(static_cast<float>(ud[i]));
        r.g[p * inter + i] = g;
        r.u[p * inter + i] = u;
        const double gc = std::min(double(g), 10.0), uc = std::clamp(double(u), -10.0, 10.0);
        const double silu = gc / (1.0 + std::exp(-gc));
        const float h = round_bf16(static_cast<float>(double(weights[p]) * (silu * uc)));
        r.h[p * inter + i] = h;
        hb[i] = f32_to_bf16(h);
      }
      quantize_act_row(hb.data(), inter, &r.hq[p * inter], &r.hs[p * ib]);
      fp4_linear_ref(ex.w2, ex.s2, hidden, inter, &r.hq[p * inter], &r.hs[p * ib],
                     &r.y_slot[p * hidden], &r.y_slot_abs[p * hidden], &r.y_slot_max[p * hidden]);
    }
    // [OFF] adds the experts' bf16 outputs in ascending expert id (ties: slot order).
    std::vector<int> order;
    for (int j = 0; j < top_k; ++j)
      if (ids[t * top_k + j] >= 0 && ids[t * top_k + j] < E) order.push_back(j);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return ids[t * top_k + a] < ids[t * top_k + b]; });
    for (int64_t o = 0; o < hidden; ++o) {
      float acc = 0.f;  // f32 accumulation of bf16 values, as the official run does
      for (int j : order) acc += round_bf16(static_cast<float>(r.y_slot[(t * top_k + j) * hidden + o]));
      r.y[t * hidden + o] = acc;
    }
  }
  return r;
}

}  // namespace dsv4::cpu
