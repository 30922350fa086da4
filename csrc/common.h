// Shared helpers of the slidesparse csrc extension: status checks that name the call and
// the failing status, and the mapping from torch dtypes to CUDA library data types.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <library_types.h>

#include <cstdint>
#include <optional>
#include <string>

// FP4 (E2M1) needs CUDA_R_4F_E2M1 and the block-scale modes, both new in CUDA 12.8 headers;
// older headers still build, and an FP4 call then fails with a message saying why.
#if defined(CUDART_VERSION) && CUDART_VERSION >= 12080
#define SS_HAVE_FP4 1
#else
#define SS_HAVE_FP4 0
#endif

namespace slidesparse {

inline bool is_fp4(at::ScalarType t) { return t == at::ScalarType::Float4_e2m1fn_x2; }

// Values per stored element along K: torch packs two E2M1 values into one float4_e2m1fn_x2.
inline int64_t values_per_element(at::ScalarType t) { return is_fp4(t) ? 2 : 1; }

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
#if SS_HAVE_FP4
    case at::ScalarType::Float4_e2m1fn_x2:
      return CUDA_R_4F_E2M1;
#endif
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

// Elements of a block-scale tensor in the libraries' tiled layout: 128 x 4 tiles over
// [rows, K / block] (rows padded to 128, scale columns to 4).
inline int64_t block_scale_numel(int64_t rows, int64_t k_values, int64_t block) {
  const int64_t cols = (k_values / block + 3) / 4 * 4;
  return (rows + 127) / 128 * 128 * cols;
}

// The E4M3 block scales of one FP4 operand [rows, k_values]: present, on `like`'s device,
// contiguous, and exactly the size of the tiled layout.
inline const at::Tensor& check_block_scale(const std::optional<at::Tensor>& scale,
                                           const at::Tensor& like, int64_t rows,
                                           int64_t k_values, int64_t block, const char* name,
                                           const char* fn) {
  TORCH_CHECK(scale.has_value(), fn, ": fp4 operands need ", name,
              " (float8_e4m3fn block scales in the 128x4 tiled layout)");
  const at::Tensor& s = *scale;
  TORCH_CHECK(s.is_cuda() && s.get_device() == like.get_device(), fn, ": ", name,
              " must be on the operands' CUDA device");
  TORCH_CHECK(s.scalar_type() == at::kFloat8_e4m3fn && s.is_contiguous(), fn, ": ", name,
              " must be a contiguous float8_e4m3fn tensor, got ", s.scalar_type());
  TORCH_CHECK(s.numel() == block_scale_numel(rows, k_values, block), fn, ": ", name, " has ",
              s.numel(), " scales, expected ", block_scale_numel(rows, k_values, block),
              " for ", rows, " rows x K=", k_values, " in blocks of ", block);
  return s;
}

}  // namespace slidesparse
