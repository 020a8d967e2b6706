// Expert parallelism for the CUDA backend (lib/cuda/ep_backend.cpp; design in
// docs/expert-parallel.md): when BackendOptions ask for it — several device ids, or the settings
// ep_ranks=N / ep_transport=nccl|host — make_cuda_backend returns an EpBackend of N ranks instead
// of one CudaBackend.
//   ep_ranks      number of ranks (default: the number of devices); rank r runs on device
//                 devices[r mod |devices|], so ranks may share a device (tests on one GPU);
//   ep_transport  nccl (default when every rank has its own device) or host (same-process copies:
//                 the default, and the only choice, when ranks share a device).
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dsv4/backend.hpp"
#include "ep_transport.hpp"

namespace dsv4::cuda {

struct EpSettings {
  int ranks = 1;
  EpTransportKind transport = EpTransportKind::nccl;
  std::vector<int> devices;                                     // as given (≥ 1)
  std::vector<std::pair<std::string, std::string>> rank_params;  // the other settings, for every rank
};

// nullopt: one device and no ep_* setting (the plain backend). Error(invalid_argument) naming the
// setting for a bad value.
std::optional<EpSettings> ep_settings(const BackendOptions& opt);

std::unique_ptr<Backend> make_ep_backend(const std::string& dir, const ModelConfig& cfg, const BackendOptions& opt,
                                         const Logger& log, const EpSettings& ep);

}  // namespace dsv4::cuda
