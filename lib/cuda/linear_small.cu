// The decode path of `linear` (lib/cuda/kernels.hpp): placeholder until the bandwidth-bound kernel lands.
#include "kernels.hpp"

namespace dsv4::cuda {
cudaError_t linear_small(const LinearArgs&, cudaStream_t) { return cudaErrorNotSupported; }
}  // namespace dsv4::cuda
