// Per-device one-time kernel attributes. cudaFuncSetAttribute configures a kernel on the current
// device only, so a function-local `static const cudaError_t attr = cudaFuncSetAttribute(...)`
// (once per process) would leave every other GPU unconfigured: a second device's launch then fails
// for want of its shared-memory opt-in. One PerDeviceOnce per call site (itself a function-local
// static) runs the setting once on each device and remembers that device's result.
#pragma once
#include <cuda_runtime.h>

#include <array>
#include <mutex>

namespace dsv4::cuda {

inline constexpr int kMaxDevicesOnce = 64;

class PerDeviceOnce {
 public:
  template <class F>
  cudaError_t operator()(F&& set) {
    int dev = 0;
    const cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return e;
    if (dev < 0 || dev >= kMaxDevicesOnce) return set();  // beyond the table: every call
    const size_t i = static_cast<size_t>(dev);
    std::call_once(once_[i], [&] { result_[i] = set(); });
    return result_[i];
  }

 private:
  std::array<std::once_flag, kMaxDevicesOnce> once_;
  std::array<cudaError_t, kMaxDevicesOnce> result_{};
};

}  // namespace dsv4::cuda
