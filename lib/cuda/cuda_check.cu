// Device query helpers shared by the CUDA backend.
#include <cuda_runtime.h>

namespace dsv4::cuda {
// Number of visible CUDA devices, 0 when the driver or a device is absent (never throws).
int device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}
}  // namespace dsv4::cuda
