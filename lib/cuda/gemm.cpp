// The GEMM path of the linear layer: cuBLASLt calls (contract and exactness argument: gemm.hpp).
#include "gemm.hpp"

#include <algorithm>

#include "dsv4/cuda_check.hpp"
#include "dsv4/error.hpp"

namespace dsv4::cuda {
namespace {

const char* cublas_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS status (other)";
  }
}
#define DSV4_CUBLAS_CHECK(expr)                                                                              \
  do {                                                                                                       \
    const cublasStatus_t dsv4_st_ = (expr);                                                                  \
    if (dsv4_st_ != CUBLAS_STATUS_SUCCESS)                                                                   \
      ::dsv4::fail(dsv4_st_ == CUBLAS_STATUS_ALLOC_FAILED ? ::dsv4::Status::out_of_memory : ::dsv4::Status::backend, \
                   "cuBLASLt error {} in {}", cublas_name(dsv4_st_), #expr);                                 \
  } while (0)

// Owners of the per-call cuBLASLt descriptors.
struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  ~MatmulDesc() { if (d) cublasLtMatmulDescDestroy(d); }
};
struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  ~Layout() { if (l) cublasLtMatrixLayoutDestroy(l); }
};
struct Preference {
  cublasLtMatmulPreference_t p = nullptr;
  ~Preference() { if (p) cublasLtMatmulPreferenceDestroy(p); }
};

constexpr size_t kCublasWorkspace = size_t{32} << 20;

}  // namespace

size_t Gemm::KeyHash::operator()(const Key& k) const {
  size_t h = 1469598103934665603ull;
  for (int64_t v : {k.out, k.rows, k.k, k.lda, k.ldb, k.ldc}) h = (h ^ static_cast<size_t>(v)) * 1099511628211ull;
  return h;
}

Gemm::Gemm(bool promoted) : ws_(kCublasWorkspace, "the cuBLASLt workspace"), promoted_(promoted) {
  DSV4_CUBLAS_CHECK(cublasLtCreate(&h_));
}
Gemm::~Gemm() {
  if (h_) cublasLtDestroy(h_);
}

void Gemm::bf16_nt(const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float* C, int64_t ldc, int64_t rows,
                   int64_t out, int64_t k, cudaStream_t stream) {
  if (rows == 0 || out == 0) return;
  if (promoted_) {  // f32-accurate accumulation (gemm_mma.cu); cuBLASLt where it declines the shape
    const cudaError_t e = gemm_bf16_promoted(A, lda, B, ldb, C, ldc, rows, out, k, stream);
    if (e != cudaErrorNotSupported) {
      DSV4_CUDA_CHECK(e);
      return;
    }
  }
  // Column-major view: C_cm [out, rows] = B_cm[k, out]ᵀ · A_cm[k, rows] (row-major X [rows, k] is a
  // column-major [k, rows] with leading dimension lda): transa = T, transb = N — cuBLASLt's "TN",
  // the layout its tensor-core kernels prefer.
  MatmulDesc op;
  DSV4_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op.d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  DSV4_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  DSV4_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  Layout la, lb, lc;
  DSV4_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la.l, CUDA_R_16BF, static_cast<uint64_t>(k), static_cast<uint64_t>(out), ldb));
  DSV4_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb.l, CUDA_R_16BF, static_cast<uint64_t>(k), static_cast<uint64_t>(rows), lda));
  DSV4_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc.l, CUDA_R_32F, static_cast<uint64_t>(out), static_cast<uint64_t>(rows), ldc));
  // One algorithm per shape, the rows rounded up to a power of two (a chunk's MoE calls one GEMM per
  // expert with varying row counts; the heuristic query costs more than a small GEMM).
  int64_t bucket = 1;
  while (bucket < rows) bucket *= 2;
  const Key key{out, bucket, k, lda, ldb, ldc};
  auto it = algos_.find(key);
  if (it == algos_.end()) {
    Preference pref;
    DSV4_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.p));
    const uint64_t wsb = ws_.bytes();
    DSV4_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
                                                           sizeof wsb));
    Layout lq;  // the heuristic is asked for the bucket's row count
    DSV4_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lq.l, CUDA_R_16BF, static_cast<uint64_t>(k), static_cast<uint64_t>(bucket),
                                                 std::max<int64_t>(lda, k)));
    Layout lcq;
    DSV4_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lcq.l, CUDA_R_32F, static_cast<uint64_t>(out), static_cast<uint64_t>(bucket), ldc));
    cublasLtMatmulHeuristicResult_t res{};
    int found = 0;
    DSV4_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(h_, op.d, la.l, lq.l, lcq.l, lcq.l, pref.p, 1, &res, &found));
    if (found < 1) fail(Status::backend, "cuBLASLt has no bf16 GEMM for out {} rows {} k {}", out, rows, k);
    it = algos_.emplace(key, res.algo).first;
  }
  const float alpha = 1.0f, beta = 0.0f;
  cublasStatus_t st = cublasLtMatmul(h_, op.d, &alpha, B, la.l, A, lb.l, &beta, C, lc.l, C, lc.l, &it->second,
                                     ws_.as<unsigned char>(), ws_.bytes(), stream);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE)  // the bucket's algo does not take it
    st = cublasLtMatmul(h_, op.d, &alpha, B, la.l, A, lb.l, &beta, C, lc.l, C, lc.l, nullptr, ws_.as<unsigned char>(),
                        ws_.bytes(), stream);
  DSV4_CUBLAS_CHECK(st);
}

bool Gemm::linear(const LinearArgs& a, Workspace& ws, cudaStream_t stream) {
  const WeightView& w = a.w;
  if (a.expert_ids) return false;
  if (a.rows == 0) return true;
  const int64_t groups = a.out_group > 0 ? w.out / a.out_group : 1, group_out = a.out_group > 0 ? a.out_group : w.out;
  const int64_t width = groups * w.in;  // input columns a row holds
  if (a.quant_act && groups > 1) return false;  // not a case of the model (wo_a is not quantised)
  // The input rows as one bf16 matrix.
  uint16_t* X = ws.get<uint16_t>(static_cast<size_t>(a.rows * width));
  DSV4_CUDA_CHECK(rows_to_bf16(a.x, a.x_stride, a.x_rows, a.rows, width, a.quant_act, X, width, stream));
  auto gemm_all = [&](const uint16_t* W, float* y, int64_t ldy) {
    for (int64_t g = 0; g < groups; ++g)
      bf16_nt(X + g * w.in, width, W + g * group_out * w.in, w.in, y + g * group_out, ldy, a.rows, group_out, w.in,
              stream);
  };
  if (w.format == WeightFormat::f32) {
    // f32 weight = hi + mid + lo exactly (split3_bf16): three bf16 GEMMs, summed in f32.
    const size_t n = static_cast<size_t>(w.out * w.in);
    uint16_t* parts = ws.get<uint16_t>(3 * n);
    DSV4_CUDA_CHECK(split3_bf16(reinterpret_cast<const float*>(w.data), static_cast<int64_t>(n), parts, parts + n,
                                parts + 2 * n, stream));
    float* y3 = ws.get<float>(3 * static_cast<size_t>(a.rows * w.out));
    for (int t = 0; t < 3; ++t) gemm_all(parts + t * n, y3 + t * a.rows * w.out, w.out);
    DSV4_CUDA_CHECK(sum3_rows(y3, y3 + a.rows * w.out, y3 + 2 * a.rows * w.out, w.out, a.rows, w.out, a.bf16_out, a.y,
                              a.y_stride, stream));
    return true;
  }
  const uint16_t* W = reinterpret_cast<const uint16_t*>(w.data);
  if (w.format != WeightFormat::bf16) {
    uint16_t* Wb = ws.get<uint16_t>(static_cast<size_t>(w.out * w.in));
    DSV4_CUDA_CHECK(weight_to_bf16(w, 0, w.out, Wb, stream));
    W = Wb;
  }
  gemm_all(W, a.y, a.y_stride);
  if (a.bf16_out) DSV4_CUDA_CHECK(round_rows_bf16(a.y, a.y_stride, a.rows, w.out, stream));
  return true;
}

}  // namespace dsv4::cuda
