// Scratch device memory for one chunk's activations: a bump allocator over blocks. A chunk takes
// what it needs with get<T>(n); when a block is full a new one is added (earlier pointers stay
// valid), and at the next begin() the blocks are merged into one of the high-water size, so after
// the first chunks of a shape no step allocates. mark() / rewind() give back everything taken
// since the mark (the forward rewinds after every layer, so a chunk needs one layer's activations,
// not num_layers'); reuse is safe because every user runs in the order of one stream.
#pragma once
#include <algorithm>
#include <cstddef>
#include <vector>

#include "device_buffer.hpp"

namespace dsv4::cuda {

class Workspace {
 public:
  struct Mark {
    size_t block, off, used;
  };
  // Starts a chunk: every earlier pointer is dead. The caller has synchronised the stream.
  void begin() {
    block_ = 0;
    off_ = 0;
    used_ = 0;
    if (blocks_.size() > 1 || (blocks_.size() == 1 && blocks_[0].bytes() < high_)) {
      blocks_.clear();
      try {
        blocks_.emplace_back(high_, "the activation workspace");
      } catch (const Error&) {
        high_ = 0;  // keep growing block by block instead (the failed size is not retried)
      }
    }
  }
  template <class T> T* get(size_t n) {
    const size_t bytes = (n * sizeof(T) + 255) / 256 * 256;
    while (block_ < blocks_.size() && off_ + bytes > blocks_[block_].bytes()) {
      ++block_;
      off_ = 0;
    }
    if (block_ == blocks_.size()) {
      blocks_.emplace_back(std::max(bytes, size_t{64} << 20), "the activation workspace");  // may throw
      off_ = 0;
    }
    T* p = reinterpret_cast<T*>(blocks_[block_].as<unsigned char>() + off_);
    off_ += bytes;
    used_ += bytes;  // counted only once the memory exists
    high_ = std::max(high_, used_);
    return p;
  }
  Mark mark() const { return {block_, off_, used_}; }
  void rewind(const Mark& m) {
    block_ = m.block;
    off_ = m.off;
    used_ = m.used;
  }
  size_t bytes() const {
    size_t t = 0;
    for (const auto& b : blocks_) t += b.bytes();
    return t;
  }

 private:
  std::vector<DeviceBuffer> blocks_;
  size_t block_ = 0, off_ = 0, used_ = 0, high_ = 0;
};

}  // namespace dsv4::cuda
