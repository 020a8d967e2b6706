// The reference fixtures of ../shared/fixtures (tiny checkpoints with transformers float64 outputs):
// one opener for the CPU and the GPU tests. open_fixture returns null when ../shared is absent
// (the caller warns and skips).
#pragma once
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "catch.hpp"
#include "dsv4/quant.hpp"
#include "dsv4/safetensors.hpp"

namespace dsv4_test {

struct Fixture {
  std::string dir;
  nlohmann::json meta;
  std::unique_ptr<dsv4::SafetensorsFile> ref;
  std::vector<int32_t> ids(const std::string& name) const { return dsv4::to_i32(ref->get(name)); }
  std::vector<float> f32(const std::string& name) const { return dsv4::to_f32(ref->get(name)); }
  int prompts() const { return static_cast<int>(meta["prompts"].size()); }
};

inline std::unique_ptr<Fixture> open_fixture(const std::string& name) {
  const std::filesystem::path d = std::filesystem::path(shared_dir()) / "fixtures" / name;
  if (!std::filesystem::exists(d / "reference.safetensors")) return nullptr;
  auto f = std::make_unique<Fixture>();
  f->dir = d.string();
  std::ifstream in(d / "reference.json");
  f->meta = nlohmann::json::parse(in);
  f->ref = std::make_unique<dsv4::SafetensorsFile>((d / "reference.safetensors").string());
  return f;
}

}  // namespace dsv4_test
