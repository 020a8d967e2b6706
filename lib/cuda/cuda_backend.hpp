// The CUDA backend (contract: include/dsv4/backend.hpp): the whole DeepSeek-V4 forward on one GPU
// with the weights in their checkpoint formats (lib/cuda/weights.hpp), every sequence's state in
// device memory (lib/cuda/state.hpp) and the kernels of lib/cuda/kernels.hpp, in the numerics the
// options ask for (official — DeepSeek's bf16 run, tested against the CPU backend's official twin
// — or reference). Bookkeeping follows the CPU backend exactly (lib/cpu/cpu_backend.cpp): one step
// at a time, chunks one after the other, each rolled back on failure; submit() runs the step,
// wait() hands its result over. The forward pass itself lives in lib/cuda/forward.cpp and reads
// like lib/cpu/forward.cpp.
//
// This stage: one chunk at a time (no cross-sequence batching inside a step yet), logits and
// sampling through the host, no CUDA graphs; f32 state storage. Prefill chunks in official numerics
// run their linears and routed experts on the tensor cores (lib/cuda/gemm.hpp; setting gemm=off
// turns that off), decode chunks on the bandwidth-bound linear kernels.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "dsv4/backend.hpp"
#include "dsv4/cpu/weights.hpp"
#include "dsv4/kv_cache.hpp"
#include "dsv4/safetensors.hpp"
#include "gemm.hpp"
#include "kernels.hpp"
#include "state.hpp"
#include "weights.hpp"
#include "workspace.hpp"

namespace dsv4::cuda {

class EpTransport;

// One rank of an expert-parallel backend (lib/cuda/ep_backend.cpp runs W of them): it holds the
// routed experts [first, first + count) and exchanges its MoE partial sums through `transport`.
// transport null: no expert parallelism (every expert, no exchange).
struct EpRank {
  int rank = 0, world = 1;
  int first = 0, count = -1;
  EpTransport* transport = nullptr;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(const std::string& dir, const ModelConfig& cfg, const BackendOptions& opt, const Logger& log,
              const EpRank& ep = {});
  // Over an open checkpoint (a synthetic one: null data for the weights the uploader makes on the
  // device; `keep` owns the host bytes its views point at).
  CudaBackend(std::unique_ptr<Checkpoint> ckpt, std::vector<std::vector<uint8_t>> keep, const ModelConfig& cfg,
              const BackendOptions& opt, const Logger& log, const EpRank& ep = {});
  ~CudaBackend() override;

  std::string name() const override { return "cuda"; }
  const ModelConfig& config() const override { return cfg_; }
  SeqHandle create_sequence(int64_t max_context) override;
  void release_sequence(SeqHandle seq) override;
  SeqHandle fork_sequence(SeqHandle seq) override;
  void reset_sequence(SeqHandle seq) override;
  int64_t sequence_position(SeqHandle seq) const override;
  std::vector<int32_t> sequence_tokens(SeqHandle seq) const override;
  int64_t sequence_max_context(SeqHandle seq) const override;
  void truncate_sequence(SeqHandle seq, int64_t position) override;
  SnapshotHandle snapshot_sequence(SeqHandle seq) override;
  SeqHandle restore_snapshot(SnapshotHandle snap, int64_t max_context) override;
  void release_snapshot(SnapshotHandle snap) override;
  StateMemory memory() const override;
  StepId submit(std::span<const ForwardChunk> batch) override;
  StepResult wait(StepId step) override;
  void forward_mtp(SeqHandle seq, std::span<const float> final_streams, std::span<const int32_t> next_tokens,
                   std::vector<float>& logits_out) override;

  // Device bytes by category (weights by dtype, sequence state, workspace), one line.
  std::string memory_line() const;

 private:
  // ---- forward.cpp: the model, top to bottom ----
  void forward_chunk(DevSequence& st, std::span<const int32_t> tokens, const ForwardChunk& c, ChunkResult& out);
  void decoder_block(const DevLayer& L, size_t layer_slot, DevSequence& st, float*& X, float*& Xn,
                     const int32_t* tokens_d, int64_t S, int64_t p0, int64_t keep_tokens);
  void attention(const DevLayer& L, size_t layer_slot, DevSequence& st, const float* x, int64_t S, int64_t p0,
                 int64_t keep_tokens, float* a);
  void moe(const DevLayer& L, const float* x, const int32_t* tokens_d, int64_t S, float* f);
  void head_hidden(const DevHc& hc, const float* norm, const float* X, int64_t rows, float* h);
  // On the main stream unless `on` is given (a side stream: decode-size chunks only, which never
  // take the GEMM path and its workspace scratch).
  void lin(const WeightView& w, const float* x, int64_t rows, float* y, bool quant, bool bf16,
           cudaStream_t on = nullptr);
  void run_linear(const LinearArgs& a, cudaStream_t on = nullptr);  // the GEMM path for prefill chunks where it applies, else linear()
  void experts_gemm(const DevExperts& E, const float* x, const int32_t* ids, const float* wts, int64_t S,
                    float* ys, const int32_t*& y_rows);
  HcParams hc_params(const DevHc& h) const;
  const float* hc_partials(const DevHc& h, const float* X, int64_t S);
  void upload_slot_rows(int64_t S);

  // ---- cuda_backend.cpp: bookkeeping ----
  DevSequence& seq(SeqHandle h) const;
  DevSequence& seq_any(SeqHandle h) const;
  SeqHandle add_sequence(DevSequence st);
  StepResult run_step(std::span<const ForwardChunk> batch);
  void run_chunk(DevSequence& st, const ForwardChunk& c, ChunkResult& out);

  ModelConfig cfg_;
  Logger log_;
  EpRank ep_;
  int device_ = 0;
  bool official_ = false;
  std::vector<std::vector<uint8_t>> keep_;
  std::unique_ptr<Checkpoint> ckpt_;
  cpu::ModelWeights host_;  // the loader's views (resolution + validation); the mmap stays open
  DeviceWeights w_;
  std::vector<LayerStateShape> layout_;
  std::unique_ptr<StatePool> state_pool_;
  std::unique_ptr<Stream> stream_;  // created after cudaSetDevice
  cudaStream_t stream() const { return stream_->get(); }
  // The side stream of hc_pre's Sinkhorn (hc_fork): forked after the mixes, joined before hc_post.
  std::unique_ptr<Stream> side_;
  std::unique_ptr<Event> fork_ev_, join_ev_;
  // The shared expert's stream (moe_fork, decode-size chunks): beside the router and the routed experts.
  std::unique_ptr<Stream> side2_;
  std::unique_ptr<Event> fork2_ev_, join2_ev_;
  bool moe_fork_ = true;
  bool hc_fork_ = true;
  bool fuse_ = true;  // fuse=off: the unfused norm / RoPE / FP8-simulation launches
  bool no_small_mma_ = true;  // linear_mma=on: decode FP8 linears on the tensor cores (off by default)
  Workspace ws_;
  std::unique_ptr<Gemm> gemm_;  // cuBLASLt for prefill chunks (official numerics); null = off (gemm=off)
  bool no_mma_ = false;         // attn_mma=off: attention on the CUDA-core kernel only
  const int32_t* slot_rows_ = nullptr;  // the running chunk's MoE slot → token map (in ws_)
  mutable std::mutex mu_;
  std::unordered_map<SeqHandle, std::unique_ptr<DevSequence>> seqs_;
  std::unordered_map<SnapshotHandle, std::unique_ptr<DevSequence>> snapshots_;
  std::map<StepId, StepResult> done_;
  SeqHandle next_handle_ = 1;
  StepId next_step_ = 1;
};

}  // namespace dsv4::cuda
