// Hyper-connections (spec §3.2.1 hc_pre with Sinkhorn, §3.2.2 hc_post, §3.7 the head's collapse),
// one token at a time. Mixes layout: [pre 0..hc−1 | post hc..2hc−1 | comb row-major hc×hc].
// Everything in double internally: these are short vectors and the Sinkhorn loop is sensitive.
// Official numerics round the collapse, the mix and the head's collapse to bf16 (spec §7.2); the
// f32-vs-double difference inside is part of the CUDA twin's tolerance.
#include <cmath>
#include <vector>

#include "dsv4/cpu/ops.hpp"
#include "dsv4/dtypes.hpp"

namespace dsv4::cpu {
namespace {

double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// m[i] = (v · fn[i]) / rms(v) for the `mix` rows of fn, v = the hc streams concatenated.
std::vector<double> mixes(const HcShape& s, const std::vector<float>& fn, int64_t mix, const float* X) {
  const int64_t width = s.hc * s.D;
  double ss = 0;
  for (int64_t i = 0; i < width; ++i) ss += static_cast<double>(X[i]) * X[i];
  const double r = 1.0 / std::sqrt(ss / static_cast<double>(width) + s.norm_eps);
  std::vector<double> m(static_cast<size_t>(mix));
  for (int64_t i = 0; i < mix; ++i) m[static_cast<size_t>(i)] = dot(X, fn.data() + i * width, width) * r;
  return m;
}

}  // namespace

void hc_pre(const HcShape& s, const HcWeights& w, const float* X, float* x_out, float* post, float* comb) {
  const int hc = s.hc;
  const int64_t mix = static_cast<int64_t>(2 + hc) * hc;
  const std::vector<double> m = mixes(s, w.fn, mix, X);
  std::vector<double> pre(static_cast<size_t>(hc)), C(static_cast<size_t>(hc * hc));
  for (int j = 0; j < hc; ++j) {
    pre[j] = sigmoid(m[j] * w.scale[0] + w.base[j]) + s.hc_eps;
    post[j] = static_cast<float>(2.0 * sigmoid(m[hc + j] * w.scale[1] + w.base[hc + j]));
  }
  for (int k = 0; k < hc * hc; ++k) C[k] = m[2 * hc + k] * w.scale[2] + w.base[2 * hc + k];
  auto col_norm = [&] {
    for (int k = 0; k < hc; ++k) {
      double cs = 0;
      for (int j = 0; j < hc; ++j) cs += C[j * hc + k];
      for (int j = 0; j < hc; ++j) C[j * hc + k] /= cs + s.hc_eps;
    }
  };
  // Row softmax + eps, then column normalisation, then (iters − 1) × (row, column).
  for (int j = 0; j < hc; ++j) {
    double mx = C[j * hc];
    for (int k = 1; k < hc; ++k) mx = std::max(mx, C[j * hc + k]);
    double sum = 0;
    for (int k = 0; k < hc; ++k) sum += (C[j * hc + k] = std::exp(C[j * hc + k] - mx));
    for (int k = 0; k < hc; ++k) C[j * hc + k] = C[j * hc + k] / sum + s.hc_eps;
  }
  col_norm();
  for (int it = 1; it < s.sinkhorn_iters; ++it) {
    for (int j = 0; j < hc; ++j) {
      double rs = 0;
      for (int k = 0; k < hc; ++k) rs += C[j * hc + k];
      for (int k = 0; k < hc; ++k) C[j * hc + k] /= rs + s.hc_eps;
    }
    col_norm();
  }
  for (int k = 0; k < hc * hc; ++k) comb[k] = static_cast<float>(C[k]);
  for (int64_t d = 0; d < s.D; ++d) {
    double acc = 0;
    for (int j = 0; j < hc; ++j) acc += pre[j] * X[j * s.D + d];
    x_out[d] = s.official ? round_bf16(static_cast<float>(acc)) : static_cast<float>(acc);
  }
}

void hc_post(const HcShape& s, const float* y, const float* R, const float* post, const float* comb, float* X_new) {
  const int hc = s.hc;
  for (int k = 0; k < hc; ++k) {
    float* dst = X_new + k * s.D;
    for (int64_t d = 0; d < s.D; ++d) {
      double acc = static_cast<double>(post[k]) * y[d];
      for (int j = 0; j < hc; ++j) acc += static_cast<double>(comb[j * hc + k]) * R[j * s.D + d];
      dst[d] = s.official ? round_bf16(static_cast<float>(acc)) : static_cast<float>(acc);
    }
  }
}

void hc_head(const HcShape& s, const HcWeights& w, const float* X, float* h) {
  const int hc = s.hc;
  const std::vector<double> m = mixes(s, w.fn, hc, X);
  std::vector<double> pre(static_cast<size_t>(hc));
  for (int j = 0; j < hc; ++j) pre[j] = sigmoid(m[j] * w.scale[0] + w.base[j]) + s.hc_eps;
  for (int64_t d = 0; d < s.D; ++d) {
    double acc = 0;
    for (int j = 0; j < hc; ++j) acc += pre[j] * X[j * s.D + d];
    h[d] = s.official ? round_bf16(static_cast<float>(acc)) : static_cast<float>(acc);
  }
}

}  // namespace dsv4::cpu
