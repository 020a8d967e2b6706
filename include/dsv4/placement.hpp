// Expert placement for the single-GPU offload (issue 17; design to come in docs/offload.md): which
// routed-expert records of which layer stay in HBM and which live in pinned host memory, decided
// at load from router statistics under an HBM budget for the experts.
//
// Usage statistics: how often each (layer, expert) was chosen over some text, collected by the CPU
// backend (`dsv4 calibrate`). Hash-routed layers are counted the same way: their experts follow
// from the token ids through tid2eid. The placement keeps the most used records resident (ties to
// the lower layer, then the lower expert id: deterministic), offloads the rest; without statistics
// every record weighs the same (uniform routing: the order alone decides).
//
// Files (JSON, validated on read; errors name the file and the field):
//   usage:     {"format": "dsv4-expert-usage", "version": 1, "layers": L, "experts": E,
//               "tokens": T, "top_k": K, "counts": [[c_l0_e0, …], …]}          (L rows of E)
//   placement: {"format": "dsv4-expert-placement", "version": 1, "layers": L, "experts": E,
//               "record_bytes": B, "budget_bytes": H, "resident": R,
//               "offloaded": [[expert ids of layer 0], …]}                    (L rows, ascending)
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dsv4/config.hpp"

namespace dsv4 {

struct ExpertUsage {
  int64_t layers = 0, experts = 0;  // layers = the MoE layers counted (incl. the MTP block's)
  int64_t tokens = 0;               // tokens run through the model
  int top_k = 0;
  std::vector<int64_t> counts;      // [layers × experts]: times chosen
  int64_t& at(int64_t l, int64_t e) { return counts[static_cast<size_t>(l * experts + e)]; }
  int64_t at(int64_t l, int64_t e) const { return counts[static_cast<size_t>(l * experts + e)]; }
};

// Rows for every MoE layer of cfg (num_layers + num_mtp_layers), zero counts.
ExpertUsage empty_usage(const ModelConfig& cfg);

struct ExpertPlacement {
  int64_t layers = 0, experts = 0;
  int64_t record_bytes = 0, budget_bytes = 0;
  std::vector<uint8_t> offloaded;  // [layers × experts]: 1 = in host memory
  bool is_offloaded(int64_t l, int64_t e) const { return offloaded[static_cast<size_t>(l * experts + e)] != 0; }
  int64_t resident() const;
  int64_t offloaded_count() const { return layers * experts - resident(); }
};

// Keeps ⌊budget_bytes / record_bytes⌋ records resident (all of them when they fit), the most used
// first; `usage` may be null (uniform). usage's shape must match cfg's (else Error(invalid_argument)).
ExpertPlacement plan_placement(const ModelConfig& cfg, const ExpertUsage* usage, int64_t record_bytes,
                               int64_t budget_bytes);

void write_usage(const std::string& path, const ExpertUsage& u);
ExpertUsage read_usage(const std::string& path, const ModelConfig& cfg);  // Error(format) naming the field
void write_placement(const std::string& path, const ExpertPlacement& p);
ExpertPlacement read_placement(const std::string& path, const ModelConfig& cfg);

}  // namespace dsv4
