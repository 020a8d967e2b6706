// Synthetic full-width checkpoints for dsv4-bench: the 155 GB Flash model fits neither one H200 nor
// the GPU machine's disk, so the benchmark builds the model's weights directly in device memory.
// Every tensor of expected_tensors(cfg) exists with its real name, dtype and shape (the same loader,
// formats, layouts and kernels as a loaded checkpoint); the small ones (norms, HC, sinks, ape,
// router gate / bias, tid2eid, BF16 linears, embedding, head) are made on the host by make-model's
// own generator, the FP8 / FP4 weights and their scales are left without host bytes and filled on
// the device by the uploader (lib/cuda/weights.cpp) with values drawn the same way.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "dsv4/config.hpp"
#include "dsv4/safetensors.hpp"

namespace dsv4::cuda {

struct SyntheticCheckpoint {
  std::vector<std::vector<uint8_t>> bytes;  // host bytes of the small tensors (the views point here)
  std::unique_ptr<Checkpoint> ckpt;
};

SyntheticCheckpoint make_synthetic_checkpoint(const ModelConfig& cfg, uint64_t seed);

}  // namespace dsv4::cuda
