// Safetensors reader and checkpoint index. Input byte 0 even: the rest is one .safetensors file
// (SafetensorsFile, every tensor's bytes touched); odd: the rest is model.safetensors.index.json
// over a folder with two valid shards and a file next to the folder. Invariants: only dsv4::Error
// escapes; every tensor lies inside the mapping; an accepted checkpoint opened only files directly
// inside its folder.
#include <cstdint>
#include <filesystem>
#include <fstream>

#include "dsv4/error.hpp"
#include "dsv4/safetensors.hpp"
#include "fuzz_util.hpp"

namespace fs = std::filesystem;
using namespace dsv4;

namespace {
struct Folder {
  fs::path root, dir;
  Folder() {
    const fs::path base = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    root = base / ("dsv4-fuzz-st-" + std::to_string(::getpid()));
    dir = root / "ckpt";
    fs::create_directories(dir);
    SafetensorsWriter a;
    a.add_values<float>("a", DType::F32, {2}, {1.0f, 2.0f});
    a.add_values<uint16_t>("b", DType::BF16, {3}, {1, 2, 3});
    a.write((dir / "model-00001-of-00002.safetensors").string());
    SafetensorsWriter c;
    c.add_values<int64_t>("c", DType::I64, {1}, {7});
    c.write((dir / "model-00002-of-00002.safetensors").string());
    c.write((root / "outside.safetensors").string());
    fs::create_directories(dir / "sub");
    c.write((dir / "sub" / "nested.safetensors").string());
  }
  ~Folder() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
};

volatile uint64_t g_sink;  // keeps the reads of tensor bytes

uint64_t touch(const TensorView& t) {
  uint64_t s = t.nbytes;
  if (t.nbytes) s += t.data[0] + t.data[t.nbytes - 1];
  return s;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  auto& tally = dsv4_fuzz::tally("safetensors + index");
  uint64_t sink = 0;
  if ((data[0] & 1) == 0) {
    const std::string path = dsv4_fuzz::memfd_with(data + 1, size - 1);
    try {
      SafetensorsFile f(path);
      for (const auto& t : f.tensors()) {
        sink += touch(t);
        FUZZ_CHECK(f.find(t.name) == &t);
        FUZZ_CHECK(t.numel() >= 0);
      }
      for (const auto& [k, v] : f.metadata()) sink += k.size() + v.size();
      tally.ok();
    } catch (const Error& e) {
      tally.error(e.status());
    }
    g_sink = sink;
    return 0;
  }
  static Folder folder;
  {
    std::ofstream out(folder.dir / "model.safetensors.index.json", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data + 1), static_cast<std::streamsize>(size - 1));
  }
  try {
    Checkpoint c(folder.dir.string());
    for (const auto& s : c.shards()) FUZZ_CHECK(fs::path(s->path()).parent_path() == folder.dir);
    for (const auto& n : c.names()) sink += touch(c.get(n));
    sink += c.total_bytes();
    tally.ok();
  } catch (const Error& e) {
    tally.error(e.status());
  }
  g_sink = sink;
  return 0;
}
