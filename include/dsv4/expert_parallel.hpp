// Expert parallelism (docs/expert-parallel.md): which rank owns which routed expert, what each rank
// reads from which checkpoint shard, and the combine of the ranks' routed-expert outputs.
//
// Placement: whole experts, contiguous blocks — expert e lives on rank floor(e·W/E). Everything
// that is not a routed expert (embedding, attention, compressors, indexer, router, shared expert,
// HC, norms, head, MTP) is replicated, so at batch 1 every rank computes the same routing and only
// the routed experts' sum crosses ranks.
//
// Combine: each rank sums the experts it owns (ascending id) for every token; the partials are added
// in rank order (EpCombine::partial, one hidden-size vector per token and rank) — every replica gets
// the same bits, the f32 summation order differs from one device's. EpCombine::exact instead
// gathers every (token, expert) output and sums them in ascending expert id, as one device does:
// bit-identical to world size 1 for any W, at top-k times the bytes (validation, and the reference
// the partial mode is measured against).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "dsv4/config.hpp"

namespace dsv4 {

class Checkpoint;

inline constexpr int kMaxEpWorld = 64;

enum class EpCombine { partial, exact };

// Rank of routed expert `e` of `n_experts` over `world` ranks (contiguous blocks that differ in size
// by at most one).
int ep_owner(int64_t e, int64_t n_experts, int world);

// The routed expert a tensor belongs to ("…ffn.experts.<e>.…"), else -1 (a replicated tensor).
int64_t routed_expert_of(const std::string& tensor_name);

struct EpRead {
  std::string tensor;
  std::string file;  // the shard holding it
  size_t bytes = 0;
};

struct EpPlan {
  int world = 1;
  int64_t n_experts = 0;
  std::vector<int> owner;           // [n_experts] rank of each routed expert
  std::vector<int64_t> first, count;  // [world] each rank's block of experts
  // With a checkpoint (make_ep_plan's second form): per rank, the tensors it loads (its experts and
  // every replicated tensor, sorted by name), their bytes, and how many of them are routed experts'.
  std::vector<std::vector<EpRead>> reads;
  std::vector<size_t> bytes, expert_bytes;
};

// world in [1, min(n_routed_experts, kMaxEpWorld)], else Error(invalid_argument).
EpPlan make_ep_plan(const ModelConfig& cfg, int world);
EpPlan make_ep_plan(const ModelConfig& cfg, const Checkpoint& ck, int world);

// The combine of one MoE layer's routed outputs over `world` ranks, as a transport sees it: every
// rank contributes, then every rank receives the same reduced rows. The CPU emulation's transport;
// the NCCL one (lib/cuda) keeps the interface and sums in the same order.
//   partial: contribute_partial(r, rows × width values) once per rank; reduce() = Σ_r in rank order.
//   exact:   contribute_slot(r, row, expert, values) for each (token, expert) the rank computed;
//            reduce() = per row, Σ over its slots in ascending expert id.
// Sums are in double (reference numerics accumulate in double) or float (`f32`), starting from +0.
class EpCombineCpu {
 public:
  EpCombineCpu(EpCombine mode, int world, int64_t rows, int64_t width, bool f32);
  void contribute_partial(int rank, std::span<const double> partial);
  void contribute_slot(int rank, int64_t row, int64_t expert, std::span<const double> values);
  // out[rows × width]: the reduced rows (every rank would receive this).
  void reduce(std::span<double> out) const;
  int world() const { return world_; }

 private:
  struct Slot {
    int64_t row, expert;
    size_t offset;
  };
  EpCombine mode_;
  int world_;
  int64_t rows_, width_;
  bool f32_;
  std::vector<std::vector<double>> partials_;  // [world][rows × width]
  std::vector<Slot> slots_;
  std::vector<double> slot_values_;
  std::vector<int> contributed_;
};

}  // namespace dsv4
