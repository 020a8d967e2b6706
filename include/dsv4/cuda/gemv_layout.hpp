// Load-time tile layouts of the decode GEMV kernels (lib/cuda/sm90_fp8_gemv*.cu, sm90_fp4_moe*.cu)
// and the host functions that build them from checkpoint tensors and map them back. Pure C++ (no
// CUDA headers) so the CPU tests check the round trip without a GPU. Invariant: a tile is one
// contiguous block the kernels copy with a single bulk copy; inside it every lane's mma.sync A
// fragment is one 16-byte shared-memory load. Padding (rows >= N, k >= K) is zero weights.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace dsv4::cuda {

// ---- FP8 e4m3 [N, K], e8m0 scales per 128x128 block ----------------------------------------
// Tile (nt, kt) = rows nt*128.., inputs kt*128.., stored at tile index nt*KT + kt (the same index
// as the checkpoint scale tensor [NT, KT], which the kernel reads unchanged). Inside a tile:
// byte ((rg*4 + ks)*32 + lane)*16 + j holds the m16n8k32 A-fragment register j/4, byte j%4 of
// lane `lane` for row group rg (16 rows) and k-step ks (32 inputs):
//   row = rg*16 + lane/4 + 8*((j/4)&1),  k = ks*32 + (lane%4)*4 + 16*((j/4)>>1) + j%4.
inline constexpr int kFp8TileRows = 128;
inline constexpr int kFp8TileK = 128;
inline constexpr int kFp8TileBytes = kFp8TileRows * kFp8TileK;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline size_t fp8_tiled_bytes(int64_t n, int64_t k) {
  return static_cast<size_t>(ceil_div(n, 128) * ceil_div(k, 128)) * kFp8TileBytes;
}

namespace detail {
// Calls f(row, k, byte_offset) for every byte of the tiled FP8 layout.
template <class F>
inline void fp8_tile_walk(int64_t n, int64_t k, F&& f) {
  const int64_t kt_n = ceil_div(k, 128), nt_n = ceil_div(n, 128);
  for (int64_t nt = 0; nt < nt_n; ++nt)
    for (int64_t kt = 0; kt < kt_n; ++kt) {
      const int64_t base = (nt * kt_n + kt) * kFp8TileBytes;
      for (int rg = 0; rg < 8; ++rg)
        for (int ks = 0; ks < 4; ++ks)
          for (int lane = 0; lane < 32; ++lane)
            for (int j = 0; j < 16; ++j) {
              const int reg = j / 4;
              const int64_t row = nt * 128 + rg * 16 + lane / 4 + 8 * (reg & 1);
              const int64_t kk = kt * 128 + ks * 32 + (lane % 4) * 4 + 16 * (reg >> 1) + j % 4;
              f(row, kk, base + ((rg * 4 + ks) * 32 + lane) * 16 + j);
            }
    }
}
}  // namespace detail

// w: e4m3 [n, k] row-major (checkpoint). out: fp8_tiled_bytes(n, k) bytes.
inline void fp8_relayout(const uint8_t* w, int64_t n, int64_t k, uint8_t* out) {
  detail::fp8_tile_walk(n, k, [&](int64_t r, int64_t kk, int64_t off) {
    out[off] = (r < n && kk < k) ? w[r * k + kk] : uint8_t{0};
  });
}
// Inverse of fp8_relayout: tiled -> e4m3 [n, k] row-major.
inline void fp8_relayout_inverse(const uint8_t* tiled, int64_t n, int64_t k, uint8_t* w) {
  detail::fp8_tile_walk(n, k, [&](int64_t r, int64_t kk, int64_t off) {
    if (r < n && kk < k) w[r * k + kk] = tiled[off];
  });
}

// ---- FP4 e2m1 experts (two codes per byte, low nibble = even k), e8m0 scale per 32 inputs ------
// One piece = one 16-row group rg of a 128-row tile nt over kKs*32 inputs (k-tile kt) of kMats
// matrices (w1|w3 interleaved: kMats=2, kKs=4; w2: kMats=1, kKs=8): 2048 bytes of codes, then
// 128 bytes of scales (kFp4PieceBytes = 2176). Pieces are ordered (nt*8 + rg)*KT + kt inside the
// expert's block (experts back to back), so a row group's pieces along K are contiguous and a
// kernel fetches any run of them with one bulk copy. A "tile" (nt, kt) is the 8 pieces rg = 0..7.
// Codes: byte ((mat*(kKs/2) + ks/2)*32 + lane)*16 + q*4 + i of the piece, with q = 2*(ks&1) + hi8,
// row = rg*16 + lane/4 + 8*hi8, holds k = ks*32 + (lane%4)*4 + i in its low nibble and k + 16 in
// its high nibble, so shifting a 32-bit word's nibbles into e4m3 (or f16) position yields an MMA
// A-fragment register directly (value x 2^-6 for e4m3, x 2^-14 for f16; exact).
// Scales: byte 2048 + (mat*16 + r16)*kKs + ks of the piece = scale[row = rg*16 + r16][kblock32 = ks].
inline constexpr int kFp4TileRows = 128;
inline constexpr int kFp4PieceCodeBytes = 2048;
inline constexpr int kFp4PieceBytes = 2048 + 128;
inline constexpr int kFp4TileBytes = 8 * kFp4PieceBytes;
inline constexpr int kFp4W13Ks = 4;  // w1|w3 piece: 128 inputs of each of 2 matrices
inline constexpr int kFp4W2Ks = 8;   // w2 piece: 256 inputs

inline int64_t fp4_w13_k_tiles(int64_t hidden) { return ceil_div(hidden, 32 * kFp4W13Ks); }
inline int64_t fp4_w2_k_tiles(int64_t inter) { return ceil_div(inter, 32 * kFp4W2Ks); }
// Bytes of one expert's tiled w1|w3 ([inter, hidden] each) and tiled w2 ([hidden, inter]).
inline size_t fp4_w13_expert_bytes(int64_t inter, int64_t hidden) {
  return static_cast<size_t>(ceil_div(inter, 128) * fp4_w13_k_tiles(hidden)) * kFp4TileBytes;
}
inline size_t fp4_w2_expert_bytes(int64_t hidden, int64_t inter) {
  return static_cast<size_t>(ceil_div(hidden, 128) * fp4_w2_k_tiles(inter)) * kFp4TileBytes;
}

namespace detail {
// Calls code(mat, row, k, byte_offset, nibble_shift) for every nibble and
// scale(mat, row, kblock32, byte_offset) for every scale byte of one expert's block of pieces.
template <int Mats, int Ks, class FC, class FS>
inline void fp4_tile_walk(int64_t n, int64_t k, FC&& code, FS&& scale) {
  const int64_t kt_n = ceil_div(k, 32 * Ks), nt_n = ceil_div(n, 128);
  for (int64_t nt = 0; nt < nt_n; ++nt)
    for (int64_t kt = 0; kt < kt_n; ++kt) {
      for (int rg = 0; rg < 8; ++rg) {
        const int64_t base = ((nt * 8 + rg) * kt_n + kt) * kFp4PieceBytes;
        for (int mat = 0; mat < Mats; ++mat) {
          for (int ks = 0; ks < Ks; ++ks)
            for (int lane = 0; lane < 32; ++lane)
              for (int hi8 = 0; hi8 < 2; ++hi8)
                for (int i = 0; i < 4; ++i) {
                  const int q = 2 * (ks & 1) + hi8;
                  const int64_t row = nt * 128 + rg * 16 + lane / 4 + 8 * hi8;
                  const int64_t kk = kt * Ks * 32 + ks * 32 + (lane % 4) * 4 + i;
                  const int64_t off = base + ((mat * (Ks / 2) + ks / 2) * 32 + lane) * 16 + q * 4 + i;
                  code(mat, row, kk, off, 0);
                  code(mat, row, kk + 16, off, 4);
                }
          for (int r16 = 0; r16 < 16; ++r16)
            for (int ks = 0; ks < Ks; ++ks)
              scale(mat, nt * 128 + rg * 16 + r16, kt * Ks + ks,
                    base + kFp4PieceCodeBytes + (mat * 16 + r16) * Ks + ks);
        }
      }
    }
}

template <int Mats, int Ks>
inline void fp4_relayout_impl(const uint8_t* const* w, const uint8_t* const* s, int64_t n,
                              int64_t k, uint8_t* out) {
  const int64_t kb_n = ceil_div(k, 32), kh = ceil_div(k, 2);
  std::memset(out, 0, static_cast<size_t>(ceil_div(n, 128) * ceil_div(k, 32 * Ks)) * kFp4TileBytes);
  fp4_tile_walk<Mats, Ks>(
      n, k,
      [&](int mat, int64_t r, int64_t kk, int64_t off, int sh) {
        if (r >= n || kk >= k) return;
        const uint8_t b = w[mat][r * kh + kk / 2];
        const uint8_t c = (kk & 1) ? (b >> 4) : (b & 0xf);
        out[off] = static_cast<uint8_t>(out[off] | (c << sh));
      },
      [&](int mat, int64_t r, int64_t kb, int64_t off) {
        // padding scale 1.0 (127): it only ever multiplies zero codes
        out[off] = (r < n && kb < kb_n) ? s[mat][r * kb_n + kb] : uint8_t{127};
      });
}
template <int Mats, int Ks>
inline void fp4_relayout_inverse_impl(const uint8_t* tiled, int64_t n, int64_t k, uint8_t* const* w,
                                      uint8_t* const* s) {
  const int64_t kb_n = ceil_div(k, 32), kh = ceil_div(k, 2);
  for (int mat = 0; mat < Mats; ++mat) std::memset(w[mat], 0, static_cast<size_t>(n * kh));
  fp4_tile_walk<Mats, Ks>(
      n, k,
      [&](int mat, int64_t r, int64_t kk, int64_t off, int sh) {
        if (r >= n || kk >= k) return;
        const uint8_t c = (tiled[off] >> sh) & 0xf;
        uint8_t& b = w[mat][r * kh + kk / 2];
        b = static_cast<uint8_t>(b | ((kk & 1) ? (c << 4) : c));
      },
      [&](int mat, int64_t r, int64_t kb, int64_t off) {
        if (r < n && kb < kb_n) s[mat][r * kb_n + kb] = tiled[off];
      });
}
}  // namespace detail

// One expert's w1 and w3 (codes [inter, hidden/2], scales [inter, ceil(hidden/32)], checkpoint
// layout) -> fp4_w13_expert_bytes(inter, hidden) bytes at `out`. hidden must be even.
inline void fp4_relayout_w13(const uint8_t* w1, const uint8_t* s1, const uint8_t* w3,
                             const uint8_t* s3, int64_t inter, int64_t hidden, uint8_t* out) {
  const uint8_t* w[2] = {w1, w3};
  const uint8_t* s[2] = {s1, s3};
  detail::fp4_relayout_impl<2, kFp4W13Ks>(w, s, inter, hidden, out);
}
inline void fp4_relayout_w13_inverse(const uint8_t* tiled, int64_t inter, int64_t hidden,
                                     uint8_t* w1, uint8_t* s1, uint8_t* w3, uint8_t* s3) {
  uint8_t* w[2] = {w1, w3};
  uint8_t* s[2] = {s1, s3};
  detail::fp4_relayout_inverse_impl<2, kFp4W13Ks>(tiled, inter, hidden, w, s);
}
// One expert's w2 (codes [hidden, inter/2], scales [hidden, ceil(inter/32)]) ->
// fp4_w2_expert_bytes(hidden, inter) bytes at `out`. inter must be even.
inline void fp4_relayout_w2(const uint8_t* w2, const uint8_t* s2, int64_t hidden, int64_t inter,
                            uint8_t* out) {
  detail::fp4_relayout_impl<1, kFp4W2Ks>(&w2, &s2, hidden, inter, out);
}
inline void fp4_relayout_w2_inverse(const uint8_t* tiled, int64_t hidden, int64_t inter,
                                    uint8_t* w2, uint8_t* s2) {
  detail::fp4_relayout_inverse_impl<1, kFp4W2Ks>(tiled, hidden, inter, &w2, &s2);
}

}  // namespace dsv4::cuda
