// Diagnostic launchers for benchmarks only (not part of the engine's contract): timing variants of
// the decode GEMV kernels with a stage left out, to place time inside a kernel without counters
// (docs/kernels.md). Their outputs are garbage except for variant 0.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv4::cuda {

// sm90_fp4_moe_w2_ring (8 warps per CTA) with variant 0 = the real kernel, 1 = no FP4 decode,
// 2 = no MMA, 3 = neither (piece stream + scale math only).
cudaError_t sm90_fp4_moe_w2_ring_variant(int variant, const uint8_t* w2, int num_experts, int64_t hidden,
                                         int64_t inter, const uint16_t* h, int m, const int32_t* topk_ids,
                                         int top_k, uint16_t* y, cudaStream_t stream, bool pdl, bool ids_early,
                                         int warps);

// One ring-type MoE pair (wgmma or ring w1|w3 at 8 warps, then ring w2 with ids read early), PDL
// on, writing per CTA {SM id, start ns, end ns} (globaltimer, low 32 bits) to trace13 / trace2
// (3 words x grid each; the grids are returned). For placement studies in bench_gemv.
cudaError_t sm90_fp4_moe_pair_traced(bool wgmma, const uint8_t* w13, const uint8_t* w2, int num_experts,
                                     int64_t hidden, int64_t inter, const uint16_t* x, int m,
                                     const int32_t* topk_ids, const float* topk_weights, int top_k, uint16_t* h,
                                     uint16_t* y, cudaStream_t stream, uint32_t* trace13, uint32_t* trace2,
                                     int* grid13, int* grid2);

}  // namespace dsv4::cuda
