// Small random-weight checkpoints for engine tests, generated once per test process into a temp
// folder (no ../shared needed): the "tiny" preset's layer schedule [S S C4 H16 C4 H16] + MTP at a
// 1024-token vocabulary, so a CPU forward costs well under a millisecond per token. With
// `with_tokenizer` the real 129,280-token vocabulary and tokenizer.json are used instead (text, stop
// strings).
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "dsv4/engine.hpp"
#include "dsv4/model_gen.hpp"

namespace dsv4_test {

inline std::string small_model_dir(bool with_tokenizer = false) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() /
                       ("dsv4-test-" + std::to_string(::getpid()) + (with_tokenizer ? "-tok" : "-small"));
  if (fs::exists(dir / "config.json")) return dir.string();
  dsv4::ModelConfig cfg = dsv4::preset_config("tiny");
  nlohmann::json j = cfg.to_json();
  if (!with_tokenizer) j["vocab_size"] = 1024;
  j["max_position_embeddings"] = 4096;
  cfg = dsv4::ModelConfig::from_json(j, "small test model");
  dsv4::GenerateOptions o;
  o.seed = 7;
  o.out_dir = dir.string();
  if (with_tokenizer) o.tokenizer_json = source_dir() + "/data/tokenizer/tokenizer.json";
  fs::create_directories(dir);
  dsv4::generate_model(cfg, o, dsv4::Logger(dsv4::LogLevel::warn));
  return dir.string();
}

// Removes the folders when the test process ends.
struct SmallModelCleanup {
  ~SmallModelCleanup() {
    namespace fs = std::filesystem;
    for (const char* tail : {"-tok", "-small"}) {
      std::error_code ec;
      fs::remove_all(fs::temp_directory_path() / ("dsv4-test-" + std::to_string(::getpid()) + tail), ec);
    }
  }
};

inline std::unique_ptr<dsv4::Model> load_small(dsv4::LoadOptions o = {}, bool with_tokenizer = false) {
  static SmallModelCleanup cleanup;
  if (o.backend_params.empty() && o.backend == "cpu") o.backend_params.emplace_back("threads", "2");
  return dsv4::Model::load(small_model_dir(with_tokenizer), o, dsv4::Logger(dsv4::LogLevel::warn));
}

}  // namespace dsv4_test
