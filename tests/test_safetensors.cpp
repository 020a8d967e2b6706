// Safetensors reader/writer: round trips, sharded checkpoints, and every loader error of the
// foundation issue (truncated file, header length beyond the file, malformed JSON, offsets out of
// range or overlapping, size ≠ dtype×shape, unknown dtype, tensor missing from its shard, missing
// shard). Each bad file is built byte by byte so the test controls exactly what is wrong.
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <filesystem>
#include <fstream>
#include <string>

#include "catch.hpp"
#include "dsv4/error.hpp"
#include "dsv4/safetensors.hpp"

using namespace dsv4;
namespace fs = std::filesystem;

namespace {
fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("dsv4_test_st_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}
// Raw file: 8-byte length + header text + data bytes.
void write_raw(const fs::path& p, const std::string& header, size_t data_bytes, uint64_t length_override = 0) {
  std::ofstream out(p, std::ios::binary);
  uint64_t n = length_override ? length_override : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header;
  for (size_t i = 0; i < data_bytes; ++i) out.put(static_cast<char>(i));
}
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}
bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }
}  // namespace

TEST_CASE("writer and reader round-trip every dtype with exact bytes", "[safetensors]") {
  fs::path dir = temp_dir("roundtrip");
  SafetensorsWriter w;
  std::vector<float> f = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -1e-3f};
  w.add_values("a.f32", DType::F32, {2, 3}, f);
  std::vector<int64_t> ids = {5, 9, -1};
  w.add_values("b.i64", DType::I64, {3}, ids);
  std::vector<uint8_t> fp8 = {0x00, 0x7e, 0x81, 0x33, 0x12};
  w.add("c.fp8", DType::F8_E4M3, {5}, fp8);
  w.add("d.empty", DType::BF16, {0, 4}, {});
  w.set_metadata("format", "pt");
  w.write((dir / "x.safetensors").string());

  SafetensorsFile r((dir / "x.safetensors").string());
  REQUIRE(r.tensors().size() == 4);
  CHECK(r.metadata().at("format") == "pt");
  const TensorView& a = r.get("a.f32");
  CHECK(a.dtype == DType::F32);
  CHECK(a.shape == std::vector<int64_t>{2, 3});
  auto av = a.as<float>();
  REQUIRE(av.size() == 6);
  for (size_t i = 0; i < 6; ++i) CHECK(av[i] == f[i]);
  auto bv = r.get("b.i64").as<int64_t>();
  CHECK(std::vector<int64_t>(bv.begin(), bv.end()) == ids);
  const TensorView& c = r.get("c.fp8");
  CHECK(std::vector<uint8_t>(c.data, c.data + c.nbytes) == fp8);
  CHECK(r.get("d.empty").numel() == 0);
  CHECK(r.find("nope") == nullptr);
  CHECK(contains(error_of([&] { r.get("nope"); }), "'nope' not found"));
  fs::remove_all(dir);
}

TEST_CASE("sharded checkpoints resolve every tensor through the index", "[safetensors]") {
  fs::path dir = temp_dir("sharded");
  SafetensorsWriter w;
  for (int i = 0; i < 10; ++i) w.add_values("t" + std::to_string(i), DType::F32, {100}, std::vector<float>(100, static_cast<float>(i)));
  int shards = w.write_sharded(dir.string(), 1000);  // 400 bytes per tensor → 2 per shard
  CHECK(shards == 5);
  Checkpoint ck(dir.string());
  CHECK(ck.shards().size() == 5);
  CHECK(ck.names().size() == 10);
  for (int i = 0; i < 10; ++i) CHECK(ck.get("t" + std::to_string(i)).as<float>()[99] == static_cast<float>(i));
  CHECK(ck.total_bytes() == 4000);
  CHECK(contains(error_of([&] { ck.get("t10"); }), "'t10' not found"));
  fs::remove_all(dir);
}

TEST_CASE("loader errors name the file and tensor and never crash", "[safetensors][errors]") {
  fs::path dir = temp_dir("errors");
  const std::string ok_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  auto open_err = [&](const std::string& file) { return error_of([&] { SafetensorsFile f((dir / file).string()); }); };

  SECTION("missing file") { CHECK(contains(open_err("absent.safetensors"), "cannot open")); }
  SECTION("file shorter than the length field") {
    std::ofstream(dir / "short.safetensors") << "abc";
    CHECK(contains(open_err("short.safetensors"), "truncated"));
  }
  SECTION("header length beyond the file") {
    write_raw(dir / "hl.safetensors", "{" + ok_entry + "}", 8, 1u << 20);
    CHECK(contains(open_err("hl.safetensors"), "header length"));
  }
  SECTION("malformed JSON header") {
    write_raw(dir / "json.safetensors", "{\"w\": [1, 2", 0);
    std::string e = open_err("json.safetensors");
    CHECK(contains(e, "malformed JSON"));
    CHECK(contains(e, "json.safetensors"));
  }
  SECTION("data truncated: offsets out of range") {
    write_raw(dir / "trunc.safetensors", "{" + ok_entry + "}", 5);
    std::string e = open_err("trunc.safetensors");
    CHECK(contains(e, "'w'"));
    CHECK(contains(e, "out of range"));
  }
  SECTION("size differs from dtype × shape") {
    write_raw(dir / "size.safetensors", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 16);
    std::string e = open_err("size.safetensors");
    CHECK(contains(e, "'w'"));
    CHECK(contains(e, "needs 12"));
  }
  SECTION("unknown dtype") {
    write_raw(dir / "dt.safetensors", R"({"w":{"dtype":"F4_WEIRD","shape":[2],"data_offsets":[0,8]}})", 8);
    CHECK(contains(open_err("dt.safetensors"), "unknown dtype 'F4_WEIRD'"));
  }
  SECTION("overlapping tensors") {
    write_raw(dir / "ov.safetensors",
              R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
    CHECK(contains(open_err("ov.safetensors"), "overlapping"));
  }
  SECTION("a shape whose byte count would wrap around 2^64") {
    // [1024, 2^52] I64 is 2^65 bytes: it must not wrap to 0 and match empty offsets.
    write_raw(dir / "wrap.safetensors", R"({"w":{"dtype":"I64","shape":[1024,4503599627370496],"data_offsets":[0,0]}})", 8);
    std::string e = open_err("wrap.safetensors");
    CHECK(contains(e, "'w'"));
    CHECK(contains(e, "needs more bytes than the file"));
  }
  SECTION("overlap hidden behind an empty tensor and a short range") {
    write_raw(dir / "ov2.safetensors",
              R"({"a":{"dtype":"U8","shape":[100],"data_offsets":[0,100]},"e":{"dtype":"U8","shape":[0],"data_offsets":[10,10]},)"
              R"("b":{"dtype":"U8","shape":[10],"data_offsets":[50,60]}})",
              100);
    std::string e = open_err("ov2.safetensors");
    CHECK(contains(e, "'a' and 'b' have overlapping"));
  }
  SECTION("offsets that end before they begin, negative shapes, missing fields") {
    write_raw(dir / "rev.safetensors", R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8);
    CHECK(contains(open_err("rev.safetensors"), "end before they begin"));
    write_raw(dir / "neg.safetensors", R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8);
    CHECK(contains(open_err("neg.safetensors"), "non-negative"));
    write_raw(dir / "nofield.safetensors", R"({"w":{"dtype":"F32","shape":[2]}})", 8);
    CHECK(contains(open_err("nofield.safetensors"), "data_offsets"));
  }
  SECTION("index names a missing shard") {
    fs::create_directories(dir / "ck1");
    std::ofstream(dir / "ck1" / "model.safetensors.index.json") << R"({"weight_map":{"w":"model-00001-of-00002.safetensors"}})";
    std::string e = error_of([&] { Checkpoint c((dir / "ck1").string()); });
    CHECK(contains(e, "shard 'model-00001-of-00002.safetensors'"));
    CHECK(contains(e, "missing"));
  }
  SECTION("index lists a tensor its shard lacks") {
    fs::create_directories(dir / "ck2");
    write_raw(dir / "ck2" / "s1.safetensors", "{" + ok_entry + "}", 8);
    std::ofstream(dir / "ck2" / "model.safetensors.index.json") << R"({"weight_map":{"w":"s1.safetensors","v":"s1.safetensors"}})";
    std::string e = error_of([&] { Checkpoint c((dir / "ck2").string()); });
    CHECK(contains(e, "tensor 'v'"));
    CHECK(contains(e, "missing from shard 's1.safetensors'"));
  }
  SECTION("malformed index and empty directory") {
    fs::create_directories(dir / "ck3");
    std::ofstream(dir / "ck3" / "model.safetensors.index.json") << R"({"weight_map": 3})";
    CHECK(contains(error_of([&] { Checkpoint c((dir / "ck3").string()); }), "weight_map"));
    fs::create_directories(dir / "ck4");
    CHECK(contains(error_of([&] { Checkpoint c((dir / "ck4").string()); }), "neither model.safetensors.index.json"));
  }
  fs::remove_all(dir);
}

TEST_CASE("every truncation point of a valid file gives an error, never a crash", "[safetensors][errors]") {
  fs::path dir = temp_dir("cut");
  SafetensorsWriter w;
  w.add_values("a", DType::F32, {3}, std::vector<float>{1, 2, 3});
  w.add_values("b", DType::I32, {2}, std::vector<int32_t>{4, 5});
  w.write((dir / "full.safetensors").string());
  std::ifstream in(dir / "full.safetensors", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    std::ofstream(dir / "cut.safetensors", std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(cut));
    INFO("cut at " << cut << " of " << bytes.size());
    CHECK_THROWS_AS(SafetensorsFile((dir / "cut.safetensors").string()), Error);
  }
  fs::remove_all(dir);
}
