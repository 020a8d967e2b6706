// One sequence's state in device memory: the CUDA twin of include/dsv4/cpu/state.hpp, with the
// same shapes (include/dsv4/kv_cache.hpp): per layer the window ring (W + rollback slots), the
// append-only compressed entries and indexer keys (capacity grown by doubling), and each
// compressor's ring of raw (kv, gate) rows. Rings are indexed by absolute position and entry
// counts follow from the position (⌊position / ratio⌋), so truncation changes only counters.
// Storage is f32 (values bf16 / FP8 / FP4-representable in official numerics), and the backend's
// StatePool accounts exactly that (f32_state_cost in cuda_backend.cpp); the compact device layout of
// kv_cache.hpp is the next stage.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "device_buffer.hpp"
#include "dsv4/kv_cache.hpp"

namespace dsv4::cuda {

struct DevCompressorState {
  DeviceBuffer kv, gate;  // [ring, width] f32 each
};

struct DevLayerState {
  DeviceBuffer window;     // [window_ring, kv_dim]
  DeviceBuffer entries;    // [entry_cap, kv_dim]
  int64_t entry_cap = 0;
  DeviceBuffer idx_keys;   // [key_cap, index dim]
  int64_t key_cap = 0;
  DevCompressorState main, index;
};

struct DevSequence {
  int64_t position = 0;
  int64_t mtp_position = 0;
  int64_t max_context = 0;
  std::vector<int32_t> tokens;
  std::vector<DevLayerState> layers;  // num_layers (+ MTP)
  int32_t last_sample = -1;
  std::string failure;
  size_t reserved = 0;

  // Rings allocated (and zeroed, so two fresh sequences are byte-identical), no entries yet.
  static DevSequence create(const std::vector<LayerStateShape>& layout, int64_t max_context, cudaStream_t stream);
  // An independent device copy (fork, snapshot, restore): rings and the entries that exist.
  DevSequence clone(const std::vector<LayerStateShape>& layout, int num_main_layers, cudaStream_t stream) const;
  void reset();
  void truncate(int num_main_layers, int64_t position);
  // Capacity for the entries / keys `tokens` tokens emit in layer l (grows by doubling, keeps the
  // first `keep_tokens` tokens' entries).
  void ensure_entries(const std::vector<LayerStateShape>& layout, size_t l, int64_t tokens, int64_t keep_tokens,
                      cudaStream_t stream);
};

// Copies of every layer's rings (the fixed part), to roll back a chunk longer than the rollback
// slots.
struct RingBackup {
  std::vector<DeviceBuffer> bufs;
  void save(const DevSequence& s, cudaStream_t stream);
  void restore(DevSequence& s, cudaStream_t stream) const;
};

}  // namespace dsv4::cuda
