// Test-only: makes a chosen chunk of a CpuBackend step fail part-way (after some layers ran), to
// check that no sequence is left half-advanced. Internal header (tests include it from lib/).
#pragma once
#include "dsv4/cpu/cpu_backend.hpp"

namespace dsv4::cpu {

struct FaultInjector {
  // The `nth` chunk (0 = the next one) run from now on throws Error(backend) on entering decoder
  // layer `layer`; layer −1 disarms.
  static void arm(CpuBackend& be, int layer, int nth) {
    std::lock_guard<std::mutex> lk(be.mu_);
    be.fault_layer_ = layer;
    be.fault_countdown_ = nth;
  }
};

}  // namespace dsv4::cpu
