// The linear layer on the tensor cores for many rows (prefill chunks), official numerics: cuBLASLt
// bf16 × bf16 → f32 GEMMs over exactly dequantised weights.
//
// Why this is the same arithmetic as `linear` (lib/cuda/kernels.hpp): in official numerics every
// linear's input is bf16-representable — an FP8 1×128 quantise-dequantised activation (an e4m3
// code times a power of two: 4 significant bits) or a bf16-rounded activation — and so is every
// weight element (an e4m3 / e2m1 code times its e8m0 power-of-two scale, or a BF16 weight). A bf16
// × bf16 product is exact in f32, and cuBLASLt accumulates in f32 (CUBLAS_COMPUTE_32F): the result
// is the same dot product in another summation order, which is the tolerance the tests already
// allow between the GPU and its CPU twin. F32 weights (router gate, HC mixes) are split exactly
// into three bf16 parts. Reference numerics (f32 activations) stay on `linear`.
//
// Data flow of one call: the rows of x (gathered, quantised when asked) → a bf16 matrix; the weight
// (or one expert's) → bf16 (FP8 / FP4 dequantised on the device; BF16 used in place); one GEMM
// (TN: y[rows, out] = X · Wᵀ, f32 out) — cuBLASLt (the default; its tensor cores accumulate all
// of K with truncation: a larger, toward-zero-biased error than an f32 sum, bounded in the tests)
// or gemm_bf16_promoted (setting gemm=promoted: tensor-core partial sums of 16 products added in
// f32, f32-sum accuracy); bf16 rounding of y when asked.
#pragma once
#include <cublasLt.h>

#include <cstdint>
#include <unordered_map>

#include "device_buffer.hpp"
#include "kernels.hpp"
#include "workspace.hpp"

namespace dsv4::cuda {

// Rows from which the forward uses the GEMM path (below: linear / linear_small, bandwidth-bound).
inline constexpr int64_t kGemmMinRows = 17;

// One backend's cuBLASLt handle, its workspace and the algorithm chosen per GEMM shape.
class Gemm {
 public:
  // On the current device; throws dsv4::Error. promoted: the GEMMs run gemm_bf16_promoted (f32
  // accumulation accuracy; cuBLASLt only for shapes it declines), else cuBLASLt throughout (its
  // tensor cores truncate while accumulating over all of K: measured mean error 3.2·u·Σ|x·w| with a
  // toward-zero bias, against 0.2 for an f32 loop — tests/gpu/test_dense_kernels.cpp).
  explicit Gemm(bool promoted = false);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // C[rows, out] (f32, row stride ldc) = A[rows, k] · B[out, k]ᵀ, A and B bf16 (row strides lda,
  // ldb), f32 accumulation. Throws dsv4::Error naming the cuBLASLt status.
  void bf16_nt(const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float* C, int64_t ldc, int64_t rows,
               int64_t out, int64_t k, cudaStream_t stream);

  // `linear` on this path: every LinearArgs feature except expert_ids (the MoE groups its rows per
  // expert and calls bf16_nt itself) — gathered rows, grouped columns (out_group), quant_act,
  // bf16_out; F32 weights (router gate, HC mixes) as three exact bf16 parts (split3_bf16) whose
  // GEMMs are summed in f32. Scratch from ws (the caller rewinds it). False for expert ids and for
  // a quantised grouped input (not a case of the model): the caller uses `linear`.
  bool linear(const LinearArgs& a, Workspace& ws, cudaStream_t stream);

 private:
  struct Key {
    int64_t out, rows, k, lda, ldb, ldc;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const;
  };
  cublasLtHandle_t h_ = nullptr;
  DeviceBuffer ws_;
  bool promoted_ = false;
  std::unordered_map<Key, cublasLtMatmulAlgo_t, KeyHash> algos_;
};

}  // namespace dsv4::cuda
