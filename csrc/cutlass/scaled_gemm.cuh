// W8A8 GEMMs on CUTLASS 3.x (sm90a) with the scales fused into the epilogue.
//
//   Y[M, N] (bf16) = (X[M, K] · W[N, K]ᵀ) * scale_x[M] (per token) * scale_w[N] (per channel)
//                    + bias[N] (bf16, optional)
//
// One epilogue serves dense and 2:4 sparse, FP8 and INT8, so the engine's linears need no
// separate dequant pass. CUTLASS's sparse operand is A, so a sparse GEMM always runs swapped:
// the weight is A (GEMM-M = N), the activation is B (GEMM-N = M), and D is written
// column-major, which is Y row-major. Dense configurations may run either way round: the
// swapped form puts the token count on the narrow tile side, where small M wastes less.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_compute_tma_warpspecialized.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_load_tma_warpspecialized.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/transform/device/transform_universal_adapter.hpp"
#include "cutlass/transform/kernel/sparse_gemm_compressor.hpp"
#include "cutlass/util/packed_stride.hpp"

namespace ss_cutlass {

using namespace cute;

// Status codes the C API returns (mirrored in slidesparse/native/cutlass.py).
enum Code : int {
  kOk = 0,
  kNotImplemented = 1,   // can_implement refused the problem (alignment, shape)
  kWorkspace = 2,        // the caller's workspace is smaller than the kernel needs
  kLaunch = 3,           // initialize / run failed
  kBadConfig = 4,        // no such family or configuration
  kNoArch = 5,           // the library was built without sm90a device code
};

enum class Sched { Pingpong, Cooperative };

// Operand traits: FP8 accumulates in fp32 with CUTLASS's fast-accumulation schedules (no
// periodic promotion, as vLLM's W8A8 path), INT8 in int32.
template <class E>
struct Operand;

template <>
struct Operand<cutlass::float_e4m3_t> {
  using Acc = float;
  template <Sched S>
  using Kernel = std::conditional_t<S == Sched::Pingpong,
                                    cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8FastAccum,
                                    cutlass::gemm::KernelTmaWarpSpecializedCooperativeFP8FastAccum>;
};

template <>
struct Operand<int8_t> {
  using Acc = int32_t;
  template <Sched S>
  using Kernel = std::conditional_t<S == Sched::Pingpong,
                                    cutlass::gemm::KernelTmaWarpSpecializedPingpong,
                                    cutlass::gemm::KernelTmaWarpSpecializedCooperative>;
};

// Everything one call needs; pointers are device pointers, shapes are Y's (M tokens, N
// channels, K the GEMM's K: the slid K for a sparse weight).
struct Problem {
  const void* x;        // [M, K] row-major
  const void* w;        // dense: [N, K] row-major; sparse: compressed A
  const void* meta;     // sparse: metadata E; dense: unused
  void* y;              // [M, N] row-major bf16
  const float* scale_x; // [M]
  const float* scale_w; // [N]
  const void* bias;     // [N] bf16 or null
  int M, N, K;
  int swizzle;          // tile scheduler: max swizzle size (1, 2, 4, 8)
  int raster;           // 0: CUTLASS's heuristic, 1: along GEMM-M, 2: along GEMM-N
  void* workspace;
  size_t workspace_bytes;
  cudaStream_t stream;
};

int sm_count();

template <class E, bool Sparse, bool Swap, int TM, int TN, int TK, int CM, int CN, Sched S>
struct ScaledGemm {
  static_assert(!Sparse || Swap, "the sparse operand is the weight: sparse GEMMs run swapped");
  using Tile = Shape<Int<TM>, Int<TN>, Int<TK>>;
  using Cluster = Shape<Int<CM>, Int<CN>, _1>;
  using Acc = typename Operand<E>::Acc;
  using Out = cutlass::bfloat16_t;
  using OpClass = std::conditional_t<Sparse, cutlass::arch::OpClassSparseTensorOp,
                                     cutlass::arch::OpClassTensorOp>;
  using EpiSchedule = std::conditional_t<S == Sched::Pingpong,
                                         cutlass::epilogue::TmaWarpSpecialized,
                                         cutlass::epilogue::TmaWarpSpecializedCooperative>;
  // D is Y either way: row-major [M, N], or column-major [N, M] when swapped.
  using LayoutD = std::conditional_t<Swap, cutlass::layout::ColumnMajor, cutlass::layout::RowMajor>;
  static constexpr int kAlignD = 128 / cutlass::sizeof_bits<Out>::value;
  static constexpr int kAlignAB = 128 / cutlass::sizeof_bits<E>::value;

  // A vector along GEMM-M is a column broadcast, one along GEMM-N a row broadcast.
  template <class T>
  using AlongM = cutlass::epilogue::fusion::Sm90ColBroadcast<0, Tile, T, float, Stride<_1, _0, _0>>;
  template <class T>
  using AlongN = cutlass::epilogue::fusion::Sm90RowBroadcast<0, Tile, T, float, Stride<_0, _1, _0>>;
  using TokenScale = std::conditional_t<Swap, AlongN<float>, AlongM<float>>;
  using ChannelScale = std::conditional_t<Swap, AlongM<float>, AlongN<float>>;
  using Bias = std::conditional_t<Swap, AlongM<Out>, AlongN<Out>>;

  using Round = std::integral_constant<cutlass::FloatRoundStyle, cutlass::FloatRoundStyle::round_to_nearest>;
  template <template <class> class Fn, class T>
  using Compute = cutlass::epilogue::fusion::Sm90Compute<Fn, T, float, Round::value>;
  using AccTimesChannel = cutlass::epilogue::fusion::Sm90EVT<
      Compute<cutlass::multiplies, float>, ChannelScale, cutlass::epilogue::fusion::Sm90AccFetch>;
  using Scaled = cutlass::epilogue::fusion::Sm90EVT<Compute<cutlass::multiplies, float>,
                                                    TokenScale, AccTimesChannel>;
  using Fusion = cutlass::epilogue::fusion::Sm90EVT<Compute<cutlass::plus, Out>, Scaled, Bias>;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, OpClass, Tile, Cluster, cutlass::epilogue::collective::EpilogueTileAuto,
      Acc, float, void, LayoutD, kAlignD, Out, LayoutD, kAlignD, EpiSchedule, Fusion>::CollectiveOp;

  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, OpClass, E, cutlass::layout::RowMajor, kAlignAB, E,
      cutlass::layout::ColumnMajor, kAlignAB, Acc, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<
          static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      typename Operand<E>::template Kernel<S>>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(Problem const& p) {
    // GEMM-M x GEMM-N: tokens x channels, or channels x tokens when swapped.
    const int gm = Swap ? p.N : p.M;
    const int gn = Swap ? p.M : p.N;
    auto problem = make_tuple(gm, gn, p.K, 1);
    const void* a = Swap ? p.w : p.x;
    const void* b = Swap ? p.x : p.w;
    auto stride_b = cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, make_shape(gn, p.K, 1));
    auto stride_d = cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, make_shape(gm, gn, 1));
    typename Mainloop::Arguments mainloop = make_mainloop(problem, a, b, p.meta, stride_b);
    const float* along_m = Swap ? p.scale_w : p.scale_x;
    const float* along_n = Swap ? p.scale_x : p.scale_w;
    typename Fusion::Arguments fusion{
        // Sm90EVT arguments: the children's, in order, then the node's own.
        {{Swap ? along_n : along_m, 0.f, {}},                       // token scale
         {{Swap ? along_m : along_n, 0.f, {}}, {}, {}},             // acc * channel scale
         {}},
        {static_cast<const Out*>(p.bias), Out(0.f), {}},            // bias: null reads 0
        {}};
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        problem,
        mainloop,
        {fusion, nullptr, stride_d, static_cast<Out*>(p.y), stride_d},
    };
    args.hw_info.sm_count = sm_count();
    // The order tiles are visited in decides L2 reuse of A and B panels on large problems; no
    // single choice wins every shape, so both are searched at run time.
    using Raster = typename Kernel::TileScheduler::RasterOrderOptions;
    args.scheduler.max_swizzle_size = p.swizzle > 0 ? p.swizzle : 1;
    args.scheduler.raster_order =
        p.raster == 1 ? Raster::AlongM : (p.raster == 2 ? Raster::AlongN : Raster::Heuristic);
    return args;
  }

  template <class Problem4, class StrideB>
  static typename Mainloop::Arguments make_mainloop(Problem4 problem, const void* a, const void* b,
                                                    const void* meta, StrideB stride_b) {
    using EA = typename Gemm::ElementA;
    using EB = typename Gemm::ElementB;
    if constexpr (Sparse) {
      using Config = typename Mainloop::SparseConfig;
      using EE = typename Mainloop::ElementE;
      return {static_cast<const EA*>(a), Config::fill_layoutA(problem), static_cast<const EB*>(b),
              stride_b, static_cast<const EE*>(meta), Config::fill_layoutE(problem)};
    } else {
      auto stride_a = cutlass::make_cute_packed_stride(
          typename Kernel::StrideA{}, make_shape(get<0>(problem), get<2>(problem), 1));
      return {static_cast<const EA*>(a), stride_a, static_cast<const EB*>(b), stride_b};
    }
  }

  static size_t workspace(Problem const& p) { return Gemm::get_workspace_size(arguments(p)); }

  static int run(Problem const& p) {
    auto args = arguments(p);
    Gemm gemm;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) return kNotImplemented;
    if (Gemm::get_workspace_size(args) > p.workspace_bytes) return kWorkspace;
    if (gemm.initialize(args, p.workspace, p.stream) != cutlass::Status::kSuccess) return kLaunch;
    if (gemm.run(p.stream) != cutlass::Status::kSuccess) return kLaunch;
    return cudaPeekAtLastError() == cudaSuccess ? kOk : kLaunch;
  }
};

// One compiled configuration, as the C API lists it.
struct Entry {
  const char* name;
  int (*run)(Problem const&);
  size_t (*workspace)(Problem const&);
};

template <class G>
constexpr Entry entry(const char* name) {
  return {name, &G::run, &G::workspace};
}

// The 2:4 compressor for one operand type: the weight [N, K] row-major into CUTLASS's
// compressed A and metadata E. Its layout depends only on the element types and the tile's K
// (min(TK, 128)), which every sparse configuration of a family shares (checked below).
template <class G>
struct Compressor {
  using Mainloop = typename G::Mainloop;
  using Config = typename Mainloop::SparseConfig;
  using EA = typename G::Gemm::ElementA;
  using Shape4 = Shape<int, int, int, int>;
  using StrideA = cutlass::gemm::TagToStrideA_t<cutlass::layout::RowMajor>;
  using Utility = cutlass::transform::kernel::StructuredSparseCompressorUtility<
      Shape4, EA, cutlass::layout::RowMajor, Config>;
  using Kernel = cutlass::transform::kernel::StructuredSparseCompressor<
      Shape4, EA, cutlass::layout::RowMajor, Config, cutlass::arch::Sm90>;
  using Op = cutlass::transform::device::TransformUniversalAdapter<Kernel>;

  static Utility utility(int N, int K) {
    Shape4 problem = make_tuple(N, 1, K, 1);
    return Utility(problem, cutlass::make_cute_packed_stride(StrideA{}, make_shape(N, K, 1)));
  }

  // Bytes of the compressed weight and of its metadata.
  static void sizes(int N, int K, size_t* a_bytes, size_t* e_bytes) {
    auto u = utility(N, K);
    *a_bytes = u.get_compressed_tensor_A_bytes();
    *e_bytes = u.get_tensor_E_bytes();
  }

  static int run(const void* w, void* a_out, void* e_out, int N, int K, void* workspace,
                 size_t workspace_bytes, cudaStream_t stream) {
    Shape4 problem = make_tuple(N, 1, K, 1);
    typename Op::Arguments args{
        problem,
        {static_cast<const EA*>(w), cutlass::make_cute_packed_stride(StrideA{}, make_shape(N, K, 1)),
         static_cast<EA*>(a_out), static_cast<typename Mainloop::ElementE*>(e_out)},
        {}};
    args.hw_info.sm_count = sm_count();
    Op op;
    if (op.can_implement(args) != cutlass::Status::kSuccess) return kNotImplemented;
    if (Op::get_workspace_size(args) > workspace_bytes) return kWorkspace;
    if (op.initialize(args, workspace, stream) != cutlass::Status::kSuccess) return kLaunch;
    if (op.run(stream) != cutlass::Status::kSuccess) return kLaunch;
    return cudaPeekAtLastError() == cudaSuccess ? kOk : kLaunch;
  }

  static size_t workspace(int N, int K) {
    Shape4 problem = make_tuple(N, 1, K, 1);
    typename Op::Arguments args{problem, {nullptr, {}, nullptr, nullptr}, {}};
    return Op::get_workspace_size(args);
  }
};

// A family: every configuration compiled for one (operand, dense|sparse).
struct Family {
  const Entry* entries;
  int count;
  void (*sizes)(int N, int K, size_t* a_bytes, size_t* e_bytes);  // sparse only
  int (*compress)(const void*, void*, void*, int, int, void*, size_t, cudaStream_t);
  size_t (*compress_workspace)(int N, int K);
};

// Family ids (mirrored in slidesparse/native/cutlass.py).
enum FamilyId : int { kDenseFp8 = 0, kDenseInt8 = 1, kSparseFp8 = 2, kSparseInt8 = 3, kFamilies = 4 };

Family family(int id);

}  // namespace ss_cutlass
