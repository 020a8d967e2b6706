// Safetensors reader/writer (see include/dsv4/safetensors.hpp for the contract).
#include "dsv4/safetensors.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dsv4/error.hpp"
#include "dsv4/json_limits.hpp"

namespace dsv4 {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
struct DTypeInfo {
  DType t;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::BF16, "BF16", 2},       {DType::F16, "F16", 2},         {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},         {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E8M0, "F8_E8M0", 1},
    {DType::I8, "I8", 1},           {DType::U8, "U8", 1},           {DType::I16, "I16", 2},
    {DType::I32, "I32", 4},         {DType::I64, "I64", 8},         {DType::BOOL, "BOOL", 1},
};
constexpr uint64_t kMaxHeader = kMaxSafetensorsHeader;  // a header larger than this is corrupt
// At most this many tensors per file (Flash shards hold ~1,500): bounds the header walk and the
// overlap sort independently of how compactly a hostile header spells its entries.
constexpr size_t kMaxTensorsPerFile = 1u << 20;

// An index entry must name a file inside the checkpoint folder: a plain file name, no directory
// part, not "." or "..". Only the name is checked (not the resolved path), so shards that are
// symlinks (a Hugging Face cache's snapshot → blob links) keep working.
bool plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\\') == std::string::npos && s.find('\0') == std::string::npos;
}
}  // namespace

size_t dtype_size(DType t) { return kDTypes[static_cast<int>(t)].size; }
const char* dtype_name(DType t) { return kDTypes[static_cast<int>(t)].name; }
std::optional<DType> parse_dtype(const std::string& name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return d.t;
  return std::nullopt;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}
std::string TensorView::shape_str() const { return fmt::format("[{}]", fmt::join(shape, ", ")); }
void TensorView::check_view(size_t elem_size, size_t align) const {
  if (elem_size != dtype_size(dtype))
    fail(Status::format, "tensor '{}': viewed with {}-byte elements but its dtype {} has {}", name, elem_size,
         dtype_name(dtype), dtype_size(dtype));
  if (reinterpret_cast<uintptr_t>(data) % align)
    fail(Status::format, "tensor '{}': data is not {}-byte aligned in its file", name, align);
}

// ---- reader ---------------------------------------------------------------------------------
SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(Status::io, "{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(Status::io, "{}: cannot stat: {}", path, std::strerror(e));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    fail(Status::io, "{}: truncated: {} bytes, a safetensors file needs at least the 8-byte header length", path, size_);
  }
  map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail(Status::io, "{}: mmap failed: {}", path, std::strerror(errno));
  }
  try {
    const auto* base = static_cast<const uint8_t*>(map_);
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(base[i]) << (8 * i);
    if (n > size_ - 8)
      fail(Status::io, "{}: truncated: header length {} exceeds the {} bytes after the length field", path, n, size_ - 8);
    if (n > kMaxHeader) fail(Status::format, "{}: header length {} is implausibly large", path, n);
    // Depth-limited: a deeply nested __metadata__ value would otherwise overflow the stack when it
    // is serialised back below.
    const json header = parse_json_bounded(
        std::string_view(reinterpret_cast<const char*>(base + 8), static_cast<size_t>(n)), path + " (JSON header)");
    if (!header.is_object()) fail(Status::format, "{}: JSON header is not an object", path);
    if (header.size() > kMaxTensorsPerFile)
      fail(Status::format, "{}: header lists {} entries (at most {} tensors per file)", path, header.size(),
           kMaxTensorsPerFile);
    const uint8_t* data = base + 8 + n;
    const size_t data_size = size_ - 8 - n;
    struct Range { size_t b, e; size_t idx; };
    std::vector<Range> ranges;
    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const json& v = it.value();
      if (name == "__metadata__") {
        if (!v.is_object()) fail(Status::format, "{}: __metadata__ is not an object", path);
        for (auto m = v.begin(); m != v.end(); ++m)
          metadata_[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
        continue;
      }
      if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
        fail(Status::format, "{}: tensor '{}': entry needs dtype, shape and data_offsets", path, name);
      if (!v["dtype"].is_string()) fail(Status::format, "{}: tensor '{}': dtype is not a string", path, name);
      auto dt = parse_dtype(v["dtype"].get<std::string>());
      if (!dt) fail(Status::format, "{}: tensor '{}': unknown dtype '{}'", path, name, v["dtype"].get<std::string>());
      TensorView t;
      t.name = name;
      t.dtype = *dt;
      if (!v["shape"].is_array()) fail(Status::format, "{}: tensor '{}': shape is not an array", path, name);
      uint64_t numel = 1;
      for (const auto& d : v["shape"]) {
        if (!d.is_number_integer() || d.get<int64_t>() < 0)
          fail(Status::format, "{}: tensor '{}': shape entries must be non-negative integers", path, name);
        uint64_t dd = d.get<uint64_t>();
        if (dd != 0 && numel > (1ull << 62) / dd) fail(Status::format, "{}: tensor '{}': shape overflows", path, name);
        numel *= dd;
        t.shape.push_back(static_cast<int64_t>(dd));
      }
      const json& off = v["data_offsets"];
      if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
        fail(Status::format, "{}: tensor '{}': data_offsets must be two non-negative integers", path, name);
      uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
      if (e < b) fail(Status::format, "{}: tensor '{}': data_offsets [{}, {}] end before they begin", path, name, b, e);
      if (e > data_size)
        fail(Status::io, "{}: tensor '{}': data_offsets [{}, {}] out of range: the file holds {} data bytes (truncated?)",
             path, name, b, e, data_size);
      // Bound the element count by the file before multiplying: a crafted shape must not wrap the
      // byte count (to 0, say) and pass the size check below.
      if (numel > data_size / dtype_size(*dt))
        fail(Status::format, "{}: tensor '{}': dtype {} × shape {} needs more bytes than the file's {} data bytes", path,
             name, dtype_name(*dt), t.shape_str(), data_size);
      uint64_t expect = numel * dtype_size(*dt);
      if (e - b != expect)
        fail(Status::format, "{}: tensor '{}': {} bytes stored but dtype {} × shape {} needs {}", path, name, e - b,
             dtype_name(*dt), t.shape_str(), expect);
      t.data = data + b;
      t.nbytes = static_cast<size_t>(e - b);
      t.file = &path_;
      ranges.push_back({static_cast<size_t>(b), static_cast<size_t>(e), tensors_.size()});
      index_[name] = tensors_.size();
      tensors_.push_back(std::move(t));
    }
    // Empty tensors occupy no bytes; every other range must start at or after the furthest end so far.
    std::erase_if(ranges, [](const Range& r) { return r.b == r.e; });
    std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.b < b.b; });
    size_t furthest = 0;
    for (size_t i = 1; i < ranges.size(); ++i) {
      if (ranges[i].b < ranges[furthest].e)
        fail(Status::format, "{}: tensors '{}' and '{}' have overlapping data_offsets", path,
             tensors_[ranges[furthest].idx].name, tensors_[ranges[i].idx].name);
      if (ranges[i].e > ranges[furthest].e) furthest = i;
    }
  } catch (...) {
    ::munmap(map_, size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}
const TensorView& SafetensorsFile::get(const std::string& name) const {
  if (auto* t = find(name)) return *t;
  fail(Status::format, "{}: tensor '{}' not found", path_, name);
}

// ---- checkpoint -------------------------------------------------------------------------------
Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  // std::filesystem calls use their error_code forms: a name that is too long (or otherwise
  // unusable) is Status::io here, never a std::filesystem_error escaping to the caller.
  fs::path p(dir);
  std::error_code ec;
  auto exists = [&](const fs::path& q) {
    const bool e = fs::exists(q, ec);
    if (ec) fail(Status::io, "{}: cannot access: {}", q.string(), ec.message());
    return e;
  };
  if (!exists(p)) fail(Status::io, "{}: no such file or directory", dir);
  if (fs::is_regular_file(p, ec)) {
    shards_.push_back(std::make_unique<SafetensorsFile>(p.string()));
  } else if (exists(p / "model.safetensors.index.json")) {
    const std::string index_path = (p / "model.safetensors.index.json").string();
    const json idx = parse_json_file(index_path, kMaxIndexJsonBytes);
    if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
      fail(Status::format, "{}: missing object 'weight_map'", index_path);
    std::map<std::string, size_t> shard_of_file;
    std::vector<std::pair<std::string, std::string>> entries;
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        fail(Status::format, "{}: weight_map['{}'] is not a file name", index_path, it.key());
      if (!plain_file_name(it.value().get_ref<const std::string&>()))
        fail(Status::format,
             "{}: weight_map['{}'] = {}: a shard must be a plain file name inside the checkpoint folder (no '/', "
             "not '.' or '..')",
             index_path, it.key(), json_brief(it.value()));
      entries.emplace_back(it.key(), it.value().get<std::string>());
      shard_of_file.emplace(it.value().get<std::string>(), 0);
    }
    for (auto& [file, slot] : shard_of_file) {
      fs::path sp = p / file;
      if (!exists(sp)) fail(Status::io, "{}: shard '{}' listed in the index is missing", dir, file);
      slot = shards_.size();
      shards_.push_back(std::make_unique<SafetensorsFile>(sp.string()));
    }
    for (const auto& [name, file] : entries) {
      const auto& shard = *shards_[shard_of_file[file]];
      const TensorView* t = shard.find(name);
      if (!t) fail(Status::format, "{}: tensor '{}' is listed in the index but missing from shard '{}'", dir, name, file);
      by_name_[name] = t;
    }
    return;
  } else if (exists(p / "model.safetensors")) {
    shards_.push_back(std::make_unique<SafetensorsFile>((p / "model.safetensors").string()));
  } else {
    fail(Status::io, "{}: neither model.safetensors.index.json nor model.safetensors found", dir);
  }
  for (const auto& t : shards_[0]->tensors()) by_name_[t.name] = &t;
}

std::unique_ptr<Checkpoint> Checkpoint::from_views(const std::string& label, std::vector<TensorView> views) {
  std::unique_ptr<Checkpoint> c(new Checkpoint());
  c->dir_ = label;
  c->views_ = std::move(views);
  for (const TensorView& t : c->views_)
    if (!c->by_name_.emplace(t.name, &t).second) fail(Status::format, "{}: tensor '{}' given twice", label, t.name);
  return c;
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}
const TensorView& Checkpoint::get(const std::string& name) const {
  if (auto* t = find(name)) return *t;
  fail(Status::format, "{}: tensor '{}' not found in the checkpoint", dir_, name);
}
std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(by_name_.size());
  for (const auto& kv : by_name_) out.push_back(kv.first);
  return out;
}
size_t Checkpoint::total_bytes() const {
  size_t n = 0;
  for (const auto& kv : by_name_) n += kv.second->nbytes;
  return n;
}

// ---- writer -----------------------------------------------------------------------------------
void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            std::vector<uint8_t> bytes) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  if (static_cast<size_t>(n) * dtype_size(dtype) != bytes.size())
    fail(Status::invalid_argument, "SafetensorsWriter: tensor '{}': {} bytes for dtype {} shape [{}]", name,
         bytes.size(), dtype_name(dtype), fmt::join(shape, ", "));
  entries_.push_back({name, dtype, std::move(shape), std::move(bytes)});
}

size_t SafetensorsWriter::data_bytes() const {
  size_t n = 0;
  for (const auto& e : entries_) n += e.bytes.size();
  return n;
}

size_t TensorHeader::nbytes() const {
  size_t n = dtype_size(dtype);
  for (auto d : shape) n *= static_cast<size_t>(d);
  return n;
}

namespace {
// Writes one file: header for `idx` entries of `all`, then their bytes from `fill` in order.
void write_one(const std::string& path, const std::vector<TensorHeader>& all, const std::vector<size_t>& idx,
               const TensorFiller& fill, const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t off = 0;
  std::vector<size_t> offsets;
  for (size_t i : idx) {
    off = (off + 7) & ~size_t{7};
    offsets.push_back(off);
    header[all[i].name] = {{"dtype", dtype_name(all[i].dtype)}, {"shape", all[i].shape}, {"data_offsets", {off, off + all[i].nbytes()}}};
    off += all[i].nbytes();
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8) h.push_back(' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail(Status::io, "{}: cannot create", path);
  uint64_t n = h.size();
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out.write(len, 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  size_t pos = 0;
  static const char zeros[8] = {};
  std::vector<uint8_t> bytes;
  for (size_t k = 0; k < idx.size(); ++k) {
    bytes.clear();
    fill(idx[k], bytes);
    if (bytes.size() != all[idx[k]].nbytes())
      fail(Status::internal, "{}: tensor '{}': filler produced {} bytes, expected {}", path, all[idx[k]].name, bytes.size(),
           all[idx[k]].nbytes());
    out.write(zeros, static_cast<std::streamsize>(offsets[k] - pos));
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    pos = offsets[k] + bytes.size();
  }
  if (!out) fail(Status::io, "{}: write failed (disk full?)", path);
}
}  // namespace

void write_safetensors_file(const std::string& path, const std::vector<TensorHeader>& tensors, const TensorFiller& fill,
                            const std::map<std::string, std::string>& metadata) {
  std::vector<size_t> idx(tensors.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  write_one(path, tensors, idx, fill, metadata);
}

int write_safetensors_sharded(const std::string& dir, const std::vector<TensorHeader>& tensors, size_t max_shard_bytes,
                              const TensorFiller& fill, const std::map<std::string, std::string>& metadata,
                              bool always_index) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(Status::io, "{}: cannot create the folder: {}", dir, ec.message());
  std::vector<std::vector<size_t>> shards(1);
  size_t cur = 0, total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const size_t nb = tensors[i].nbytes();
    if (cur > 0 && cur + nb > max_shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(i);
    cur += nb;
    total += nb;
  }
  const int n = static_cast<int>(shards.size());
  if (n == 1 && !always_index) {
    write_one((fs::path(dir) / "model.safetensors").string(), tensors, shards[0], fill, metadata);
    return 1;
  }
  json weight_map = json::object();
  for (int s = 0; s < n; ++s) {
    std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, n);
    write_one((fs::path(dir) / file).string(), tensors, shards[static_cast<size_t>(s)], fill, metadata);
    for (size_t i : shards[static_cast<size_t>(s)]) weight_map[tensors[i].name] = file;
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::ofstream out(fs::path(dir) / "model.safetensors.index.json");
  out << index.dump(2) << "\n";
  if (!out) fail(Status::io, "{}: cannot write model.safetensors.index.json", dir);
  return n;
}

std::vector<TensorHeader> SafetensorsWriter::headers() const {
  std::vector<TensorHeader> h;
  for (const auto& e : entries_) h.push_back({e.name, e.dtype, e.shape});
  return h;
}
TensorFiller SafetensorsWriter::filler() const {
  return [this](size_t i, std::vector<uint8_t>& b) { b = entries_[i].bytes; };
}
void SafetensorsWriter::write(const std::string& path) const { write_safetensors_file(path, headers(), filler(), metadata_); }
int SafetensorsWriter::write_sharded(const std::string& dir, size_t max_shard_bytes) const {
  return write_safetensors_sharded(dir, headers(), max_shard_bytes, filler(), metadata_);
}

}  // namespace dsv4
