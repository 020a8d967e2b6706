// `dsv4 inspect <model-dir>`: config summary, layer schedule, tensor census by dtype with bytes and
// the validation result; exit code 1 when the checkpoint does not match its config.
#include <fmt/format.h>

#include <filesystem>
#include <map>

#include "args.hpp"
#include "commands.hpp"
#include "dsv4/checkpoint_schema.hpp"
#include "dsv4/config.hpp"
#include "dsv4/safetensors.hpp"

namespace dsv4::cli {

int cmd_inspect(const Args& args) {
  Flags f(args, {"experts-per-token"});
  if (f.positional().size() != 1) fail(Status::invalid_argument, "usage: dsv4 inspect <model-dir> [--experts-per-token K]");
  const std::string dir = f.positional()[0];
  ModelConfig cfg = ModelConfig::from_file((std::filesystem::path(dir) / "config.json").string());
  if (f.has("experts-per-token")) cfg.override_experts_per_token(static_cast<int>(f.get_int("experts-per-token", 0)));
  Checkpoint ckpt(dir);

  fmt::print("model        {}\n", dir);
  fmt::print("vocab        {}\n", cfg.vocab_size);
  fmt::print("hidden       {}   layers {} (+{} MTP)   heads {} × {} (rope {})\n", cfg.hidden_size, cfg.num_layers,
             cfg.num_mtp_layers, cfg.num_heads, cfg.head_dim, cfg.rope_dim);
  fmt::print("q_lora       {}   o_groups {} × {}   window {}\n", cfg.q_lora_rank, cfg.o_groups, cfg.o_lora_rank,
             cfg.sliding_window);
  fmt::print("indexer      {} heads × {}   top-{}\n", cfg.index_n_heads, cfg.index_head_dim, cfg.index_topk);
  fmt::print("hc           {} streams   sinkhorn {}\n", cfg.hc_mult, cfg.hc_sinkhorn_iters);
  fmt::print("moe          {} experts × {}   top-{}{}   hash layers {}   scale {}   swiglu clamp {}\n",
             cfg.n_routed_experts, cfg.moe_intermediate_size, cfg.experts_per_token,
             cfg.experts_per_token != cfg.config_experts_per_token ? fmt::format(" (config {})", cfg.config_experts_per_token) : "",
             cfg.num_hash_layers, cfg.routed_scaling_factor, cfg.swiglu_limit);
  fmt::print("rope         θ {} (sliding)   θ {} (compressed){}\n", cfg.rope_theta, cfg.compress_rope_theta,
             cfg.yarn.enabled ? fmt::format("   YaRN ×{} orig {} β {}/{}", cfg.yarn.factor, cfg.yarn.original_max_position,
                                            cfg.yarn.beta_fast, cfg.yarn.beta_slow)
                              : "");
  fmt::print("schedule     {}\n", cfg.schedule_string());
  fmt::print("             (S sliding, C4 compressed-sparse + indexer, H<m> heavily compressed, # hash-routed)\n");

  std::map<std::string, std::pair<size_t, size_t>> census;  // dtype → (count, bytes)
  size_t count = 0, bytes = 0;
  for (const auto& shard : ckpt.shards())
    for (const auto& t : shard->tensors()) {
      auto& c = census[dtype_name(t.dtype)];
      c.first++;
      c.second += t.nbytes;
      count++;
      bytes += t.nbytes;
    }
  fmt::print("\ntensors      {} in {} shard(s), {:.3f} GB\n", count, ckpt.shards().size(), bytes / 1e9);
  fmt::print("  {:<10} {:>8} {:>16}\n", "dtype", "count", "bytes");
  for (const auto& [dt, c] : census) fmt::print("  {:<10} {:>8} {:>16}\n", dt, c.first, c.second);

  ValidationReport rep = validate_checkpoint(ckpt, cfg);
  for (const auto& n : rep.notes) fmt::print("note: {}\n", n);
  if (rep.ok()) {
    fmt::print("\nvalidation   OK: every expected tensor present with the expected dtype and shape\n");
    return 0;
  }
  fmt::print("\nvalidation   FAILED: {} problem(s)\n", rep.problems.size());
  for (const auto& p : rep.problems) fmt::print("  {}\n", p);
  return 1;
}

}  // namespace dsv4::cli
