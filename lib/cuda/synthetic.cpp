// Synthetic checkpoints (contract in synthetic.hpp).
#include "synthetic.hpp"

#include "dsv4/checkpoint_schema.hpp"
#include "dsv4/model_gen.hpp"

namespace dsv4::cuda {

SyntheticCheckpoint make_synthetic_checkpoint(const ModelConfig& cfg, uint64_t seed) {
  SyntheticCheckpoint s;
  const std::vector<TensorSpec> specs = expected_tensors(cfg);
  std::vector<TensorView> views;
  views.reserve(specs.size());
  s.bytes.reserve(specs.size());
  std::vector<uint8_t> scale_unused;
  for (const TensorSpec& spec : specs) {
    TensorView v;
    v.name = spec.name;
    v.dtype = spec.dtype;
    v.shape = spec.shape;
    v.nbytes = TensorHeader{spec.name, spec.dtype, spec.shape}.nbytes();
    const bool device_made = spec.role == TensorRole::fp8_weight || spec.role == TensorRole::fp8_scale ||
                             spec.role == TensorRole::fp4_weight || spec.role == TensorRole::fp4_scale;
    if (!device_made) {
      s.bytes.emplace_back();
      generate_tensor(cfg, spec, seed, s.bytes.back(), scale_unused);
      v.data = s.bytes.back().data();
    }
    views.push_back(std::move(v));
  }
  s.ckpt = Checkpoint::from_views("synthetic model (device-made weights)", std::move(views));
  return s;
}

}  // namespace dsv4::cuda
