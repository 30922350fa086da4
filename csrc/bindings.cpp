// Registers the CUDA implementations of the slidesparse ops. The schemas are defined once,
// in slidesparse/ops.py (which loads this library after defining them).
#include <torch/library.h>

#include <optional>
#include <vector>

#include "common.h"

namespace slidesparse {
std::vector<int64_t> cublaslt_algos(const at::Tensor& x, const at::Tensor& w,
                                    at::ScalarType out_dtype);
at::Tensor cublaslt_mm(const at::Tensor& x, const at::Tensor& w, at::ScalarType out_dtype,
                       int64_t algo_index, bool separate_c,
                       const std::optional<at::Tensor>& x_scale,
                       const std::optional<at::Tensor>& w_scale, double alpha);
at::Tensor cusparselt_compress(const at::Tensor& w, int64_t layout);
at::Tensor cusparselt_mm(const at::Tensor& compressed, const at::Tensor& x, int64_t N,
                         at::ScalarType in_dtype, at::ScalarType out_dtype, int64_t alg_id,
                         int64_t split_k, int64_t split_k_mode, int64_t layout,
                         const std::optional<at::Tensor>& w_scale,
                         const std::optional<at::Tensor>& x_scale);
std::vector<int64_t> cusparselt_plan_info(const at::Tensor& x, int64_t N, at::ScalarType in_dtype,
                                          at::ScalarType out_dtype, int64_t alg_id,
                                          int64_t split_k, int64_t split_k_mode, int64_t layout,
                                          const std::optional<at::Tensor>& w_scale,
                                          const std::optional<at::Tensor>& x_scale);
int64_t cusparselt_version();
}  // namespace slidesparse

TORCH_LIBRARY_IMPL(slidesparse, CUDA, m) {
  m.impl("cublaslt_algos", &slidesparse::cublaslt_algos);
  m.impl("cublaslt_mm", &slidesparse::cublaslt_mm);
  m.impl("cusparselt_compress", &slidesparse::cusparselt_compress);
  m.impl("cusparselt_mm", &slidesparse::cusparselt_mm);
  m.impl("cusparselt_plan_info", &slidesparse::cusparselt_plan_info);
}

TORCH_LIBRARY_IMPL(slidesparse, CompositeExplicitAutograd, m) {
  m.impl("cusparselt_version", &slidesparse::cusparselt_version);
}
