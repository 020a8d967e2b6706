// The CPU reference backend ("reference-f32" of spec §7.3): exact dequantised weights, f32 storage,
// double accumulation, no activation quantisation or bf16 rounding, HF semantics except that the
// shared expert is not clamped. Owns the mmap'd checkpoint, the weights, a thread pool and every
// sequence's state (host memory, addressed by SeqHandle). One forward runs at a time (a mutex);
// chunks of a batch run one after the other. The forward pass itself lives in lib/cpu/forward.cpp.
#pragma once
#include <memory>
#include <mutex>
#include <unordered_map>

#include "dsv4/backend.hpp"
#include "dsv4/cpu/ops.hpp"
#include "dsv4/cpu/state.hpp"
#include "dsv4/cpu/threadpool.hpp"
#include "dsv4/cpu/weights.hpp"
#include "dsv4/kv_cache.hpp"
#include "dsv4/safetensors.hpp"

namespace dsv4::cpu {

class CpuBackend final : public Backend {
 public:
  // Opens and validates the checkpoint (every problem in one Error(format)), resolves weights.
  CpuBackend(const std::string& dir, const ModelConfig& cfg, const BackendOptions& opt, const Logger& log);
  ~CpuBackend() override;

  std::string name() const override { return "cpu"; }
  const ModelConfig& config() const override { return cfg_; }
  SeqHandle create_sequence(int64_t max_context) override;
  void release_sequence(SeqHandle seq) override;
  SeqHandle fork_sequence(SeqHandle seq) override;
  void reset_sequence(SeqHandle seq) override;
  int64_t sequence_position(SeqHandle seq) const override;
  size_t sequence_bytes(SeqHandle seq) const override;
  void forward(std::span<const ForwardChunk> batch) override;
  void forward_mtp(SeqHandle seq, std::span<const float> final_streams, std::span<const int32_t> next_tokens,
                   std::vector<float>& logits_out) override;

 private:
  // ---- forward.cpp: the model, top to bottom ----
  void forward_chunk(SequenceState& st, const ForwardChunk& c);
  void decoder_block(const LayerWeights& L, LayerState& ls, std::vector<float>& X, const int32_t* tokens, int64_t S,
                     int64_t p0);
  // Final HC collapse + norm for `rows` token states X[rows, hc, D] → h[rows, D].
  void head_hidden(const HcWeights& hc, const std::vector<float>& norm, const float* X, int64_t rows, float* h);
  SequenceState& seq(SeqHandle h) const;

  ModelConfig cfg_;
  Logger log_;
  std::unique_ptr<Checkpoint> ckpt_;
  ModelWeights w_;
  std::vector<LayerStateShape> layout_;
  RopeTable rope_sliding_, rope_compressed_;
  HcShape hc_;
  std::unique_ptr<ThreadPool> pool_;
  mutable std::mutex mu_;
  std::unordered_map<SeqHandle, std::unique_ptr<SequenceState>> seqs_;
  SeqHandle next_handle_ = 1;
  bool torch_cpu_ties_ = false;
  std::vector<int64_t>* tie_positions_ = nullptr;  // the running chunk's ForwardChunk::tie_positions_out
  int64_t torch_cpu_row_ = 0;  // the running chunk's ForwardChunk::oracle_length / 4
};

}  // namespace dsv4::cpu
