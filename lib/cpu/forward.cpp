// The DeepSeek-V4 forward pass on the CPU, top to bottom (spec §3): embedding → HC expansion →
// decoder blocks (hc_pre → norm → attention → hc_post; hc_pre → norm → MoE → hc_post) → HC head →
// final norm → LM head; plus the MTP layer (§3.8). One function per step, same call order and
// names as the CUDA forward. Chunks may start at any position (§4.4); state lives in the
// SequenceState passed in. No work here beyond calling the ops in lib/cpu/*.cpp.
#include <algorithm>

#include "dsv4/cpu/cpu_backend.hpp"
#include "dsv4/error.hpp"
#include "dsv4/numerics.hpp"

namespace dsv4::cpu {

void CpuBackend::decoder_block(const LayerWeights& L, LayerState& ls, std::vector<float>& X, const int32_t* tokens,
                               int64_t S, int64_t p0) {
  const int64_t D = cfg_.hidden_size, hc = cfg_.hc_mult, hcD = hc * D;
  std::vector<float> x(static_cast<size_t>(S * D)), y(static_cast<size_t>(S * D));
  std::vector<float> post(static_cast<size_t>(S * hc)), comb(static_cast<size_t>(S * hc * hc));
  std::vector<float> Xn(X.size());
  auto pre = [&](const HcWeights& hw, const std::vector<float>& norm_w) {
    pool_->parallel_for(S, 4, [&](int64_t b, int64_t e) {
      for (int64_t s = b; s < e; ++s) {
        hc_pre(hc_, hw, X.data() + s * hcD, x.data() + s * D, post.data() + s * hc, comb.data() + s * hc * hc);
        rms_norm(x.data() + s * D, norm_w.data(), D, cfg_.rms_norm_eps, x.data() + s * D, official_);
      }
    });
  };
  auto post_mix = [&] {
    for (int64_t s = 0; s < S; ++s)
      hc_post(hc_, y.data() + s * D, X.data() + s * hcD, post.data() + s * hc, comb.data() + s * hc * hc,
              Xn.data() + s * hcD);
    X.swap(Xn);
  };

  // Attention half.
  pre(L.hc_attn, L.attn_norm);
  const LayerStateShape& shape = layout_[static_cast<size_t>(L.index)];
  AttnContext ctx{&cfg_, &L, &shape, L.spec.attn == AttnKind::sliding ? &rope_sliding_ : &rope_compressed_,
                  pool_.get(), torch_cpu_ties_, tie_positions_, torch_cpu_row_, official_};
  attention(ctx, ls, x.data(), S, p0, y.data());
  post_mix();

  // FFN half.
  pre(L.hc_ffn, L.ffn_norm);
  int64_t* usage_row = nullptr;
  if (usage_ && L.index < usage_->layers) {
    usage_row = &usage_->at(L.index, 0);
    if (L.index == 0) usage_->tokens += S;
  }
  moe(cfg_, L, x.data(), tokens, S, y.data(), *pool_, official_, ep_, usage_row);
  post_mix();
}

void CpuBackend::head_hidden(const HcWeights& hcw, const std::vector<float>& norm, const float* X, int64_t rows,
                             float* h) {
  const int64_t D = cfg_.hidden_size, hcD = cfg_.hc_mult * D;
  pool_->parallel_for(rows, 8, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      hc_head(hc_, hcw, X + r * hcD, h + r * D);
      rms_norm(h + r * D, norm.data(), D, cfg_.rms_norm_eps, h + r * D, official_);
    }
  });
}

void CpuBackend::forward_chunk(SequenceState& st, std::span<const int32_t> tok, const ForwardChunk& c,
                               ChunkResult& out) {
  const int64_t S = static_cast<int64_t>(tok.size()), p0 = st.position;
  const int64_t D = cfg_.hidden_size, hc = cfg_.hc_mult, hcD = hc * D, V = cfg_.vocab_size;
  const int32_t* tokens = tok.data();

  // §3.1 embedding, copied into every HC stream.
  std::vector<float> X(static_cast<size_t>(S * hcD));
  for (int64_t s = 0; s < S; ++s) {
    float* xs = X.data() + s * hcD;
    w_.embed_row(tokens[s], xs);
    if (official_) round_bf16_n(xs, D);  // bf16 storage (a no-op for the BF16 checkpoints)
    for (int64_t j = 1; j < hc; ++j) std::copy(xs, xs + D, xs + j * D);
  }
  if (c.hidden_out) c.hidden_out->clear();
  const bool inject = fault_layer_ >= 0 && fault_countdown_-- == 0;

  // §3.2 decoder layers.
  for (int l = 0; l < cfg_.num_layers; ++l) {
    if (inject && l == fault_layer_) {
      fault_layer_ = -1;
      fail(Status::backend, "injected fault at layer {} (test)", l);
    }
    if (c.hidden_out) c.hidden_out->insert(c.hidden_out->end(), X.begin(), X.end());
    decoder_block(w_.layers[static_cast<size_t>(l)], st.layers[static_cast<size_t>(l)], X, tokens, S, p0);
  }
  if (c.final_streams_out) *c.final_streams_out = X;

  // §3.7 head: HC collapse, final norm, logits for the rows asked for (and the sampled row).
  const bool sample = c.sampler != nullptr;
  const int64_t out_rows = c.logits == LogitsMode::none ? 0 : c.logits == LogitsMode::last ? 1 : S;
  const int64_t head_rows = std::max<int64_t>(out_rows, sample ? 1 : 0);
  const int64_t first = c.hidden_out ? 0 : S - head_rows;
  const int64_t rows = c.hidden_out ? S : head_rows;
  std::vector<float> h(static_cast<size_t>(rows * D));
  head_hidden(w_.hc_head, w_.norm, X.data() + first * hcD, rows, h.data());
  if (c.hidden_out) c.hidden_out->insert(c.hidden_out->end(), h.begin(), h.end());
  std::vector<float> local;
  std::vector<float>& logits = c.logits_out && out_rows == head_rows ? *c.logits_out : local;
  logits.assign(static_cast<size_t>(head_rows * V), 0.0f);
  linear(w_.head, h.data() + (rows - head_rows) * D, head_rows, logits.data(), *pool_);
  if (c.logits_out && &logits != c.logits_out) c.logits_out->clear();  // mode none: no rows
  if (sample)
    out.sample = c.sampler->sample(std::span<const float>(logits).subspan(static_cast<size_t>((head_rows - 1) * V)),
                                   *c.sampler_state);
  st.tokens.insert(st.tokens.end(), tok.begin(), tok.end());
  if (sample) st.last_sample = out.sample.id;
  st.position += S;
}

void CpuBackend::forward_mtp(SeqHandle handle, std::span<const float> final_streams,
                             std::span<const int32_t> next_tokens, std::vector<float>& logits_out) {
  std::lock_guard<std::mutex> lk(mu_);
  check_mtp_inputs(cfg_, final_streams, next_tokens);
  SequenceState& st = seq(handle);
  const int64_t n = static_cast<int64_t>(next_tokens.size());
  const int64_t D = cfg_.hidden_size, hc = cfg_.hc_mult, hcD = hc * D, V = cfg_.vocab_size;
  const MtpWeights& m = *w_.mtp;
  const int64_t p0 = st.mtp_position;
  tie_positions_ = nullptr;

  // §3.8: e = enorm(embed[t_{i+1}]), hn[j] = hnorm(X_i[j]), Y[j] = e_proj(e) + h_proj(hn[j]).
  std::vector<float> e(static_cast<size_t>(n * D)), ep(static_cast<size_t>(n * D));
  const LinearOut fp8 = official_ ? LinearOut::fp8_bf16 : LinearOut::f32;
  for (int64_t i = 0; i < n; ++i) {
    w_.embed_row(next_tokens[i], e.data() + i * D);
    if (official_) round_bf16_n(e.data() + i * D, D);
    rms_norm(e.data() + i * D, m.enorm.data(), D, cfg_.rms_norm_eps, e.data() + i * D, official_);
  }
  linear(m.e_proj, e.data(), n, ep.data(), *pool_, fp8);
  std::vector<float> hn(final_streams.begin(), final_streams.end()), hp(static_cast<size_t>(n * hcD));
  for (int64_t r = 0; r < n * hc; ++r)
    rms_norm(hn.data() + r * D, m.hnorm.data(), D, cfg_.rms_norm_eps, hn.data() + r * D, official_);
  linear(m.h_proj, hn.data(), n * hc, hp.data(), *pool_, fp8);
  std::vector<float> Y(static_cast<size_t>(n * hcD));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < hc; ++j)
      for (int64_t d = 0; d < D; ++d) {
        const float v = ep[i * D + d] + hp[(i * hc + j) * D + d];
        Y[(i * hc + j) * D + d] = official_ ? round_bf16(v) : v;
      }

  // The MTP block on its own window state, then its own HC head and norm with the shared LM head.
  decoder_block(m.block, st.layers[static_cast<size_t>(cfg_.num_layers)], Y, next_tokens.data(), n, p0);
  std::vector<float> h(static_cast<size_t>(n * D));
  head_hidden(m.hc_head, m.norm, Y.data(), n, h.data());
  logits_out.assign(static_cast<size_t>(n * V), 0.0f);
  linear(w_.head, h.data(), n, logits_out.data(), *pool_);
  st.mtp_position += n;
}

}  // namespace dsv4::cpu
