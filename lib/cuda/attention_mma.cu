// sparse_attention on the tensor cores (lib/cuda/kernels.hpp): placeholder until the kernel lands.
#include "kernels.hpp"

namespace dsv4::cuda {
cudaError_t sparse_attention_mma(const AttentionArgs&, cudaStream_t) { return cudaErrorNotSupported; }
}  // namespace dsv4::cuda
