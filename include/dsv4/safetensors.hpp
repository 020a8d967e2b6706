// Safetensors reader (mmap, zero-copy) and writer, single files and sharded checkpoints.
//
// A SafetensorsFile owns one read-only mapping; TensorView points into it and is valid while the
// file (or the Checkpoint holding it) lives. Opening validates the whole header up front — header
// length, JSON, every entry's dtype/shape/offsets, overlaps — and throws dsv4::Error naming the file
// and tensor on the first problem, so later accesses never read out of bounds. Headers are at most
// 100 MB (the safetensors crate's limit) and 2^20 tensors, JSON nested at most 64 levels
// (dsv4/json_limits.hpp). A Checkpoint is a directory with `model.safetensors.index.json`
// (weight_map name → shard) or a single `model.safetensors`; every shard is opened and every index
// entry checked at open time. Index entries must be plain file names inside the directory (no '/',
// not "." or ".."; Status::format otherwise): only the name is checked, so shards that are symlinks,
// as in a Hugging Face cache, still load.
// Thread-safety: all const methods may be called concurrently.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace dsv4 {

enum class DType : uint8_t { BF16, F16, F32, F64, F8_E4M3, F8_E8M0, I8, U8, I16, I32, I64, BOOL };

size_t dtype_size(DType t);
const char* dtype_name(DType t);           // safetensors spelling ("BF16", "F8_E4M3", ...)
std::optional<DType> parse_dtype(const std::string& name);

struct TensorView {
  std::string name;
  DType dtype{};
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // nbytes bytes, little-endian, row-major; not necessarily aligned
  size_t nbytes = 0;
  const std::string* file = nullptr;  // path of the file holding it (for error messages)

  int64_t numel() const;
  int64_t dim(size_t i) const { return shape.at(i); }
  std::string shape_str() const;  // "[a, b]"
  // Typed zero-copy view; throws Error(format) when the element size differs from the dtype's or
  // the data is not aligned for T (safetensors does not promise alignment: use memcpy then).
  template <typename T> std::span<const T> as() const {
    check_view(sizeof(T), alignof(T));
    return {reinterpret_cast<const T*>(data), nbytes / sizeof(T)};
  }
  void check_view(size_t elem_size, size_t align) const;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`; throws Error(io|format) naming the file (and tensor) on any problem.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const TensorView* find(const std::string& name) const;  // nullptr when absent
  const TensorView& get(const std::string& name) const;   // throws naming file and tensor
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

class Checkpoint {
 public:
  // `dir` holds model.safetensors.index.json (+ shards) or model.safetensors; `dir` may also be a
  // single .safetensors file.
  explicit Checkpoint(const std::string& dir);
  // An in-memory checkpoint over `views` (non-owning: their data must outlive it). A view's data may
  // be null for bytes made elsewhere (dsv4-bench builds its large synthetic weights on the device);
  // `label` stands in for the folder in messages.
  static std::unique_ptr<Checkpoint> from_views(const std::string& label, std::vector<TensorView> views);
  const std::string& dir() const { return dir_; }
  const TensorView* find(const std::string& name) const;
  const TensorView& get(const std::string& name) const;  // throws Error(format) naming the tensor
  bool contains(const std::string& name) const { return find(name) != nullptr; }
  std::vector<std::string> names() const;  // sorted
  const std::vector<std::unique_ptr<SafetensorsFile>>& shards() const { return shards_; }
  size_t total_bytes() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, const TensorView*> by_name_;
  std::vector<TensorView> views_;  // from_views only
  Checkpoint() = default;
};

// Streaming writer: headers are known up front, bytes are produced one tensor at a time by `fill`
// (called in order with the tensor's index; it must resize `bytes` to the tensor's size), so a
// multi-gigabyte checkpoint never has to sit in memory. Shards hold at most ~max_shard_bytes each (a
// tensor never spans shards); with more than one shard (or `always_index`), writes
// model-0000i-of-0000n.safetensors + model.safetensors.index.json, else model.safetensors.
struct TensorHeader {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  size_t nbytes() const;
};
using TensorFiller = std::function<void(size_t index, std::vector<uint8_t>& bytes)>;
int write_safetensors_sharded(const std::string& dir, const std::vector<TensorHeader>& tensors, size_t max_shard_bytes,
                              const TensorFiller& fill, const std::map<std::string, std::string>& metadata = {},
                              bool always_index = true);
// One file holding `tensors` (indices into the list passed to `fill`).
void write_safetensors_file(const std::string& path, const std::vector<TensorHeader>& tensors, const TensorFiller& fill,
                            const std::map<std::string, std::string>& metadata = {});

// Builds safetensors files in memory (tests, small outputs). Tensors are written in insertion order, 8-byte aligned data offsets.
class SafetensorsWriter {
 public:
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes);
  template <typename T>
  void add_values(const std::string& name, DType dtype, std::vector<int64_t> shape, const std::vector<T>& v) {
    std::vector<uint8_t> b(v.size() * sizeof(T));
    if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
    add(name, dtype, std::move(shape), std::move(b));
  }
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  size_t size() const { return entries_.size(); }
  size_t data_bytes() const;
  // Writes one file with every tensor added so far.
  void write(const std::string& path) const;
  // Writes `dir`/model-0000i-of-0000n.safetensors shards of at most ~`max_shard_bytes` each (a tensor
  // never spans shards) plus model.safetensors.index.json. Returns the shard count.
  int write_sharded(const std::string& dir, size_t max_shard_bytes) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<TensorHeader> headers() const;
  TensorFiller filler() const;
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace dsv4
