// Dense GEMM on cuBLASLt with a searchable algorithm list.
//
// Y[M, N] = X[M, K] · W[N, K]ᵀ runs in cuBLASLt's column-major terms as the "TN" product
// D = op(A) · B: A = W seen as a K x N column-major matrix (transposed), B = X seen as K x M
// column-major, D = N x M column-major, which is exactly Y row-major.
// TN is the one layout every dtype (INT8 and FP8 included) supports.
//
// For each problem (device, M, N, K, dtypes) the descriptors and up to `max_algos` heuristic
// results are built once and cached; an algorithm is then addressed by its index in that list,
// which Python searches over and stores.
//
// C (never read: beta = 0) is either D itself (in place) or a separate read-only pointer,
// which is what torch._scaled_mm passes for FP8 (the activation's); the library may run a
// different epilogue for the two, so FP8 searches both.
//
// FP4 (E2M1, CUDA >= 12.8 headers, sm100+): x and w are float4_e2m1fn_x2 (two values per
// element, so K = 2 * size(1)), block-scaled with one UE4M3 scale per 16 values along K
// (VEC16_UE4M3) in the library's 128x4 tiled scale layout; D is BF16, in place, and alpha may
// carry the product of the two per-tensor global scales. The scale pointers live on the cached
// descriptor, so an FP4 call sets them and enqueues under the lock.
#include <cublasLt.h>

#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "common.h"

namespace slidesparse {
namespace {

#define SS_CUBLAS_CHECK(call, fn)                                                         \
  do {                                                                                    \
    cublasStatus_t _st = (call);                                                          \
    TORCH_CHECK(_st == CUBLAS_STATUS_SUCCESS, fn, ": ", #call, " failed with status ",  \
                static_cast<int>(_st));                                                   \
  } while (0)

constexpr size_t kWorkspaceBytes = 32ull << 20;  // Hopper's recommended cuBLASLt workspace
constexpr int kMaxAlgos = 64;

struct Problem {
  at::Tensor unit_scale;  // fp32 1.0 on the device: FP8's A/B scale pointers
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  std::vector<cublasLtMatmulHeuristicResult_t> algos;
  bool int_scale = false;
  bool block_scaled = false;  // FP4: needs A/B block-scale pointers per call
  ~Problem() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

using Key = std::tuple<int, int64_t, int64_t, int64_t, int, int>;

std::mutex g_mutex;
std::map<int, cublasLtHandle_t> g_handles;
std::map<Key, std::unique_ptr<Problem>> g_problems;

cublasLtHandle_t handle_for(int device) {
  auto it = g_handles.find(device);
  if (it != g_handles.end()) return it->second;
  cublasLtHandle_t h;
  SS_CUBLAS_CHECK(cublasLtCreate(&h), "cublaslt");
  g_handles[device] = h;
  return h;
}

// Builds (or finds) the cached problem; caller holds g_mutex.
Problem& problem_for(const at::Tensor& x, const at::Tensor& w, at::ScalarType out_dtype) {
  const char* fn = "slidesparse::cublaslt_mm";
  check_operands(x, w, w.size(1), fn);
  TORCH_CHECK(w.is_contiguous(), fn, ": w must be row-major contiguous [N, K]");
  TORCH_CHECK(x.scalar_type() == w.scalar_type(), fn, ": x is ", x.scalar_type(), " but w is ",
              w.scalar_type());
  const int dev = x.get_device();
  const int64_t M = x.size(0), N = w.size(0);
  const int64_t K = x.size(1) * values_per_element(x.scalar_type());
  Key key{dev, M, N, K, static_cast<int>(x.scalar_type()), static_cast<int>(out_dtype)};
  auto it = g_problems.find(key);
  if (it != g_problems.end()) return *it->second;

  const at::ScalarType in = x.scalar_type();
  cublasComputeType_t compute;
  cudaDataType_t scale_type;
  bool int_scale = false;
  if (in == at::kChar) {
    TORCH_CHECK(out_dtype == at::kInt, fn, ": int8 writes int32, got out_dtype ", out_dtype);
    compute = CUBLAS_COMPUTE_32I;
    scale_type = CUDA_R_32I;
    int_scale = true;
  } else if (in == at::kFloat8_e4m3fn) {
    TORCH_CHECK(out_dtype == at::kBFloat16 || out_dtype == at::kHalf || out_dtype == at::kFloat,
                fn, ": fp8 writes bf16, fp16 or fp32, got out_dtype ", out_dtype);
    compute = CUBLAS_COMPUTE_32F;
    scale_type = CUDA_R_32F;
  } else if (in == at::kHalf || in == at::kBFloat16) {
    TORCH_CHECK(out_dtype == in, fn, ": ", in, " writes ", in, ", got out_dtype ", out_dtype);
    compute = CUBLAS_COMPUTE_32F;
    scale_type = CUDA_R_32F;
  } else if (is_fp4(in)) {
    TORCH_CHECK(SS_HAVE_FP4, fn, ": built against CUDA headers older than 12.8 (no E2M1)");
    TORCH_CHECK(out_dtype == at::kBFloat16, fn, ": fp4 writes bf16, got out_dtype ", out_dtype);
    // 16-byte aligned packed rows; whole 16-value scale blocks.
    TORCH_CHECK(K % 32 == 0, fn, ": fp4 needs K (values) % 32 == 0, got K=", K);
    compute = CUBLAS_COMPUTE_32F;
    scale_type = CUDA_R_32F;
  } else {
    TORCH_CHECK(false, fn, ": unsupported operand dtype ", in);
  }
  const cudaDataType_t ab = cuda_dtype(in, fn);
  const cudaDataType_t dd = cuda_dtype(out_dtype, fn);

  auto p = std::make_unique<Problem>();
  p->int_scale = int_scale;
  SS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, compute, scale_type), fn);
  const cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
  SS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT,
                                                 sizeof(opT)), fn);
  SS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN,
                                                 sizeof(opN)), fn);
  if (in == at::kFloat8_e4m3fn) {
    // Tensor-wise scales as torch._scaled_mm sets them: part of the FP8 recipe, and the
    // heuristic may pick different kernels with them.
    p->unit_scale = at::ones({1}, x.options().dtype(at::kFloat));
    void* sp = p->unit_scale.data_ptr();
    SS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                   &sp, sizeof(sp)), fn);
    SS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                   &sp, sizeof(sp)), fn);
  }
#if SS_HAVE_FP4
  if (is_fp4(in)) {
    // The modes select block-scaled kernels, so they are set before the heuristic runs.
    const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC16_UE4M3;
    SS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE,
                                                   &mode, sizeof(mode)), fn);
    SS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE,
                                                   &mode, sizeof(mode)), fn);
    p->block_scaled = true;
  }
#endif
  SS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, ab, K, N, K), fn);
  SS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, ab, K, M, K), fn);
  SS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->d, dd, N, M, N), fn);

  cublasLtMatmulPreference_t pref;
  SS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref), fn);
  size_t ws = kWorkspaceBytes;
  SS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
                      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)), fn);
  std::vector<cublasLtMatmulHeuristicResult_t> results(kMaxAlgos);
  int returned = 0;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_for(dev), p->desc, p->a, p->b,
                                                     p->d, p->d, pref, kMaxAlgos,
                                                     results.data(), &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  TORCH_CHECK(st == CUBLAS_STATUS_SUCCESS && returned > 0, fn,
              ": no cuBLASLt algorithm for M=", M, " N=", N, " K=", K, " ", in, "->",
              out_dtype, " (status ", static_cast<int>(st), ")");
  for (int i = 0; i < returned; ++i) {
    if (results[i].state == CUBLAS_STATUS_SUCCESS) p->algos.push_back(results[i]);
  }
  auto& ref = *p;
  g_problems[key] = std::move(p);
  return ref;
}

int64_t algo_attr(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attr) {
  int32_t v = 0;  // the attributes read here are 32-bit (split-k is signed: -1 = auto)
  size_t written = 0;
  if (cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &v, sizeof(v), &written) !=
      CUBLAS_STATUS_SUCCESS)
    return -1;
  return static_cast<int64_t>(v);
}

}  // namespace

// Per heuristic result, 6 ints: algo id, tile id, stages id, split-k, reduction scheme,
// workspace bytes. Its length / 6 is the number of searchable algorithms.
std::vector<int64_t> cublaslt_algos(const at::Tensor& x, const at::Tensor& w,
                                    at::ScalarType out_dtype) {
  c10::cuda::CUDAGuard guard(x.device());
  std::lock_guard<std::mutex> lock(g_mutex);
  Problem& p = problem_for(x, w, out_dtype);
  std::vector<int64_t> out;
  for (const auto& r : p.algos) {
    out.push_back(algo_attr(r.algo, CUBLASLT_ALGO_CONFIG_ID));
    out.push_back(algo_attr(r.algo, CUBLASLT_ALGO_CONFIG_TILE_ID));
    out.push_back(algo_attr(r.algo, CUBLASLT_ALGO_CONFIG_STAGES_ID));
    out.push_back(algo_attr(r.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM));
    out.push_back(algo_attr(r.algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME));
    out.push_back(static_cast<int64_t>(r.workspaceSize));
  }
  return out;
}

namespace {

// FP4: set this call's block-scale pointers on the cached descriptor and enqueue, all under the
// lock, so a concurrent call cannot swap the pointers in between.
at::Tensor cublaslt_mm_fp4(const at::Tensor& x, const at::Tensor& w, at::ScalarType out_dtype,
                           int64_t algo_index, bool separate_c,
                           const std::optional<at::Tensor>& x_scale,
                           const std::optional<at::Tensor>& w_scale, double alpha) {
  const char* fn = "slidesparse::cublaslt_mm";
  TORCH_CHECK(!separate_c, fn, ": fp4 runs with C = D (separate_c=False)");
  const int64_t M = x.size(0), N = w.size(0), K = x.size(1) * 2;
  const at::Tensor& xs = check_block_scale(x_scale, x, M, K, 16, "x_scale", fn);
  const at::Tensor& wsc = check_block_scale(w_scale, x, N, K, 16, "w_scale", fn);
  std::lock_guard<std::mutex> lock(g_mutex);
  Problem& p = problem_for(x, w, out_dtype);
  cublasLtHandle_t handle = handle_for(x.get_device());
  TORCH_CHECK(algo_index >= 0 && algo_index < static_cast<int64_t>(p.algos.size()), fn,
              ": algo_index ", algo_index, " out of range [0, ", p.algos.size(), ")");
  const auto& r = p.algos[algo_index];
  auto out = at::empty({M, N}, x.options().dtype(out_dtype));
  auto ws = at::empty({static_cast<int64_t>(std::max<size_t>(r.workspaceSize, 1))},
                      x.options().dtype(at::kByte));
  // A is W and B is X in the TN product (see the file comment).
  const void* a_sp = wsc.data_ptr();
  const void* b_sp = xs.data_ptr();
  SS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                 &a_sp, sizeof(a_sp)), fn);
  SS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                 &b_sp, sizeof(b_sp)), fn);
  const float falpha = static_cast<float>(alpha), fzero = 0.f;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  SS_CUBLAS_CHECK(cublasLtMatmul(handle, p.desc, &falpha, w.data_ptr(), p.a, x.data_ptr(), p.b,
                                 &fzero, out.data_ptr(), p.d, out.data_ptr(), p.d, &r.algo,
                                 ws.data_ptr(), r.workspaceSize, stream),
                  fn);
  return out;
}

}  // namespace

at::Tensor cublaslt_mm(const at::Tensor& x, const at::Tensor& w, at::ScalarType out_dtype,
                       int64_t algo_index, bool separate_c,
                       const std::optional<at::Tensor>& x_scale,
                       const std::optional<at::Tensor>& w_scale, double fp4_alpha) {
  const char* fn = "slidesparse::cublaslt_mm";
  c10::cuda::CUDAGuard guard(x.device());
  if (is_fp4(x.scalar_type())) {
    return cublaslt_mm_fp4(x, w, out_dtype, algo_index, separate_c, x_scale, w_scale, fp4_alpha);
  }
  TORCH_CHECK(!x_scale.has_value() && !w_scale.has_value() && fp4_alpha == 1.0, fn,
              ": block scales and alpha are for fp4 operands only, got ", x.scalar_type());
  cublasLtHandle_t handle;
  Problem* p;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    p = &problem_for(x, w, out_dtype);
    handle = handle_for(x.get_device());
  }
  TORCH_CHECK(algo_index >= 0 && algo_index < static_cast<int64_t>(p->algos.size()), fn,
              ": algo_index ", algo_index, " out of range [0, ", p->algos.size(), ")");
  const auto& r = p->algos[algo_index];
  auto out = at::empty({x.size(0), w.size(0)}, x.options().dtype(out_dtype));
  auto ws = at::empty({static_cast<int64_t>(std::max<size_t>(r.workspaceSize, 1))},
                      x.options().dtype(at::kByte));
  const int32_t ione = 1, izero = 0;
  const float fone = 1.f, fzero = 0.f;
  const void* alpha = p->int_scale ? static_cast<const void*>(&ione) : &fone;
  const void* beta = p->int_scale ? static_cast<const void*>(&izero) : &fzero;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const void* c = separate_c ? x.data_ptr() : out.data_ptr();
  SS_CUBLAS_CHECK(cublasLtMatmul(handle, p->desc, alpha, w.data_ptr(), p->a, x.data_ptr(), p->b,
                                 beta, c, p->d, out.data_ptr(), p->d, &r.algo,
                                 ws.data_ptr(), r.workspaceSize, stream),
                  fn);
  return out;
}

}  // namespace slidesparse
