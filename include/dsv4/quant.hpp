// Dequantisation of checkpoint tensors to f32 on the CPU (spec §2.3), and the quantisers the
// generator and tests use to produce checkpoint-format tensors from f32 values.
//   FP8: w[o,i] = e4m3(W[o,i]) · 2^(S[o/128, i/128] − 127)
//   FP4: w[o,i] = e2m1(nibble(o,i)) · 2^(S[o, i/32] − 127), low nibble = even i
// Every function checks the tensors' dtypes and shapes against each other and throws Error(format)
// naming the tensor on mismatch. Outputs are caller-owned, row-major [out, in] f32.
#pragma once
#include <cstdint>
#include <vector>

#include "dsv4/safetensors.hpp"

namespace dsv4 {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Row primitives, shared by the whole-tensor functions below and the CPU backend's on-the-fly
// dequantisation (so the tested path and the engine's path are the same code). `in` elements.
void decode_bf16_row(const uint8_t* src, int64_t in, float* dst);  // little-endian bf16 pairs
// FP8 row: codes [in], its e8m0 scales [ceil(in/block_in)] (the row's block row of the scale).
void dequant_fp8_row(const uint8_t* codes, const uint8_t* scales, int64_t in, int block_in, float* dst);
// FP4 row: packed [in/2] (low nibble = even element), e8m0 scales [ceil(in/block)]; block even.
void dequant_fp4_row(const uint8_t* packed, const uint8_t* scales, int64_t in, int block, float* dst);

// BF16 / F32 / F16 tensor to f32 (any shape, row-major).
std::vector<float> to_f32(const TensorView& t);
// FP8 weight [out, in] + e8m0 block scale [ceil(out/bo), ceil(in/bi)] to f32 [out, in].
std::vector<float> dequant_fp8(const TensorView& weight, const TensorView& scale, int block_out = 128, int block_in = 128);
// FP4 weight stored as I8 [out, in/2] + e8m0 scale [out, ceil(in/blk)] to f32 [out, in].
std::vector<float> dequant_fp4(const TensorView& weight, const TensorView& scale, int block = 32);
// Integer tensor (I64/I32) to int32 values, range-checked.
std::vector<int32_t> to_i32(const TensorView& t);

// Quantisers used by the generator: per-block power-of-two scales chosen as
// 2^ceil(log2(amax / maxcode)) so no value saturates; results in checkpoint layout.
struct Fp8Quantized { std::vector<uint8_t> codes, scales; };
Fp8Quantized quantize_fp8_block(const float* w, int64_t out, int64_t in, int block_out = 128, int block_in = 128);
struct Fp4Quantized { std::vector<uint8_t> packed, scales; };
Fp4Quantized quantize_fp4_block(const float* w, int64_t out, int64_t in, int block = 32);

}  // namespace dsv4
