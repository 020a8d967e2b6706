// Weight upload for the CUDA backend (contract in weights.hpp). Two passes over the same walk of
// the model: the first only sums sizes (so the arena is one allocation of the exact size), the
// second copies. Copies go mmap → pinned staging buffer (host memcpy, which also faults the file
// in) → device (cudaMemcpyAsync on a copy stream), with kStaging buffers in flight so the host
// copy of one piece overlaps the DMA of the previous ones.
#include "weights.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "dsv4/error.hpp"
#include "kernels.hpp"

namespace dsv4::cuda {
namespace {

constexpr size_t kAlign = 256;
constexpr int kStaging = 4;
constexpr size_t kStagingBytes = size_t{32} << 20;

size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

enum class Cat { fp8, fp4, bf16, f32, scales, other };

class Uploader {
 public:
  Uploader(const Logger& log) : log_(log) {}

  // Plan pass: returns null and counts. Commit pass: returns the device address and copies.
  const uint8_t* put(const void* src, size_t n, Cat c) {
    const size_t off = used_;
    used_ = tight_ ? used_ + n : align_up(used_ + n);
    if (!base_) {
      count(c, n);
      return nullptr;
    }
    if (!src && n) fail(Status::internal, "weight upload: a tensor of {} bytes has no data", n);
    uint8_t* dst = base_ + off;
    copy(static_cast<const uint8_t*>(src), n, dst);
    return dst;
  }
  uint8_t* reserve(size_t n) {  // commit pass: the next n arena bytes, not copied
    uint8_t* dst = base_ + used_;
    used_ = tight_ ? used_ + n : align_up(used_ + n);
    return dst;
  }
  // While set, the next put starts right after this one (no alignment gap): the first of a pair
  // stored as one matrix.
  void tight(bool on) { tight_ = on; }
  template <class T> const T* put_vec(const std::vector<T>& v, Cat c = Cat::other) {
    return reinterpret_cast<const T*>(put(v.data(), v.size() * sizeof(T), c));
  }
  WeightView put_linear(const cpu::Linear& l) {
    WeightView v = l.view();
    v.data = put_data(v, l.data);
    v.scale = put_scale(v, l.scale);
    return v;
  }
  // Two weights with the same input, data then data, scales then scales; `fused` (when `ok`) views
  // them as one [a.out + b.out, in] weight: same format, input and blocks, the first's data and
  // scale bytes a multiple of the arena alignment (no gap), FP8 rows in whole 128-row blocks.
  void put_pair(const cpu::Linear& la, const cpu::Linear& lb, WeightView& a, WeightView& b, WeightView& fused,
                bool& ok) {
    a = la.view();
    b = lb.view();
    ok = fusable(a, b);
    tight(ok);
    a.data = put_data(a, la.data);
    tight(false);
    b.data = put_data(b, lb.data);
    tight(ok);
    a.scale = put_scale(a, la.scale);
    tight(false);
    b.scale = put_scale(b, lb.scale);
    fused = a;
    fused.out = a.out + b.out;
  }
  // Whether b can follow a as more rows of one weight: same format, input and blocks, and for FP8
  // whole 128-row blocks (the scale rows stay per block). Its rows stay 16-byte aligned when a's
  // rows are.
  static bool fusable(const WeightView& a, const WeightView& b) {
    return a.format == b.format && a.in == b.in && a.scale_cols == b.scale_cols && a.block_in == b.block_in &&
           a.block_out == b.block_out && (a.format != WeightFormat::fp8 || a.out % a.block_out == 0);
  }
  // A weight's data / scales; a null source (synthetic checkpoints only) is filled on the device
  // with values drawn as make-model draws them (lib/model_gen.cpp): FP8 uniform in ±√3/√fan_in
  // quantised with its block's power-of-two scale, FP4 uniform random codes with per-32 scales near
  // 1/(2.93·√fan_in) jittered by one binade.
  const uint8_t* put_data(const WeightView& v, const uint8_t* src) {
    const size_t n = static_cast<size_t>(v.data_bytes());
    if (src || !base_) return put(src, n, cat_of(v.format));
    if (v.format != WeightFormat::fp8 && v.format != WeightFormat::fp4)
      fail(Status::internal, "synthetic weights: only FP8 / FP4 data is made on the device");
    uint8_t* dst = reserve(n);
    if (v.format == WeightFormat::fp8) DSV4_CUDA_CHECK(fill_fp8_codes(dst, static_cast<int64_t>(n), ++seed_, fp8_amp(v), stream_.get()));
    else DSV4_CUDA_CHECK(fill_random_bytes(dst, static_cast<int64_t>(n), ++seed_, stream_.get()));
    return dst;
  }
  const uint8_t* put_scale(const WeightView& v, const uint8_t* src) {
    const size_t n = static_cast<size_t>(v.scale_bytes());
    if (n == 0) return nullptr;
    if (src || !base_) return put(src, n, Cat::scales);
    uint8_t* dst = reserve(n);
    const float w_std = 1.0f / std::sqrt(static_cast<float>(v.in));
    if (v.format == WeightFormat::fp8)
      DSV4_CUDA_CHECK(fill_scale_codes(dst, static_cast<int64_t>(n), ++seed_, fp8_scale_code(v), 0, stream_.get()));
    else
      DSV4_CUDA_CHECK(fill_scale_codes(dst, static_cast<int64_t>(n), ++seed_,
                                       127 + static_cast<int>(std::lround(std::log2(w_std / 2.93f))), 1, stream_.get()));
    return dst;
  }
  static int fp8_scale_code(const WeightView& v) {
    return e8m0_ceil_pow2(1.7320508f / std::sqrt(static_cast<float>(v.in)) / 448.0f);
  }
  static float fp8_amp(const WeightView& v) {
    return std::min(448.0f, 1.7320508f / std::sqrt(static_cast<float>(v.in)) /
                                e8m0_to_f32(static_cast<uint8_t>(fp8_scale_code(v))));
  }
  static Cat cat_of(WeightFormat f) {
    switch (f) {
      case WeightFormat::fp8: return Cat::fp8;
      case WeightFormat::fp4: return Cat::fp4;
      case WeightFormat::bf16: return Cat::bf16;
      case WeightFormat::f32: return Cat::f32;
    }
    return Cat::other;
  }

  void begin_commit(uint8_t* base, size_t total) {
    base_ = base;
    total_ = total;
    used_ = 0;
    for (int i = 0; i < kStaging; ++i) staging_.emplace_back(kStagingBytes);
    events_.resize(kStaging);
    t0_ = std::chrono::steady_clock::now();
  }
  void finish() {
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    log_.info("cuda: weights uploaded: {:.2f} GB in {:.2f} s ({:.2f} GB/s)", static_cast<double>(copied_) / 1e9, s,
              s > 0 ? static_cast<double>(copied_) / 1e9 / s : 0.0);
  }
  size_t used() const { return used_; }
  const WeightBytes& bytes() const { return bytes_; }

 private:
  void count(Cat c, size_t n) {
    switch (c) {
      case Cat::fp8: bytes_.fp8 += n; break;
      case Cat::fp4: bytes_.fp4 += n; break;
      case Cat::bf16: bytes_.bf16 += n; break;
      case Cat::f32: bytes_.f32 += n; break;
      case Cat::scales: bytes_.scales += n; break;
      case Cat::other: bytes_.other += n; break;
    }
  }
  void copy(const uint8_t* src, size_t n, uint8_t* dst) {
    while (n > 0) {
      const size_t piece = std::min(n, kStagingBytes);
      const int b = next_++ % kStaging;
      DSV4_CUDA_CHECK(cudaEventSynchronize(events_[b].get()));  // that buffer's previous DMA is done
      std::memcpy(staging_[b].data(), src, piece);
      DSV4_CUDA_CHECK(cudaMemcpyAsync(dst, staging_[b].data(), piece, cudaMemcpyHostToDevice, stream_.get()));
      DSV4_CUDA_CHECK(cudaEventRecord(events_[b].get(), stream_.get()));
      src += piece;
      dst += piece;
      n -= piece;
      copied_ += piece;
      const int pct = total_ ? static_cast<int>(copied_ * 100 / total_) : 100;
      if (pct / 10 > last_pct_ / 10) {
        last_pct_ = pct;
        log_.info("cuda: loading weights {:3d}% ({:.2f} / {:.2f} GB)", pct, static_cast<double>(copied_) / 1e9,
                  static_cast<double>(total_) / 1e9);
      }
    }
  }

  const Logger& log_;
  uint8_t* base_ = nullptr;
  size_t used_ = 0, total_ = 0, copied_ = 0;
  bool tight_ = false;
  WeightBytes bytes_;
  Stream stream_;
  std::vector<PinnedBuffer> staging_;
  std::vector<Event> events_;
  int next_ = 0, last_pct_ = 0;
  uint64_t seed_ = 0x5eed;
  std::chrono::steady_clock::time_point t0_;
};

DevHc put_hc(Uploader& up, const cpu::HcWeights& h, int hc, int64_t D) {
  DevHc d{up.put_vec(h.fn), up.put_vec(h.base), up.put_vec(h.scale), {}};
  const int64_t mix = static_cast<int64_t>(h.fn.size()) / (hc * D);
  std::vector<float> fs(h.fn.size());
  for (int64_t i = 0; i < mix; ++i)
    for (int64_t j = 0; j < hc; ++j)
      std::copy_n(h.fn.begin() + (i * hc + j) * D, D, fs.begin() + (j * mix + i) * D);
  d.fn_streams.format = WeightFormat::f32;
  d.fn_streams.out = hc * mix;
  d.fn_streams.in = D;
  d.fn_streams.data = reinterpret_cast<const uint8_t*>(up.put_vec(fs));
  return d;
}

DevCompressor put_compressor(Uploader& up, const cpu::CompressorWeights& c) {
  return {up.put_linear(c.wkv), up.put_linear(c.wgate), up.put_vec(c.ape), up.put_vec(c.norm)};
}

DevLayer put_layer(Uploader& up, const cpu::LayerWeights& L, int hc, int64_t D, ExpertRange er) {
  DevLayer d;
  d.spec = L.spec;
  d.index = L.index;
  d.attn_norm = up.put_vec(L.attn_norm);
  d.ffn_norm = up.put_vec(L.ffn_norm);
  d.hc_attn = put_hc(up, L.hc_attn, hc, D);
  d.hc_ffn = put_hc(up, L.hc_ffn, hc, D);
  const cpu::AttnWeights& a = L.attn;
  up.put_pair(a.wq_a, a.wkv, d.wq_a, d.wkv, d.wqkv, d.has_wqkv);
  d.wq_b = up.put_linear(a.wq_b);
  d.wo_a = up.put_linear(a.wo_a);
  d.wo_b = up.put_linear(a.wo_b);
  d.q_norm = up.put_vec(a.q_norm);
  d.kv_norm = up.put_vec(a.kv_norm);
  d.sink = up.put_vec(a.sink);
  d.has_compressor = a.has_compressor;
  d.has_indexer = a.has_indexer;
  if (a.has_compressor) d.compressor = put_compressor(up, a.compressor);
  if (a.has_indexer) {
    d.idx_wq_b = up.put_linear(a.idx_wq_b);
    d.idx_weights_proj = up.put_linear(a.idx_weights_proj);
    d.idx_compressor = put_compressor(up, a.idx_compressor);
  }
  const cpu::MoeWeights& m = L.moe;
  d.gate = up.put_vec(m.gate);
  if (!m.bias.empty()) d.bias = up.put_vec(m.bias);
  if (!m.tid2eid.empty()) {
    d.tid2eid = up.put_vec(m.tid2eid);
    d.tid2eid_cols = m.tid2eid_cols;
  }
  // Stacked experts [lo, hi) (all of them, or an expert-parallel rank's block): consecutive puts of
  // equal size are align_up(size) apart. The others are never read, so their mmap pages are never
  // faulted in: a rank reads only its own experts from the checkpoint.
  const size_t lo = std::min(static_cast<size_t>(er.first), m.experts.size());
  const size_t hi = er.count < 0 ? m.experts.size() : std::min(lo + static_cast<size_t>(er.count), m.experts.size());
  if (lo >= hi) fail(Status::internal, "layer {}: the expert range [{}, {}) is empty", L.index, lo, hi);
  auto stack = [&](auto member, WeightView& view, int64_t& data_stride, int64_t& scale_stride) {
    // Data and scales of all experts go as two runs, so that each has a constant stride.
    WeightView first;
    for (size_t e = lo; e < hi; ++e) {
      const cpu::Linear& l = m.experts[e].*member;
      WeightView v = l.view();
      v.data = up.put_data(v, l.data);
      if (e == lo) first = v;
      else if (v.format != first.format || v.out != first.out || v.in != first.in)
        fail(Status::format, "tensor '{}': expert shapes or formats differ within a layer", l.name);
    }
    for (size_t e = lo; e < hi; ++e) {
      const cpu::Linear& l = m.experts[e].*member;
      const int64_t sb = first.scale_bytes();
      if (sb == 0) break;
      const uint8_t* s = up.put_scale(first, l.scale);
      if (e == lo) first.scale = s;
    }
    view = first;
    data_stride = static_cast<int64_t>(align_up(static_cast<size_t>(first.data_bytes())));
    scale_stride = static_cast<int64_t>(align_up(static_cast<size_t>(first.scale_bytes())));
  };
  // w1 and w3 interleaved per expert (w1_e, w3_e, w1_{e+1}, …; scales the same way), each w3_e
  // right after its w1_e.
  auto stack13 = [&](DevExperts& x) {
    WeightView f1, f3;
    const bool pair = lo < hi && Uploader::fusable(m.experts[lo].w1.view(), m.experts[lo].w3.view());
    for (size_t e = lo; e < hi; ++e) {
      const cpu::Linear& l1 = m.experts[e].w1;
      const cpu::Linear& l3 = m.experts[e].w3;
      WeightView v1 = l1.view(), v3 = l3.view();
      up.tight(pair);
      v1.data = up.put_data(v1, l1.data);
      up.tight(false);
      v3.data = up.put_data(v3, l3.data);
      if (e == lo) {
        f1 = v1;
        f3 = v3;
      } else if (v1.format != f1.format || v1.out != f1.out || v1.in != f1.in || v3.format != f3.format ||
                 v3.out != f3.out || v3.in != f3.in) {
        fail(Status::format, "tensors '{}' / '{}': expert shapes or formats differ within a layer", l1.name, l3.name);
      }
    }
    for (size_t e = lo; e < hi && f1.scale_bytes() > 0; ++e) {
      up.tight(pair);
      const uint8_t* s1 = up.put_scale(f1, m.experts[e].w1.scale);
      up.tight(false);
      const uint8_t* s3 = up.put_scale(f3, m.experts[e].w3.scale);
      if (e == lo) {
        f1.scale = s1;
        f3.scale = s3;
      }
    }
    auto span = [&](int64_t b1, int64_t b3) {  // bytes from w1_e to w1_{e+1}
      return static_cast<int64_t>(pair ? align_up(static_cast<size_t>(b1 + b3))
                                       : align_up(static_cast<size_t>(b1)) + align_up(static_cast<size_t>(b3)));
    };
    x.w1 = f1;
    x.w3 = f3;
    x.w1_data_stride = x.w3_data_stride = span(f1.data_bytes(), f3.data_bytes());
    x.w1_scale_stride = x.w3_scale_stride = span(f1.scale_bytes(), f3.scale_bytes());
    x.has_w13 = pair;
    x.w13 = f1;
    x.w13.out = f1.out + f3.out;
  };
  DevExperts& x = d.experts;
  x.first = static_cast<int>(lo);
  x.count = static_cast<int>(hi - lo);
  stack13(x);
  stack(&cpu::ExpertWeights::w2, x.w2, x.w2_data_stride, x.w2_scale_stride);
  up.put_pair(m.shared.w1, m.shared.w3, d.sh_w1, d.sh_w3, d.sh_w13, d.has_sh_w13);
  d.sh_w2 = up.put_linear(m.shared.w2);
  return d;
}

void walk(Uploader& up, const cpu::ModelWeights& host, const ModelConfig& cfg, DeviceWeights& d,
          const std::vector<float>& inv_s, const std::vector<float>& inv_c, ExpertRange er) {
  const size_t esz = host.embed_dtype == DType::F32 ? 4 : 2;
  d.embed = up.put(host.embed, static_cast<size_t>(cfg.vocab_size) * static_cast<size_t>(cfg.hidden_size) * esz,
                   host.embed_dtype == DType::F32 ? Cat::f32 : Cat::bf16);
  d.embed_f32 = host.embed_dtype == DType::F32;
  d.head = up.put_linear(host.head);
  d.norm = up.put_vec(host.norm);
  d.hc_head = put_hc(up, host.hc_head, cfg.hc_mult, cfg.hidden_size);
  d.layers.clear();
  for (const cpu::LayerWeights& L : host.layers) d.layers.push_back(put_layer(up, L, cfg.hc_mult, cfg.hidden_size, er));
  d.mtp.reset();
  if (host.mtp) {
    DevMtp m;
    m.e_proj = up.put_linear(host.mtp->e_proj);
    m.h_proj = up.put_linear(host.mtp->h_proj);
    m.enorm = up.put_vec(host.mtp->enorm);
    m.hnorm = up.put_vec(host.mtp->hnorm);
    m.norm = up.put_vec(host.mtp->norm);
    m.hc_head = put_hc(up, host.mtp->hc_head, cfg.hc_mult, cfg.hidden_size);
    m.block = put_layer(up, host.mtp->block, cfg.hc_mult, cfg.hidden_size, er);
    d.mtp = m;
  }
  d.inv_freq_sliding = up.put_vec(inv_s);
  d.inv_freq_compressed = up.put_vec(inv_c);
}

}  // namespace

DeviceWeights upload_weights(const cpu::ModelWeights& host, const ModelConfig& cfg, const Logger& log, ExpertRange er) {
  const std::vector<float> inv_s = cfg.rope_inv_freq(false), inv_c = cfg.rope_inv_freq(true);
  DeviceWeights d;
  Uploader plan(log);
  walk(plan, host, cfg, d, inv_s, inv_c, er);
  const size_t total = plan.used();
  d.bytes = plan.bytes();
  d.arena = DeviceBuffer(total, "the model weights (one arena)");
  Uploader up(log);
  up.begin_commit(d.arena.as<uint8_t>(), total);
  walk(up, host, cfg, d, inv_s, inv_c, er);
  up.finish();
  return d;
}

}  // namespace dsv4::cuda
