// Shared helpers of the slidesparse csrc extension: status checks that name the call and
// the failing status, and the mapping from torch dtypes to CUDA library data types.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <library_types.h>

#include <cstdint>
#include <string>

namespace slidesparse {

// Operand storage dtype -> CUDA data type; int32/fp32 are output-only.
inline cudaDataType_t cuda_dtype(at::ScalarType t, const char* fn) {
  switch (t) {
    case at::kHalf:
      return CUDA_R_16F;
    case at::kBFloat16:
      return CUDA_R_16BF;
    case at::kChar:
      return CUDA_R_8I;
    case at::kFloat8_e4m3fn:
      return CUDA_R_8F_E4M3;
    case at::kInt:
      return CUDA_R_32I;
    case at::kFloat:
      return CUDA_R_32F;
    default:
      TORCH_CHECK(false, fn, ": unsupported dtype ", t);
  }
}

// The (x[M, K], w[N, K]) -> [M, N] contract every GEMM op checks first.
inline void check_operands(const at::Tensor& x, const at::Tensor& w, int64_t K_expected,
                           const char* fn) {
  TORCH_CHECK(x.is_cuda() && w.is_cuda(), fn, ": operands must be CUDA tensors");
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2, fn, ": x and w must be 2-D, got ", x.dim(),
              "-D and ", w.dim(), "-D");
  TORCH_CHECK(x.is_contiguous(), fn, ": x must be row-major contiguous [M, K]");
  TORCH_CHECK(x.size(1) == K_expected, fn, ": x has K=", x.size(1), ", expected ", K_expected);
  TORCH_CHECK(x.get_device() == w.get_device(), fn, ": x and w are on different devices");
}

}  // namespace slidesparse
