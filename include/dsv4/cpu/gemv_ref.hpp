// Readable CPU reference of the quantised decode linears (spec §5.1, §5.4, §5.5) and of the FP4
// routed-expert MoE (§3.6), in checkpoint layouts, accumulating in float64. It defines what the
// CUDA GEMV kernels must compute and is usable by the CPU backend. Outputs are the exact values
// before the final bf16 rounding, plus error scales (sum of |terms|) for tolerances.
#pragma once
#include <cstdint>
#include <vector>

namespace dsv4::cpu {

// §5.1: quantise one bf16 row of length k per 1x128 block (the last block may be shorter).
// q: k e4m3 codes; scale: ceil(k/128) e8m0 codes (powers of two).
void quantize_act_row(const uint16_t* x, int64_t k, uint8_t* q, uint8_t* scale);

// §5.4 FP8 linear for m bf16 rows: w e4m3 [n, k], s e8m0 [ceil(n/128), ceil(k/128)].
// y[i*n + o] = sum_kb sx[i,kb] * s[o/128,kb] * sum_k qx*qw (float64, before the bf16 rounding);
// abs_sum (optional) = the same sum over |terms|.
void fp8_linear_ref(const uint8_t* w, const uint8_t* s, int64_t n, int64_t k, const uint16_t* x,
                    int m, double* y, double* abs_sum);

// §5.5 FP4 linear of one already quantised row: w codes [n, k/2] (low nibble = even k),
// s e8m0 [n, ceil(k/32)]; q e4m3 [k], qs e8m0 [ceil(k/128)]. Optional abs_sum and max_term
// (largest |term| of each output).
void fp4_linear_ref(const uint8_t* w, const uint8_t* s, int64_t n, int64_t k, const uint8_t* q,
                    const uint8_t* qs, double* y, double* abs_sum, double* max_term);

struct MoeExpertRef {
  const uint8_t *w1, *s1, *w3, *s3;  // [inter, hidden/2] codes, [inter, ceil(hidden/32)] scales
  const uint8_t *w2, *s2;            // [hidden, inter/2] codes, [hidden, ceil(inter/32)] scales
};

// Everything the MoE reference produces, per slot p = t*top_k + j (entries of invalid slots,
// ids outside [0, experts.size()), are zero).
struct MoeRef {
  std::vector<float> g, u;          // [P, inter] bf16(FP4Linear_w1/w3(x)) (before the clamps)
  std::vector<double> g_abs, u_abs; // [P, inter] sum of |terms| of g and u
  std::vector<float> h;             // [P, inter] bf16(w * silu(min(g,10)) * clamp(u,-10,10))
  std::vector<uint8_t> hq, hs;      // [P, inter] e4m3 and [P, ceil(inter/128)] e8m0 of h (§5.1)
  std::vector<double> y_slot, y_slot_abs, y_slot_max;  // [P, hidden] w2 outputs before bf16
  std::vector<double> y;            // [m, hidden] sum of bf16(y_slot), ascending expert id
};

MoeRef fp4_moe_ref(const std::vector<MoeExpertRef>& experts, int64_t hidden, int64_t inter,
                   const uint16_t* x, int m, const int32_t* ids, const float* weights, int top_k);

}  // namespace dsv4::cpu
