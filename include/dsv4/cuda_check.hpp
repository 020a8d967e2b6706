// Checked CUDA calls for the CUDA backend: DSV4_CUDA_CHECK(expr) throws dsv4::Error(backend) with the
// failing expression, file and line; launcher functions that must not throw return cudaError_t
// instead and use DSV4_CUDA_RETURN_IF_ERROR.
#pragma once
#include <cuda_runtime.h>

#include "dsv4/error.hpp"

#define DSV4_CUDA_CHECK(expr)                                                                    \
  do {                                                                                           \
    cudaError_t dsv4_err_ = (expr);                                                              \
    if (dsv4_err_ != cudaSuccess)                                                                \
      ::dsv4::fail(::dsv4::Status::backend, "CUDA error {} ({}) in {} at {}:{}",                \
                   cudaGetErrorName(dsv4_err_), cudaGetErrorString(dsv4_err_), #expr, __FILE__, \
                   __LINE__);                                                                    \
  } while (0)

#define DSV4_CUDA_RETURN_IF_ERROR(expr)          \
  do {                                           \
    cudaError_t dsv4_err_ = (expr);              \
    if (dsv4_err_ != cudaSuccess) return dsv4_err_; \
  } while (0)
