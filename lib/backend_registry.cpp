// The backends of this build (contract in include/dsv4/backend.hpp): a constant table, one line
// per backend. A backend adds its factory here and nowhere else; Model::load and the tools find it
// by name. Constant data, not a mutable registry: static-library builds cannot drop an entry.
#include "dsv4/backend.hpp"
#include "dsv4/cpu/cpu_backend.hpp"
#include "dsv4/null_backend.hpp"
#ifdef DSV4_HAVE_CUDA
#include "dsv4/cuda/cuda_backend.hpp"
#endif

namespace dsv4 {
namespace {
std::unique_ptr<Backend> make_cpu(const std::string& dir, const ModelConfig& cfg, const BackendOptions& opt,
                                  const Logger& log) {
  return std::make_unique<cpu::CpuBackend>(dir, cfg, opt, log);
}

constexpr BackendEntry kBackends[] = {
    {"cpu", "reference f32 on exactly dequantised weights (host memory)", &make_cpu},
#ifdef DSV4_HAVE_CUDA
    {"cuda", "the whole forward on one NVIDIA GPU (sm_90a), weights in their FP8 / FP4 checkpoint formats",
     &cuda::make_cuda_backend},
#endif
    {"null", "no model computation: scheduling and serving overhead (ids from a hash of the sequence)",
     &make_null_backend},
};
}  // namespace

std::span<const BackendEntry> registered_backends() { return kBackends; }

}  // namespace dsv4
