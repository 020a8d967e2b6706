// `dsv4 make-model`: writes a random-weight checkpoint in the upstream format (lib/model_gen.cpp).
#include <filesystem>

#include "args.hpp"
#include "commands.hpp"
#include "dsv4/model_gen.hpp"

namespace dsv4::cli {

int cmd_make_model(const Args& args) {
  Flags f(args, {"preset", "layers", "experts", "experts-per-token", "seed", "out", "tokenizer", "shard-mb"});
  ModelConfig cfg = preset_config(f.get("preset", "tiny"));
  apply_overrides(cfg, static_cast<int>(f.get_int("layers", 0)), static_cast<int>(f.get_int("experts", 0)),
                  static_cast<int>(f.get_int("experts-per-token", 0)));
  GenerateOptions opt;
  opt.seed = static_cast<uint64_t>(f.get_int("seed", 0));
  opt.out_dir = f.require("out");
  opt.max_shard_bytes = static_cast<size_t>(f.get_int("shard-mb", 1024)) << 20;
  // The DeepSeek-V4 tokenizer ships with the project (data/tokenizer/); --tokenizer overrides it.
  namespace fs = std::filesystem;
  const fs::path data = fs::path(DSV4_SOURCE_DIR) / "data" / "tokenizer";
  opt.tokenizer_json = f.get("tokenizer", (data / "tokenizer-v4-reconstructed.json").string());
  if (!f.has("tokenizer") && fs::exists(data / "tokenizer_config.json"))
    opt.tokenizer_config = (data / "tokenizer_config.json").string();
  generate_model(cfg, opt, Logger::from_env());
  return 0;
}

}  // namespace dsv4::cli
