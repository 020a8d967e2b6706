// The two small kernels of expert parallelism (contract in kernels.hpp): the router ids as a rank's
// local expert numbers, and the rank-order sum of the gathered partial MoE outputs. Their CPU
// references are in tests/gpu/test_ep.cpp (a loop each); lib/expert_parallel.cpp's EpCombineCpu is the
// same sum in double.
#include <climits>

#include "dsv4/dtypes.hpp"
#include "kernels.hpp"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void ep_local_ids_kernel(const int32_t* ids, int64_t n, int lo, int hi, int32_t* out) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= n) return;
  const int32_t e = ids[i];
  out[i] = e >= lo && e < hi ? e - lo : -1;
}

// One thread per (token, column): the W partials added in rank order, then the shared expert — the
// same two f32 additions per value as moe_combine's acc + sh when W = 1 (0 + p = p exactly).
__global__ void ep_reduce_kernel(const float* partials, int W, int64_t n, const float* y_shared, bool official,
                                 float* f) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    float acc = 0.0f;
    for (int r = 0; r < W; ++r) acc += partials[r * n + i];
    const float a = acc + y_shared[i];
    f[i] = official ? round_bf16(a) : a;
  }
}

}  // namespace

cudaError_t ep_local_ids(const int32_t* ids, int64_t n, int lo, int hi, int32_t* out, cudaStream_t stream) {
  if (n < 0 || n > INT_MAX) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (!ids || !out || lo < 0 || hi < lo) return cudaErrorInvalidValue;
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  ep_local_ids_kernel<<<blocks, kThreads, 0, stream>>>(ids, n, lo, hi, out);
  return cudaGetLastError();
}

cudaError_t ep_reduce(const float* partials, int W, int64_t S, int64_t D, const float* y_shared, bool official, float* f,
                      cudaStream_t stream) {
  if (S < 0 || D < 0 || W < 1) return cudaErrorInvalidValue;
  const int64_t n = S * D;
  if (n == 0) return cudaSuccess;
  if (!partials || !y_shared || !f) return cudaErrorInvalidValue;
  // Decode (one token, D = 4096): 16 CTAs on as many SMs; prefill: a grid-stride loop over ≤ 4096 CTAs.
  const int64_t want = (n + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(want < 4096 ? want : 4096);
  ep_reduce_kernel<<<blocks, kThreads, 0, stream>>>(partials, W, n, y_shared, official, f);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda
