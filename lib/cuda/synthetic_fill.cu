// Device-side random weight bytes for synthetic benchmark models (contract in kernels.hpp): one
// splitmix64 hash per 8 output bytes, so filling 125 GB takes seconds, not the host's minutes.
#include <algorithm>

#include "kernels.hpp"

#include "dsv4/dtypes.hpp"

namespace dsv4::cuda {
namespace {

__device__ __forceinline__ uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

enum class Kind { fp8, bytes, scale };

__global__ void fill_kernel(uint8_t* dst, int64_t n, uint64_t seed, Kind kind, float amp, int base, int jitter) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * 8;
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 8; i < n; i += stride) {
    const uint64_t h = mix(seed ^ mix(static_cast<uint64_t>(i)));
    uint64_t word = 0;
    for (int j = 0; j < 8; ++j) {
      const uint8_t r = static_cast<uint8_t>(h >> (8 * j));
      uint8_t v = r;
      if (kind == Kind::fp8) {
        const float u = (static_cast<float>(r) + 0.5f) * (2.0f / 256.0f) - 1.0f;  // U[-1, 1), 256 levels
        v = f32_to_e4m3(amp * u);
      } else if (kind == Kind::scale) {
        v = static_cast<uint8_t>(base + (static_cast<int>(r % 3) - 1) * jitter);
      }
      word |= static_cast<uint64_t>(v) << (8 * j);
    }
    // One 8-byte store where the destination allows it (arena tensors are 256-byte aligned).
    if (i + 8 <= n && (reinterpret_cast<uintptr_t>(dst + i) & 7) == 0) {
      *reinterpret_cast<uint64_t*>(dst + i) = word;
    } else {
      for (int j = 0; j < 8 && i + j < n; ++j) dst[i + j] = static_cast<uint8_t>(word >> (8 * j));
    }
  }
}

cudaError_t launch(uint8_t* dst, int64_t n, uint64_t seed, Kind kind, float amp, int base, int jitter,
                   cudaStream_t stream) {
  if (n < 0 || (n > 0 && !dst)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((n / 8 + 255) / 256 + 1, 132 * 16);
  fill_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(dst, n, seed, kind, amp, base, jitter);
  return cudaGetLastError();
}

}  // namespace

cudaError_t fill_fp8_codes(uint8_t* dst, int64_t n, uint64_t seed, float amp, cudaStream_t stream) {
  if (!(amp > 0.0f && amp <= 448.0f)) return cudaErrorInvalidValue;
  return launch(dst, n, seed, Kind::fp8, amp, 0, 0, stream);
}
cudaError_t fill_random_bytes(uint8_t* dst, int64_t n, uint64_t seed, cudaStream_t stream) {
  return launch(dst, n, seed, Kind::bytes, 0.0f, 0, 0, stream);
}
cudaError_t fill_scale_codes(uint8_t* dst, int64_t n, uint64_t seed, int base, int jitter, cudaStream_t stream) {
  if (base - jitter < 0 || base + jitter > 254) return cudaErrorInvalidValue;
  return launch(dst, n, seed, Kind::scale, 0.0f, base, jitter, stream);
}

}  // namespace dsv4::cuda
