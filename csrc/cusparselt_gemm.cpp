// 2:4 sparse GEMM on cuSPARSELt: compress once, plan per algorithm, plans cached.
//
// Y[M, N] = X[M, Ks] · W[N, Ks]ᵀ with W 2:4 sparse along Ks and D = N x M column-major (which
// is Y row-major). The same memory has two descriptions per operand, and the library picks
// different kernels for them (on an H200 each of the four won on some shapes), so the search
// tries all four ("layout", two bits):
//   bit 0 (A = W): 0 = Ks x N column-major used transposed, 1 = N x Ks row-major used as is;
//   bit 1 (B = X): 0 = Ks x M column-major used as is, 1 = M x Ks row-major used transposed.
// Layout 3 is how torch._cslt_sparse_mm describes W and a transposed activation view, so the
// search here is a superset of torch's.
//
// Compression depends only on A's descriptor (cusparseLtSpMMACompress2), so one compressed
// weight per A description (bit 0) serves every alg_id / split_k / B description. C gets its
// own descriptor, as torch gives it, rather than aliasing D's. Plans are keyed by the full
// problem and algorithm and kept for the process lifetime; workspace comes from torch's
// allocator.
//
// FP4 (E2M1; cuSPARSELt >= 0.7 and CUDA >= 12.8 headers, sm100+): W and x are
// float4_e2m1fn_x2 (two values per element, Ks = 2 * size(1)); the structured 50% pattern of
// E2M1 is *paired* 4:8 (at most 2 non-zero aligned pairs in every 8 values along K), not 2:4.
// Both operands carry one UE4M3 scale per 32 values along K (VEC32_UE4M3) in the 128x4 tiled
// layout; C and D are BF16 (or FP16). The scale modes select the kernels, so they are set
// before the algorithm selection, and the scale pointers (read from the matmul descriptor) are
// part of the plan key: a plan is only ever run with the scales it was built with.
#include <cusparseLt.h>

#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "common.h"

#if SS_HAVE_FP4 && defined(CUSPARSELT_VERSION) && CUSPARSELT_VERSION >= 700
#define SS_CUSPARSELT_FP4 1
#else
#define SS_CUSPARSELT_FP4 0
#endif

namespace slidesparse {
namespace {

#define SS_CUSPARSELT_CHECK(call, fn)                                                     \
  do {                                                                                    \
    cusparseStatus_t _st = (call);                                                        \
    TORCH_CHECK(_st == CUSPARSE_STATUS_SUCCESS, fn, ": ", #call, " failed: ",           \
                cusparseLtGetErrorString(_st), " (", static_cast<int>(_st), ")");         \
  } while (0)

constexpr uint32_t kAlign = 16;

struct Handle {
  cusparseLtHandle_t h;
};

struct Plan {
  cusparseLtMatDescriptor_t a, b, c, d;
  cusparseLtMatmulDescriptor_t matmul;
  cusparseLtMatmulAlgSelection_t alg;
  cusparseLtMatmulPlan_t plan;
  size_t workspace = 0;
  int max_alg_id = 0;
  bool ready = false;
  ~Plan() {
    if (ready) {
      cusparseLtMatmulPlanDestroy(&plan);
      cusparseLtMatmulAlgSelectionDestroy(&alg);
      cusparseLtMatDescriptorDestroy(&d);
      cusparseLtMatDescriptorDestroy(&c);
      cusparseLtMatDescriptorDestroy(&b);
      cusparseLtMatDescriptorDestroy(&a);
    }
  }
};

// device, N, Ks, M, in dtype, out dtype, alg_id, split_k, split_k_mode, layout, and for FP4 the
// addresses of the W and x block scales (0 otherwise)
using Key = std::tuple<int, int64_t, int64_t, int64_t, int, int, int64_t, int64_t, int64_t,
                       int64_t, uintptr_t, uintptr_t>;

constexpr int64_t kFp4Block = 32;  // CUSPARSELT_MATMUL_MATRIX_SCALE_VEC32_UE4M3

// The FP4 block-scale pointers of one call (null for the other dtypes).
struct Scales {
  const void* w = nullptr;
  const void* x = nullptr;
};

std::mutex g_mutex;
std::map<int, std::unique_ptr<Handle>> g_handles;
std::map<Key, std::unique_ptr<Plan>> g_plans;

cusparseLtHandle_t* handle_for(int device) {
  auto it = g_handles.find(device);
  if (it != g_handles.end()) return &it->second->h;
  auto h = std::make_unique<Handle>();
  SS_CUSPARSELT_CHECK(cusparseLtInit(&h->h), "slidesparse::cusparselt");
  auto* ptr = &h->h;
  g_handles[device] = std::move(h);
  return ptr;
}

cusparseComputeType compute_type(at::ScalarType in) {
  return in == at::kChar ? CUSPARSE_COMPUTE_32I : CUSPARSE_COMPUTE_32F;
}

void check_out_dtype(at::ScalarType in, at::ScalarType out, const char* fn) {
  bool ok = false;
  if (in == at::kChar) {
    ok = out == at::kInt || out == at::kBFloat16 || out == at::kHalf;
  } else if (in == at::kFloat8_e4m3fn) {
    ok = out == at::kBFloat16 || out == at::kHalf || out == at::kFloat;
  } else if (in == at::kHalf || in == at::kBFloat16) {
    ok = out == in;
  } else if (is_fp4(in)) {
    TORCH_CHECK(SS_CUSPARSELT_FP4, fn,
                ": built without E2M1 support (needs cuSPARSELt >= 0.7 and CUDA >= 12.8 headers)");
    ok = out == at::kBFloat16 || out == at::kHalf;
  } else {
    TORCH_CHECK(false, fn, ": unsupported operand dtype ", in);
  }
  TORCH_CHECK(ok, fn, ": cannot write ", out, " from ", in);
}

bool a_row(int64_t layout) { return (layout & 1) != 0; }
bool b_row(int64_t layout) { return (layout & 2) != 0; }

cusparseOperation_t op_a(int64_t layout) {
  return a_row(layout) ? CUSPARSE_OPERATION_NON_TRANSPOSE : CUSPARSE_OPERATION_TRANSPOSE;
}

cusparseOperation_t op_b(int64_t layout) {
  return b_row(layout) ? CUSPARSE_OPERATION_TRANSPOSE : CUSPARSE_OPERATION_NON_TRANSPOSE;
}

// The structured descriptor of W[N, Ks] in the given layout (see the file comment).
void init_sparse_desc(cusparseLtHandle_t* h, cusparseLtMatDescriptor_t* a, int64_t N, int64_t Ks,
                      cudaDataType_t t, int64_t layout, const char* fn) {
  TORCH_CHECK(layout >= 0 && layout <= 3, fn, ": layout ", layout, " is not in 0..3");
  if (!a_row(layout)) {
    SS_CUSPARSELT_CHECK(cusparseLtStructuredDescriptorInit(h, a, Ks, N, Ks, kAlign, t,
                                                           CUSPARSE_ORDER_COL,
                                                           CUSPARSELT_SPARSITY_50_PERCENT),
                        fn);
  } else {
    SS_CUSPARSELT_CHECK(cusparseLtStructuredDescriptorInit(h, a, N, Ks, Ks, kAlign, t,
                                                           CUSPARSE_ORDER_ROW,
                                                           CUSPARSELT_SPARSITY_50_PERCENT),
                        fn);
  }
}

// Builds (or finds) the plan; caller holds g_mutex.
Plan& plan_for(int dev, int64_t N, int64_t Ks, int64_t M, at::ScalarType in, at::ScalarType out,
               int64_t alg_id, int64_t split_k, int64_t split_k_mode, int64_t layout,
               Scales scales = {}) {
  const char* fn = "slidesparse::cusparselt_mm";
  Key key{dev, N, Ks, M, static_cast<int>(in), static_cast<int>(out), alg_id, split_k,
          split_k_mode, layout, reinterpret_cast<uintptr_t>(scales.w),
          reinterpret_cast<uintptr_t>(scales.x)};
  auto it = g_plans.find(key);
  if (it != g_plans.end()) return *it->second;
  cusparseLtHandle_t* h = handle_for(dev);
  const cudaDataType_t ab = cuda_dtype(in, fn), dd = cuda_dtype(out, fn);
  auto p = std::make_unique<Plan>();
  init_sparse_desc(h, &p->a, N, Ks, ab, layout, fn);
  if (b_row(layout)) {
    SS_CUSPARSELT_CHECK(cusparseLtDenseDescriptorInit(h, &p->b, M, Ks, Ks, kAlign, ab,
                                                      CUSPARSE_ORDER_ROW), fn);
  } else {
    SS_CUSPARSELT_CHECK(cusparseLtDenseDescriptorInit(h, &p->b, Ks, M, Ks, kAlign, ab,
                                                      CUSPARSE_ORDER_COL), fn);
  }
  SS_CUSPARSELT_CHECK(cusparseLtDenseDescriptorInit(h, &p->c, N, M, N, kAlign, dd,
                                                    CUSPARSE_ORDER_COL), fn);
  SS_CUSPARSELT_CHECK(cusparseLtDenseDescriptorInit(h, &p->d, N, M, N, kAlign, dd,
                                                    CUSPARSE_ORDER_COL), fn);
  SS_CUSPARSELT_CHECK(cusparseLtMatmulDescriptorInit(h, &p->matmul, op_a(layout), op_b(layout),
                                                     &p->a, &p->b, &p->c, &p->d,
                                                     compute_type(in)),
                      fn);
#if SS_CUSPARSELT_FP4
  if (is_fp4(in)) {
    // A is W (sparse), B is x.
    const cusparseLtMatmulMatrixScale_t mode = CUSPARSELT_MATMUL_MATRIX_SCALE_VEC32_UE4M3;
    SS_CUSPARSELT_CHECK(cusparseLtMatmulDescSetAttribute(h, &p->matmul,
                                                         CUSPARSELT_MATMUL_A_SCALE_MODE, &mode,
                                                         sizeof(mode)), fn);
    SS_CUSPARSELT_CHECK(cusparseLtMatmulDescSetAttribute(h, &p->matmul,
                                                         CUSPARSELT_MATMUL_B_SCALE_MODE, &mode,
                                                         sizeof(mode)), fn);
    SS_CUSPARSELT_CHECK(cusparseLtMatmulDescSetAttribute(h, &p->matmul,
                                                         CUSPARSELT_MATMUL_A_SCALE_POINTER,
                                                         &scales.w, sizeof(scales.w)), fn);
    SS_CUSPARSELT_CHECK(cusparseLtMatmulDescSetAttribute(h, &p->matmul,
                                                         CUSPARSELT_MATMUL_B_SCALE_POINTER,
                                                         &scales.x, sizeof(scales.x)), fn);
  }
#endif
  SS_CUSPARSELT_CHECK(cusparseLtMatmulAlgSelectionInit(h, &p->alg, &p->matmul,
                                                       CUSPARSELT_MATMUL_ALG_DEFAULT), fn);
  int max_id = 0;
  SS_CUSPARSELT_CHECK(cusparseLtMatmulAlgGetAttribute(h, &p->alg,
                                                      CUSPARSELT_MATMUL_ALG_CONFIG_MAX_ID,
                                                      &max_id, sizeof(max_id)), fn);
  p->max_alg_id = max_id;
  TORCH_CHECK(alg_id >= 0 && alg_id < max_id, fn, ": alg_id ", alg_id,
              " out of range [0, ", max_id, ")");
  int alg = static_cast<int>(alg_id);
  SS_CUSPARSELT_CHECK(cusparseLtMatmulAlgSetAttribute(h, &p->alg, CUSPARSELT_MATMUL_ALG_CONFIG_ID,
                                                      &alg, sizeof(alg)), fn);
  if (split_k != 1) {
    int sk = static_cast<int>(split_k);
    SS_CUSPARSELT_CHECK(cusparseLtMatmulAlgSetAttribute(h, &p->alg, CUSPARSELT_MATMUL_SPLIT_K,
                                                        &sk, sizeof(sk)), fn);
  }
  if (split_k_mode > 0) {
    // 1 / 2 name the modes; their enum values differ between library versions.
    TORCH_CHECK(split_k_mode <= 2, fn, ": split_k_mode ", split_k_mode, " is not 1 or 2");
    cusparseLtSplitKMode_t mode = split_k_mode == 1 ? CUSPARSELT_SPLIT_K_MODE_ONE_KERNEL
                                                    : CUSPARSELT_SPLIT_K_MODE_TWO_KERNELS;
    SS_CUSPARSELT_CHECK(cusparseLtMatmulAlgSetAttribute(h, &p->alg,
                                                        CUSPARSELT_MATMUL_SPLIT_K_MODE, &mode,
                                                        sizeof(mode)), fn);
  }
  SS_CUSPARSELT_CHECK(cusparseLtMatmulPlanInit(h, &p->plan, &p->matmul, &p->alg), fn);
  p->ready = true;
  SS_CUSPARSELT_CHECK(cusparseLtMatmulGetWorkspace(h, &p->plan, &p->workspace), fn);
  auto& ref = *p;
  g_plans[key] = std::move(p);
  return ref;
}

}  // namespace

// Compress a 2:4 weight W[N, Ks] into cuSPARSELt's opaque form (a uint8 buffer) for `layout`
// (only its A bit matters).
at::Tensor cusparselt_compress(const at::Tensor& w, int64_t layout) {
  const char* fn = "slidesparse::cusparselt_compress";
  TORCH_CHECK(w.is_cuda() && w.dim() == 2 && w.is_contiguous(), fn,
              ": w must be a contiguous 2-D CUDA tensor [N, K_slide]");
  const int64_t N = w.size(0), Ks = w.size(1) * values_per_element(w.scalar_type());
  TORCH_CHECK(Ks % 32 == 0, fn, ": K_slide=", Ks, " must be a multiple of 32");
  if (is_fp4(w.scalar_type())) check_out_dtype(w.scalar_type(), at::kBFloat16, fn);
  c10::cuda::CUDAGuard guard(w.device());
  cusparseLtMatDescriptor_t a;
  size_t size = 0, buffer = 0;
  cusparseLtHandle_t* h;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    h = handle_for(w.get_device());
  }
  init_sparse_desc(h, &a, N, Ks, cuda_dtype(w.scalar_type(), fn), layout, fn);
  SS_CUSPARSELT_CHECK(cusparseLtSpMMACompressedSize2(h, &a, &size, &buffer), fn);
  auto out = at::empty({static_cast<int64_t>(size)}, w.options().dtype(at::kByte));
  auto tmp = at::empty({static_cast<int64_t>(std::max<size_t>(buffer, 1))},
                       w.options().dtype(at::kByte));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  SS_CUSPARSELT_CHECK(cusparseLtSpMMACompress2(h, &a, 1, op_a(layout),
                                               w.data_ptr(), out.data_ptr(), tmp.data_ptr(),
                                               stream),
                      fn);
  cusparseLtMatDescriptorDestroy(&a);
  return out;
}

// Y[M, N] = X[M, Ks] · W[N, Ks]ᵀ from the compressed W.
namespace {

// The FP4 scale pointers of a call after checking them (null pointers for other dtypes, which
// must not pass scales).
Scales call_scales(const at::Tensor& x, int64_t N, at::ScalarType in_dtype,
                   const std::optional<at::Tensor>& w_scale,
                   const std::optional<at::Tensor>& x_scale, const char* fn) {
  if (!is_fp4(in_dtype)) {
    TORCH_CHECK(!w_scale.has_value() && !x_scale.has_value(), fn,
                ": block scales are for fp4 operands only, got ", in_dtype);
    return {};
  }
  const int64_t M = x.size(0), Ks = x.size(1) * 2;
  TORCH_CHECK(Ks % 64 == 0, fn, ": fp4 needs K_slide % 64 == 0 (whole paired 4:8 groups in 32-value "
              "scale blocks), got ", Ks);
  const at::Tensor& ws = check_block_scale(w_scale, x, N, Ks, kFp4Block, "w_scale", fn);
  const at::Tensor& xs = check_block_scale(x_scale, x, M, Ks, kFp4Block, "x_scale", fn);
  return {ws.data_ptr(), xs.data_ptr()};
}

}  // namespace

at::Tensor cusparselt_mm(const at::Tensor& compressed, const at::Tensor& x, int64_t N,
                         at::ScalarType in_dtype, at::ScalarType out_dtype, int64_t alg_id,
                         int64_t split_k, int64_t split_k_mode, int64_t layout,
                         const std::optional<at::Tensor>& w_scale,
                         const std::optional<at::Tensor>& x_scale) {
  const char* fn = "slidesparse::cusparselt_mm";
  TORCH_CHECK(compressed.is_cuda() && x.is_cuda(), fn, ": operands must be CUDA tensors");
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), fn, ": x must be contiguous [M, K_slide]");
  TORCH_CHECK(x.scalar_type() == in_dtype, fn, ": x is ", x.scalar_type(), ", expected ",
              in_dtype);
  check_out_dtype(in_dtype, out_dtype, fn);
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t M = x.size(0), Ks = x.size(1) * values_per_element(in_dtype);
  const Scales scales = call_scales(x, N, in_dtype, w_scale, x_scale, fn);
  Plan* p;
  cusparseLtHandle_t* h;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    p = &plan_for(x.get_device(), N, Ks, M, in_dtype, out_dtype, alg_id, split_k, split_k_mode,
                  layout, scales);
    h = handle_for(x.get_device());
  }
  auto out = at::empty({M, N}, x.options().dtype(out_dtype));
  auto ws = at::empty({static_cast<int64_t>(std::max<size_t>(p->workspace, 1))},
                      x.options().dtype(at::kByte));
  const float one = 1.f, zero = 0.f;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  SS_CUSPARSELT_CHECK(cusparseLtMatmul(h, &p->plan, &one, compressed.data_ptr(), x.data_ptr(),
                                       &zero, out.data_ptr(), out.data_ptr(), ws.data_ptr(),
                                       &stream, 1),
                      fn);
  return out;
}

// [max_alg_id, workspace bytes] of one configuration (building its plan).
std::vector<int64_t> cusparselt_plan_info(const at::Tensor& x, int64_t N, at::ScalarType in_dtype,
                                          at::ScalarType out_dtype, int64_t alg_id,
                                          int64_t split_k, int64_t split_k_mode, int64_t layout,
                                          const std::optional<at::Tensor>& w_scale,
                                          const std::optional<at::Tensor>& x_scale) {
  const char* fn = "slidesparse::cusparselt_plan_info";
  TORCH_CHECK(x.is_cuda() && x.dim() == 2, fn, ": x must be a 2-D CUDA tensor");
  check_out_dtype(in_dtype, out_dtype, fn);
  c10::cuda::CUDAGuard guard(x.device());
  const Scales scales = call_scales(x, N, in_dtype, w_scale, x_scale, fn);
  std::lock_guard<std::mutex> lock(g_mutex);
  Plan& p = plan_for(x.get_device(), N, x.size(1) * values_per_element(in_dtype), x.size(0),
                     in_dtype, out_dtype, alg_id, split_k, split_k_mode, layout, scales);
  return {static_cast<int64_t>(p.max_alg_id), static_cast<int64_t>(p.workspace)};
}

int64_t cusparselt_version() {
  return CUSPARSELT_VERSION;
}

}  // namespace slidesparse
