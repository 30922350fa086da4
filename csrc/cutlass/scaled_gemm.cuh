// W8A8 GEMMs on CUTLASS 3.x/4.x with the scales fused into the epilogue.
//
//   Y[M, N] (bf16) = (X[M, K] · W[N, K]ᵀ) * scale_x[M] (per token) * scale_w[N] (per channel)
//                    + bias[N] (bf16, optional)
//
// One epilogue serves dense and 2:4 sparse, FP8 and INT8, so the engine's linears need no
// separate dequant pass. CUTLASS's sparse operand is A, so a sparse GEMM always runs swapped:
// the weight is A (GEMM-M = N), the activation is B (GEMM-N = M), and D is written
// column-major, which is Y row-major. Dense configurations may run either way round: the
// swapped form puts the token count on the narrow tile side, where small M wastes less.
//
// One GEMM template serves every target; an arch policy (Sm90, Sm100, Sm120 below) supplies
// what differs: the builders' arch tag, the kernel and epilogue schedules, the per-CTA tile
// the epilogue's broadcast nodes see, and the sparse A alignment. Every target reuses CUTLASS's
// Sm90 epilogue visitor nodes (the Sm100 / Sm120 fusion callbacks alias them).
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
  kNoArch = 5,           // the library was built without this GPU's device code
};

// Kernel schedules. Sm90 / Sm120: Pingpong (two consumer warpgroups alternating tiles) or
// Cooperative (both on one tile). Sm100: the tcgen05 MMA on one SM or on a pair (2-SM).
enum class Sched { Pingpong, Cooperative, OneSm, TwoSm };

template <class E>
using AccOf = std::conditional_t<std::is_same_v<E, int8_t>, int32_t, float>;

// Hopper: warpgroup MMA. FP8 accumulates in fp32 with CUTLASS's fast-accumulation schedules
// (no periodic promotion, as vLLM's W8A8 path), INT8 in int32.
struct Sm90 {
  using Tag = cutlass::arch::Sm90;
  template <class E, bool Sparse, Sched S, int TM>
  struct Policy {
    static_assert(S == Sched::Pingpong || S == Sched::Cooperative, "sm90: pingpong or cooperative");
    static constexpr bool kFp8 = !std::is_same_v<E, int8_t>;
    static constexpr bool kPP = S == Sched::Pingpong;
    using Kernel = std::conditional_t<
        kFp8,
        std::conditional_t<kPP, cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8FastAccum,
                           cutlass::gemm::KernelTmaWarpSpecializedCooperativeFP8FastAccum>,
        std::conditional_t<kPP, cutlass::gemm::KernelTmaWarpSpecializedPingpong,
                           cutlass::gemm::KernelTmaWarpSpecializedCooperative>>;
    using Epi = std::conditional_t<kPP, cutlass::epilogue::TmaWarpSpecialized,
                                   cutlass::epilogue::TmaWarpSpecializedCooperative>;
    using EpiTile = cutlass::epilogue::collective::EpilogueTileAuto;
    static constexpr int kCtaM = TM;
    static constexpr int kAlignAFactor = 1;
  };
};

// Blackwell datacenter (B200 / GB200): tcgen05 MMA from tensor memory, 1-SM or 2-SM (the
// tile's M spans the CTA pair, so the epilogue's nodes see TM / 2). FP8 accumulates in fp32
// in TMEM (no fast-accumulation variant). The sparse builders count A's alignment in
// logical elements: a K-major sparse A needs twice the dense alignment.
struct Sm100 {
  using Tag = cutlass::arch::Sm100;
  template <class E, bool Sparse, Sched S, int TM>
  struct Policy {
    static_assert(S == Sched::OneSm || S == Sched::TwoSm, "sm100: 1-SM or 2-SM");
    static constexpr bool k2 = S == Sched::TwoSm;
    using Kernel = std::conditional_t<
        Sparse,
        std::conditional_t<k2, cutlass::gemm::KernelSparseTmaWarpSpecialized2SmSm100,
                           cutlass::gemm::KernelSparseTmaWarpSpecialized1SmSm100>,
        std::conditional_t<k2, cutlass::gemm::KernelTmaWarpSpecialized2SmSm100,
                           cutlass::gemm::KernelTmaWarpSpecialized1SmSm100>>;
    using Epi = std::conditional_t<k2, cutlass::epilogue::TmaWarpSpecialized2Sm,
                                   cutlass::epilogue::TmaWarpSpecialized1Sm>;
    using EpiTile = cutlass::epilogue::collective::EpilogueTileAuto;
    static constexpr int kCtaM = k2 ? TM / 2 : TM;
    static constexpr int kAlignAFactor = Sparse ? 2 : 1;
  };
};

// Blackwell GeForce / workstation (RTX 50, RTX PRO 6000; GB10 as sm121a): CUTLASS 4.2's Sm120
// builders take F8F6F4 operands only (no INT8), clusters of 1x1x1, and a cooperative-only
// sparse mainloop. Its sparse epilogue builder reads the fusion's SFVecSize when the tile is
// Auto, which a custom EVT lacks: the tile Auto would pick (64 x 32 for a 16-bit D) is given.
struct Sm120 {
  using Tag = cutlass::arch::Sm120;
  template <class E, bool Sparse, Sched S, int TM>
  struct Policy {
    static_assert(!std::is_same_v<E, int8_t>, "sm120: the builders take FP8 (F8F6F4) only");
    static_assert(S == Sched::Pingpong || S == Sched::Cooperative, "sm120: pingpong or cooperative");
    static_assert(!Sparse || S == Sched::Cooperative, "sm120: the sparse mainloop is cooperative");
    static constexpr bool kPP = S == Sched::Pingpong;
    using Kernel = std::conditional_t<
        Sparse, cutlass::gemm::KernelScheduleSparseF8f6f4Sm120,
        std::conditional_t<kPP, cutlass::gemm::KernelTmaWarpSpecializedPingpong,
                           cutlass::gemm::KernelTmaWarpSpecializedCooperative>>;
    using Epi = std::conditional_t<
        Sparse, cutlass::epilogue::SparseTmaWarpSpecializedCooperativeSm120,
        std::conditional_t<kPP, cutlass::epilogue::TmaWarpSpecialized,
                           cutlass::epilogue::TmaWarpSpecializedCooperative>>;
    using EpiTile = std::conditional_t<Sparse, Shape<_64, _32>,
                                       cutlass::epilogue::collective::EpilogueTileAuto>;
    static constexpr int kCtaM = TM;
    static constexpr int kAlignAFactor = Sparse ? 2 : 1;
  };
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

// Tile TM x TN x TK is the MMA tile (on a 2-SM schedule TM spans the CTA pair), cluster
// CM x CN, schedule S of the arch policy.
template <class Arch, class E, bool Sparse, bool Swap, int TM, int TN, int TK, int CM, int CN,
          Sched S>
struct ScaledGemm {
  static_assert(!Sparse || Swap, "the sparse operand is the weight: sparse GEMMs run swapped");
  using ArchTag = typename Arch::Tag;
  using P = typename Arch::template Policy<E, Sparse, S, TM>;
  using Tile = Shape<Int<TM>, Int<TN>, Int<TK>>;
  using CtaTile = Shape<Int<P::kCtaM>, Int<TN>, Int<TK>>;
  using Cluster = Shape<Int<CM>, Int<CN>, _1>;
  using Acc = AccOf<E>;
  using Out = cutlass::bfloat16_t;
  using OpClass = std::conditional_t<Sparse, cutlass::arch::OpClassSparseTensorOp,
                                     cutlass::arch::OpClassTensorOp>;
  // D is Y either way: row-major [M, N], or column-major [N, M] when swapped.
  using LayoutD = std::conditional_t<Swap, cutlass::layout::ColumnMajor, cutlass::layout::RowMajor>;
  static constexpr int kAlignD = 128 / cutlass::sizeof_bits<Out>::value;
  static constexpr int kAlignAB = 128 / cutlass::sizeof_bits<E>::value;

  // A vector along GEMM-M is a column broadcast, one along GEMM-N a row broadcast; both are
  // sized by the tile one CTA writes.
  template <class T>
  using AlongM = cutlass::epilogue::fusion::Sm90ColBroadcast<0, CtaTile, T, float, Stride<_1, _0, _0>>;
  template <class T>
  using AlongN = cutlass::epilogue::fusion::Sm90RowBroadcast<0, CtaTile, T, float, Stride<_0, _1, _0>>;
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
      ArchTag, OpClass, Tile, Cluster, typename P::EpiTile, Acc, float, void, LayoutD, kAlignD,
      Out, LayoutD, kAlignD, typename P::Epi, Fusion>::CollectiveOp;

  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      ArchTag, OpClass, E, cutlass::layout::RowMajor, kAlignAB * P::kAlignAFactor, E,
      cutlass::layout::ColumnMajor, kAlignAB, Acc, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<
          static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      typename P::Kernel>::CollectiveOp;

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
      // By member, not by position: the Sm1xx sparse mainloops' arguments have more fields.
      using Config = typename Mainloop::SparseConfig;
      using EE = typename Mainloop::ElementE;
      typename Mainloop::Arguments m{};
      m.ptr_A = static_cast<const EA*>(a);
      m.layout_a = Config::fill_layoutA(problem);
      m.ptr_B = static_cast<const EB*>(b);
      m.dB = stride_b;
      m.ptr_E = static_cast<const EE*>(meta);
      m.layout_e = Config::fill_layoutE(problem);
      return m;
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
// compressed A and metadata E. Its layout depends on the arch (Sm90's metadata atoms differ
// from Sm1xx's) and, on sm90, the tile's K (min(TK, 128)), which every sparse configuration
// of a family shares (checked in the configuration files).
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
      Shape4, EA, cutlass::layout::RowMajor, Config, typename G::ArchTag>;
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
