// The CUDA backend's entry point (the class itself is internal: lib/cuda/cuda_backend.hpp).
// Registered as "cuda" in lib/backend_registry.cpp when the build has CUDA.
#pragma once
#include <memory>
#include <string>

#include "dsv4/backend.hpp"

namespace dsv4::cuda {
// Opens the checkpoint, validates it, uploads the weights to device opt.device_ids[0] (default 0).
// Error(unsupported) without a CUDA device; settings (BackendOptions::params): none yet.
std::unique_ptr<Backend> make_cuda_backend(const std::string& dir, const ModelConfig& cfg, const BackendOptions& opt,
                                           const Logger& log);
// dsv4-bench: the same backend over synthetic full-width weights made in device memory
// (lib/cuda/synthetic.hpp: real tensor names, formats, layouts and kernels; random values scaled as
// make-model scales them). For benchmarks only — the outputs are meaningless.
std::unique_ptr<Backend> make_cuda_backend_synthetic(const ModelConfig& cfg, const BackendOptions& opt,
                                                     const Logger& log, uint64_t seed);
}  // namespace dsv4::cuda
