// The C API of libslidesparse_cutlass.so, loaded with ctypes by slidesparse/native/cutlass.py.
// A plain C ABI keeps the library independent of torch's C++ ABI: one build serves every torch
// of the same CUDA major version, and a build made on a machine without a GPU runs on one.
#include <cuda_runtime.h>

#include <mutex>

#include "scaled_gemm.cuh"

namespace ss_cutlass {

// The families this arch's library holds: the build defines SS_INT8=0 where CUTLASS's builders
// take no INT8 (sm120a / sm121a), and those families then list no configuration.
#ifndef SS_INT8
#define SS_INT8 1
#endif

Family dense_fp8();
Family sparse_fp8();
#if SS_INT8
Family dense_int8();
Family sparse_int8();
#endif

int sm_count() {
  // One query per device: cudaDeviceGetAttribute is cheap but runs on every eager call.
  static int counts[64] = {0};
  int dev = 0;
  cudaGetDevice(&dev);
  if (dev < 0 || dev >= 64) return cutlass::KernelHardwareInfo::query_device_multiprocessor_count(dev);
  if (counts[dev] == 0) counts[dev] = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(dev);
  return counts[dev];
}

Family family(int id) {
  switch (id) {
    case kDenseFp8: return dense_fp8();
    case kSparseFp8: return sparse_fp8();
#if SS_INT8
    case kDenseInt8: return dense_int8();
    case kSparseInt8: return sparse_int8();
#endif
    default: return {nullptr, 0, nullptr, nullptr, nullptr};
  }
}

static const Entry* find(int fam, int cfg) {
  Family f = family(fam);
  if (cfg < 0 || cfg >= f.count) return nullptr;
  return &f.entries[cfg];
}

}  // namespace ss_cutlass

using namespace ss_cutlass;

// The build hides every other symbol (-fvisibility=hidden): only this API is exported.
#define SS_EXPORT __attribute__((visibility("default")))

extern "C" {

// Version of this API; bumped when a signature changes.
SS_EXPORT int ss_cutlass_api_version() { return 2; }

SS_EXPORT int ss_cutlass_num_configs(int fam) { return family(fam).count; }

SS_EXPORT const char* ss_cutlass_config_name(int fam, int cfg) {
  const Entry* e = find(fam, cfg);
  return e ? e->name : nullptr;
}

// Bytes of workspace configuration `cfg` needs for Y[M, N] over K (the slid K when sparse).
SS_EXPORT long long ss_cutlass_workspace(int fam, int cfg, int M, int N, int K) {
  const Entry* e = find(fam, cfg);
  if (!e) return -1;
  Problem p{};
  p.M = M;
  p.N = N;
  p.K = K;
  p.swizzle = 1;
  return static_cast<long long>(e->workspace(p));
}

// Y = bf16(x·Wᵀ · scale_x · scale_w + bias) with configuration `cfg`, the tile scheduler's
// `swizzle` and `raster` order (see Problem).
SS_EXPORT int ss_cutlass_gemm(int fam, int cfg, const void* x, const void* w, const void* meta, void* y,
                    const float* scale_x, const float* scale_w, const void* bias, int M, int N,
                    int K, int swizzle, int raster, void* workspace, size_t workspace_bytes,
                    cudaStream_t stream) {
  const Entry* e = find(fam, cfg);
  if (!e) return kBadConfig;
  Problem p{x, w, meta, y, scale_x, scale_w, bias, M, N, K, swizzle, raster, workspace,
            workspace_bytes, stream};
  return e->run(p);
}

// Sizes of the compressed weight [N, K] and its metadata; non-zero for a dense family.
SS_EXPORT int ss_cutlass_compressed_sizes(int fam, int N, int K, size_t* a_bytes, size_t* e_bytes,
                                size_t* workspace_bytes) {
  Family f = family(fam);
  if (!f.sizes) return kBadConfig;
  f.sizes(N, K, a_bytes, e_bytes);
  *workspace_bytes = f.compress_workspace(N, K);
  return kOk;
}

SS_EXPORT int ss_cutlass_compress(int fam, const void* w, void* a_out, void* e_out, int N, int K,
                        void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  Family f = family(fam);
  if (!f.compress) return kBadConfig;
  return f.compress(w, a_out, e_out, N, K, workspace, workspace_bytes, stream);
}

}  // extern "C"
