// Device sequence state (contract in state.hpp).
#include "state.hpp"

#include <algorithm>

namespace dsv4::cuda {
namespace {

// Zeroed on the backend's stream (a legacy-stream cudaMemset is not ordered with a non-blocking
// stream); create() synchronises once at the end.
DeviceBuffer zeroed(size_t bytes, const char* what, cudaStream_t stream) {
  DeviceBuffer b(bytes, what);
  if (bytes) DSV4_CUDA_CHECK(cudaMemsetAsync(b.as(), 0, bytes, stream));
  return b;
}

size_t f32s(int64_t rows, int64_t width) { return static_cast<size_t>(rows) * static_cast<size_t>(width) * 4; }

void copy_d2d(DeviceBuffer& dst, const DeviceBuffer& src, size_t bytes, cudaStream_t stream) {
  if (bytes) DSV4_CUDA_CHECK(cudaMemcpyAsync(dst.as(), src.as(), bytes, cudaMemcpyDeviceToDevice, stream));
}

}  // namespace

DevSequence DevSequence::create(const std::vector<LayerStateShape>& layout, int64_t max_context, cudaStream_t stream) {
  DevSequence s;
  s.max_context = max_context;
  s.layers.resize(layout.size());
  for (size_t i = 0; i < layout.size(); ++i) {
    const LayerStateShape& sh = layout[i];
    DevLayerState& L = s.layers[i];
    L.window = zeroed(f32s(sh.window_ring, sh.kv_dim), "a sequence's window ring", stream);
    auto init = [&](DevCompressorState& c, const CompressorShape& cs) {
      if (!cs.ratio) return;
      c.kv = zeroed(f32s(cs.ring, cs.width), "a sequence's compressor rows", stream);
      c.gate = zeroed(f32s(cs.ring, cs.width), "a sequence's compressor rows", stream);
    };
    init(L.main, sh.main);
    init(L.index, sh.index);
  }
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
  return s;
}

DevSequence DevSequence::clone(const std::vector<LayerStateShape>& layout, int num_main_layers,
                               cudaStream_t stream) const {
  DevSequence c;
  c.position = position;
  c.mtp_position = mtp_position;
  c.max_context = max_context;
  c.tokens = tokens;
  c.last_sample = last_sample;
  c.layers.resize(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerStateShape& sh = layout[i];
    const DevLayerState& a = layers[i];
    DevLayerState& b = c.layers[i];
    b.window = DeviceBuffer(a.window.bytes(), "a sequence copy's window ring");
    copy_d2d(b.window, a.window, a.window.bytes(), stream);
    auto ring = [&](DevCompressorState& d, const DevCompressorState& s) {
      if (!s.kv) return;
      d.kv = DeviceBuffer(s.kv.bytes(), "a sequence copy's compressor rows");
      d.gate = DeviceBuffer(s.gate.bytes(), "a sequence copy's compressor rows");
      copy_d2d(d.kv, s.kv, s.kv.bytes(), stream);
      copy_d2d(d.gate, s.gate, s.gate.bytes(), stream);
    };
    ring(b.main, a.main);
    ring(b.index, a.index);
    const int64_t n = static_cast<int>(i) < num_main_layers ? position : std::min(mtp_position, position);
    const int64_t ne = sh.main.ratio ? n / sh.main.ratio : 0, nk = sh.index.ratio ? n / sh.index.ratio : 0;
    if (ne > 0) {
      b.entries = DeviceBuffer(f32s(ne, sh.main.dim), "a sequence copy's compressed entries");
      b.entry_cap = ne;
      copy_d2d(b.entries, a.entries, f32s(ne, sh.main.dim), stream);
    }
    if (nk > 0) {
      b.idx_keys = DeviceBuffer(f32s(nk, sh.index.dim), "a sequence copy's indexer keys");
      b.key_cap = nk;
      copy_d2d(b.idx_keys, a.idx_keys, f32s(nk, sh.index.dim), stream);
    }
  }
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
  return c;
}

void DevSequence::reset() {
  // Rings are read only at positions already written and entries only below ⌊position/ratio⌋, so
  // counters are all a reset needs; the entry memory is returned.
  position = 0;
  mtp_position = 0;
  tokens.clear();
  last_sample = -1;
  failure.clear();
  for (DevLayerState& L : layers) {
    L.entries.reset();
    L.entry_cap = 0;
    L.idx_keys.reset();
    L.key_cap = 0;
  }
}

void DevSequence::truncate(int /*num_main_layers*/, int64_t to) {
  if (to == 0) {
    reset();
    return;
  }
  position = to;
  mtp_position = std::min(mtp_position, to);
  tokens.resize(static_cast<size_t>(to));
  last_sample = -1;
}

void DevSequence::ensure_entries(const std::vector<LayerStateShape>& layout, size_t l, int64_t n, int64_t keep,
                                 cudaStream_t stream) {
  const LayerStateShape& sh = layout[l];
  DevLayerState& L = layers[l];
  auto grow = [&](DeviceBuffer& buf, int64_t& cap, const CompressorShape& cs, const char* what) {
    if (!cs.ratio) return;
    const int64_t need = n / cs.ratio;
    if (need <= cap) return;
    // Doubling keeps appends O(1) amortised; the floor is one 128-token page of entries.
    const int64_t new_cap = std::max<int64_t>({need, 2 * cap, std::max<int64_t>(1, 128 / cs.ratio)});
    DeviceBuffer nb(f32s(new_cap, cs.dim), what);
    const int64_t kept = std::min(keep / cs.ratio, cap);
    if (kept > 0)
      DSV4_CUDA_CHECK(cudaMemcpyAsync(nb.as(), buf.as(), f32s(kept, cs.dim), cudaMemcpyDeviceToDevice, stream));
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));  // the old buffer is freed next
    buf = std::move(nb);
    cap = new_cap;
  };
  grow(L.entries, L.entry_cap, sh.main, "a sequence's compressed entries");
  grow(L.idx_keys, L.key_cap, sh.index, "a sequence's indexer keys");
}

void RingBackup::save(const DevSequence& s, cudaStream_t stream) {
  bufs.clear();
  for (const DevLayerState& L : s.layers)
    for (const DeviceBuffer* b : {&L.window, &L.main.kv, &L.main.gate, &L.index.kv, &L.index.gate}) {
      DeviceBuffer c(b->bytes(), "the rollback copy of a sequence's rings");
      if (b->bytes())
        DSV4_CUDA_CHECK(cudaMemcpyAsync(c.as(), b->as(), b->bytes(), cudaMemcpyDeviceToDevice, stream));
      bufs.push_back(std::move(c));
    }
}

void RingBackup::restore(DevSequence& s, cudaStream_t stream) const {
  size_t k = 0;
  for (DevLayerState& L : s.layers)
    for (DeviceBuffer* b : {&L.window, &L.main.kv, &L.main.gate, &L.index.kv, &L.index.gate}) {
      const DeviceBuffer& c = bufs.at(k++);
      if (b->bytes())
        DSV4_CUDA_CHECK(cudaMemcpyAsync(b->as(), c.as(), b->bytes(), cudaMemcpyDeviceToDevice, stream));
    }
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace dsv4::cuda
