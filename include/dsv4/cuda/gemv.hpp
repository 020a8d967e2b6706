// Decode GEMV launchers for sm_90a (H100/H200): FP8 block-scaled linears and the FP4 routed-expert
// MoE, M = 1..16 tokens. Weights must be in the tile layouts of dsv4/cuda/gemv_layout.hpp (built
// once at load time); activations are bf16 and are quantised inside the kernels exactly as spec
// §5.1 prescribes. Every launcher is asynchronous on `stream`, validates its arguments, checks the
// launch and returns cudaSuccess or the first error (cudaErrorInvalidValue for bad arguments).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace dsv4::cuda {

inline constexpr int kGemvMaxTokens = 16;

// Workspace rules (all launchers): `workspace` is device memory of at least the queried size,
// zero-filled once after allocation (cudaMemsetAsync); the kernels leave their counters at zero
// again, so it can be reused by later launches in stream order (and inside CUDA graphs). One
// workspace must not be used by two launches that may run concurrently. A workspace sized for m
// serves every launch with m' <= m (other arguments equal). Sizes depend on the current device's
// SM count, so query them on the device that launches.

// ---- FP8 block-scaled linear: y[m, n] = bf16( sum_kb sx[m,kb] s[n/128,kb] sum_k qx qw ) (§5.4) ----
// w_tiled: fp8_relayout() of the e4m3 [n, k] weight (fp8_tiled_bytes(n, k) bytes, 16-byte aligned).
// w_scale: e8m0 [ceil(n/128), ceil(k/128)] in checkpoint layout (codes 0..254; 255 = NaN).
// x: bf16 bits [m, k] row-major, 16-byte aligned; k % 8 == 0. y: bf16 bits [m, n] row-major.
// 1 <= m <= 16, n >= 1. Matrices that share an input (wq_a|wkv, w1|w3) are meant to be
// concatenated along n at load time (n of the first a multiple of 128) and launched once.
size_t sm90_fp8_gemv_workspace_bytes(int64_t n, int64_t k, int m);
cudaError_t sm90_fp8_gemv(const uint8_t* w_tiled, const uint8_t* w_scale, int64_t n, int64_t k,
                          const uint16_t* x, int m, uint16_t* y, void* workspace,
                          size_t workspace_bytes, cudaStream_t stream);

// Kernel behind sm90_fp8_gemv. kAuto picks per shape at launch (sm90_fp8_gemv_choice); tests and
// benchmarks force one. kStream: persistent CTAs, bulk-copy smem ring + producer warp, cross-CTA
// split-K. kDirect: warps load A fragments straight into registers, split-K only inside a CTA;
// needs m * (ceil(k/128)*128 + 16) bytes of activations in shared memory (else kStream is used).
// kRing: 8 warps per CTA, each streaming its fragments through its own bulk-copy ring in shared
// memory, two CTAs per SM (falls back to kAuto's other choices where its shared memory does not fit).
// Same contract, layout and workspace for all; results agree within the stated tolerance.
enum class Fp8GemvPath : int { kAuto = 0, kStream = 1, kDirect = 2, kRing = 4 };
Fp8GemvPath sm90_fp8_gemv_choice(int64_t n, int64_t k, int m);
cudaError_t sm90_fp8_gemv_path(Fp8GemvPath path, const uint8_t* w_tiled, const uint8_t* w_scale,
                               int64_t n, int64_t k, const uint16_t* x, int m, uint16_t* y,
                               void* workspace, size_t workspace_bytes, cudaStream_t stream,
                               bool pdl = true);

// ---- FP4 routed experts of one MoE layer (§3.6, §5.5) -----------------------------------------
// Expert e's tiled w1|w3 lives at w13 + e * fp4_w13_expert_bytes(inter, hidden) and its tiled w2 at
// w2 + e * fp4_w2_expert_bytes(hidden, inter) (fp4_relayout_w13 / fp4_relayout_w2).
// x: bf16 [m, hidden] (hidden % 8 == 0, 16-byte aligned); topk_ids: int32 [m, top_k] expert ids,
// read on the device (ids outside [0, num_experts) mark an unused slot: it contributes nothing);
// topk_weights: f32 [m, top_k] routing weights. top_k must be 4 or 6; inter must be even.
// A slot (token t, j) with expert e computes, as the reference does:
//   g = bf16(FP4Linear_w1_e(x_t)), u = bf16(FP4Linear_w3_e(x_t)),
//   h = bf16(w_tj * silu(min(g, 10)) * clamp(u, -10, 10)),  y_tj = bf16(FP4Linear_w2_e(h))
// and y[t] = bf16( sum over the token's valid slots, in ascending expert id, of f32(y_tj) ).
// A slot repeated inside one token is computed twice (each with its own weight). Experts chosen
// by several tokens are read once per launch (up to 8 tokens per pass for m <= 8, 16 otherwise).
// Where the ring-type pair fits (m <= 8 and both stages' shared memory; at Flash shapes up to m = 4)
// it runs the wgmma pair (MoePath::kWgmma below): g and u come from the FP8 tensor cores, within the
// same bound as the f32 paths but not always bit-identical to them; else the streaming pair.
size_t sm90_fp4_moe_workspace_bytes(int64_t hidden, int64_t inter, int m, int top_k);
cudaError_t sm90_fp4_moe_gemv(const uint8_t* w13, const uint8_t* w2, int num_experts,
                              int64_t hidden, int64_t inter, const uint16_t* x, int m,
                              const int32_t* topk_ids, const float* topk_weights, int top_k,
                              uint16_t* y, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream);

// The two launches of sm90_fp4_moe_gemv, exposed for tests and for callers that fuse differently.
// Stage 1 writes, for every valid slot p = t*top_k + j, h quantised per 128 inputs (§5.1):
// hq e4m3 [m*top_k, hq_stride] (hq_stride = sm90_fp4_moe_hq_stride(inter)) and hs f32 scales
// [m*top_k, hq_stride/128]; entries of invalid slots are left untouched.
// Stage 2 reads them (with the same ids) and writes y bf16 [m, hidden].
int64_t sm90_fp4_moe_hq_stride(int64_t inter);
size_t sm90_fp4_moe_w13_workspace_bytes(int64_t hidden, int64_t inter, int m, int top_k);
size_t sm90_fp4_moe_w2_workspace_bytes(int64_t hidden, int64_t inter, int m, int top_k);
cudaError_t sm90_fp4_moe_w13(const uint8_t* w13, int num_experts, int64_t hidden, int64_t inter,
                             const uint16_t* x, int m, const int32_t* topk_ids,
                             const float* topk_weights, int top_k, uint8_t* hq, float* hs,
                             void* workspace, size_t workspace_bytes, cudaStream_t stream);
cudaError_t sm90_fp4_moe_w2(const uint8_t* w2, int num_experts, int64_t hidden, int64_t inter,
                            const uint8_t* hq, const float* hs, int m, const int32_t* topk_ids,
                            int top_k, uint16_t* y, void* workspace, size_t workspace_bytes,
                            cudaStream_t stream);

// ---- FP4 MoE "ring" pair (m <= 8, hidden % 8 == 0, inter % 8 == 0; sm90_fp4_moe_ring_ok) ------
// Same numerics as the two stages above, no workspace: stage 1 writes h before quantisation,
// bf16 [m*top_k, sm90_fp4_moe_h_stride(inter)] (h = bf16(w * silu(min(g,10)) * clamp(u,±10)),
// columns >= inter and rows of invalid slots untouched); stage 2 quantises h per 128 (§5.1) itself.
// pdl: launch with programmatic dependent launch (see docs/kernels.md). warps: CTA size, 8 or 16
// (0 = the default, 8); a tuning knob for tests and benchmarks, same results. ids_early (stage 2 only):
// read topk_ids before waiting for the previous kernel; allowed only if no kernel that may still be
// running when this one starts writes topk_ids (sm90_fp4_moe_gemv uses it: its w1|w3 launch sits
// between whatever produced the ids and the w2 launch).
int64_t sm90_fp4_moe_h_stride(int64_t inter);
bool sm90_fp4_moe_ring_ok(int64_t hidden, int64_t inter, int m, int top_k, int warps = 0);
cudaError_t sm90_fp4_moe_w13_ring(const uint8_t* w13, int num_experts, int64_t hidden, int64_t inter,
                                  const uint16_t* x, int m, const int32_t* topk_ids,
                                  const float* topk_weights, int top_k, uint16_t* h,
                                  cudaStream_t stream, bool pdl = true, int warps = 0);
cudaError_t sm90_fp4_moe_w2_ring(const uint8_t* w2, int num_experts, int64_t hidden, int64_t inter,
                                 const uint16_t* h, int m, const int32_t* topk_ids, int top_k,
                                 uint16_t* y, cudaStream_t stream, bool pdl = true,
                                 bool ids_early = false, int warps = 0);

// sm90_fp4_moe_w13_ring's contract (bf16 h, m <= 8, sm90_fp4_moe_ring_ok) on the FP8 tensor cores
// (wgmma m64n8k32 e4m3: FP4 codes placed exactly into e4m3 A fragments, x quantised per 128 as in
// §5.1, every 32-input group's product promoted to f32 with its scales). The tensor cores keep fewer
// accumulator bits inside a group than an f32 sum: h stays within the same bound (one bf16 ulp of
// g and u, then h's rounding) but only ≈ 96–98 % of it is bit-identical to the f64 reference
// (≈ 99 % for the f16 mma.sync ring kernel). Faster, most of all for m > 1 (docs/performance.md).
cudaError_t sm90_fp4_moe_w13_wgmma(const uint8_t* w13, int num_experts, int64_t hidden, int64_t inter,
                                   const uint16_t* x, int m, const int32_t* topk_ids,
                                   const float* topk_weights, int top_k, uint16_t* h, cudaStream_t stream,
                                   bool pdl = true);

// sm90_fp4_moe_gemv with the pair forced: kStream = the streaming pair (any m, workspace counters);
// kRing = ring w1|w3 + ring w2; kWgmma = wgmma w1|w3 + ring w2 (kRing / kWgmma fail with
// cudaErrorInvalidValue where they do not fit); kAuto = what sm90_fp4_moe_gemv runs: the wgmma
// pair where it fits, else the streaming pair.
enum class MoePath : int { kAuto = 0, kStream = 1, kRing = 2, kWgmma = 3 };
cudaError_t sm90_fp4_moe_gemv_path(MoePath path, const uint8_t* w13, const uint8_t* w2,
                                   int num_experts, int64_t hidden, int64_t inter,
                                   const uint16_t* x, int m, const int32_t* topk_ids,
                                   const float* topk_weights, int top_k, uint16_t* y,
                                   void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace dsv4::cuda
