// CUTLASS 2.x grouped GEMMs (sm80 kernels; they run on sm_90 too) behind grouped_gemm.h. Included by one TU per
// element type. Scheduling is GroupScheduleMode::kDeviceOnly: the problem sizes are read on the device by the
// persistent thread blocks, so no host ever sees them (no synchronisation, capturable in a CUDA graph).
#pragma once
#include <array>
#include <mutex>
#include <stdexcept>

#include "common/cuda_utils.cuh"

#include "cutlass/cutlass.h"
#include "cutlass/device_kernel.h"
#include "cutlass/epilogue/thread/linear_combination.h"
#include "cutlass/epilogue/thread/linear_combination_relu.h"
#include "cutlass/gemm/device/default_gemm_configuration.h"
#include "cutlass/gemm/gemm.h"
#include "cutlass/gemm/kernel/default_gemm_grouped.h"
#include "cutlass/gemm/kernel/gemm_grouped.h"
#include "grouped_adapter/grouped_gemm.h"

namespace mome::grouped_adapter_detail {

static_assert(sizeof(cutlass::gemm::GemmCoord) == sizeof(ProblemSize) && alignof(cutlass::gemm::GemmCoord) == 4,
              "ProblemSize must mirror cutlass::gemm::GemmCoord");

using cutlass::gemm::GemmShape;
using RowMajor = cutlass::layout::RowMajor;
using ColMajor = cutlass::layout::ColumnMajor;

// One grouped-GEMM kernel: A (LayoutA) × B (LayoutB) -> C/D row-major, float32 accumulation.
template <typename Element, typename ElementOut, typename LayoutA, typename LayoutB, typename OpClass, int Align,
          typename Epilogue, typename Tile, typename Warp, typename Instruction, int Stages>
using GroupedKernel = typename cutlass::gemm::kernel::DefaultGemmGrouped<
    Element, LayoutA, cutlass::ComplexTransform::kNone, Align, Element, LayoutB, cutlass::ComplexTransform::kNone,
    Align, ElementOut, RowMajor, float, OpClass, cutlass::arch::Sm80, Tile, Warp, Instruction, Epilogue,
    // grouped kernels ignore the swizzle; the argument is required
    cutlass::gemm::threadblock::GemmBatchedIdentityThreadblockSwizzle, Stages,
    cutlass::gemm::kernel::GroupScheduleMode::kDeviceOnly>::GemmKernel;

// float16 / bfloat16: tensor cores (mma.sync 16×8×16), 128-bit accesses (8 elements), float32 accumulation.
// Tiles follow the problem shapes at D = 4096, R = 64: the narrow side (R or Rp = R + 8) fits one tile column,
// the long side (rows or D) is split so that T = 8192 gives ≥ 128 tiles for 108–132 SMs.
template <typename T>
struct TensorOpKernels {
  static constexpr int kAlign = 8;
  using Op = cutlass::arch::OpClassTensorOp;
  using Mma = GemmShape<16, 8, 16>;
  template <typename Out>
  using Linear = cutlass::epilogue::thread::LinearCombination<Out, 128 / cutlass::sizeof_bits<Out>::value, float, float>;
  using Relu = cutlass::epilogue::thread::LinearCombinationRelu<T, 8, float, float>;

  using Down = GroupedKernel<T, T, RowMajor, RowMajor, Op, kAlign, Relu, GemmShape<64, 64, 64>, GemmShape<32, 32, 64>,
                             Mma, 4>;
  using Up = GroupedKernel<T, T, RowMajor, RowMajor, Op, kAlign, Linear<T>, GemmShape<128, 128, 32>,
                           GemmShape<64, 64, 32>, Mma, 3>;
  using DhAug = GroupedKernel<T, float, RowMajor, ColMajor, Op, kAlign, Linear<float>, GemmShape<64, 128, 64>,
                              GemmShape<32, 64, 64>, Mma, 3>;
  using WeightGrad = GroupedKernel<T, T, ColMajor, RowMajor, Op, kAlign, Linear<T>, GemmShape<128, 64, 32>,
                                   GemmShape<64, 32, 32>, Mma, 4>;
  using Dx = GroupedKernel<T, T, RowMajor, ColMajor, Op, kAlign, Linear<T>, GemmShape<128, 128, 32>,
                           GemmShape<64, 64, 32>, Mma, 3>;
};

// float32: SIMT FFMA, exact fp32 (no TF32 rounding of the operands), scalar accesses, so any D and R work.
struct SimtKernels {
  using T = float;
  static constexpr int kAlign = 1;
  using Op = cutlass::arch::OpClassSimt;
  using Mma = GemmShape<1, 1, 1>;
  using Linear = cutlass::epilogue::thread::LinearCombination<float, 1, float, float>;
  using Relu = cutlass::epilogue::thread::LinearCombinationRelu<float, 1, float, float>;

  using Down = GroupedKernel<T, T, RowMajor, RowMajor, Op, kAlign, Relu, GemmShape<64, 64, 8>, GemmShape<32, 32, 8>,
                             Mma, 3>;
  using Up = GroupedKernel<T, T, RowMajor, RowMajor, Op, kAlign, Linear, GemmShape<128, 128, 8>, GemmShape<32, 64, 8>,
                           Mma, 3>;
  using DhAug = GroupedKernel<T, T, RowMajor, ColMajor, Op, kAlign, Linear, GemmShape<64, 64, 8>,
                              GemmShape<32, 32, 8>, Mma, 3>;
  using WeightGrad = GroupedKernel<T, T, ColMajor, RowMajor, Op, kAlign, Linear, GemmShape<128, 64, 8>,
                                   GemmShape<32, 64, 8>, Mma, 3>;
  using Dx = GroupedKernel<T, T, RowMajor, ColMajor, Op, kAlign, Linear, GemmShape<128, 128, 8>,
                           GemmShape<32, 64, 8>, Mma, 3>;
};

// Persistent grid size: as many blocks as fit on the device at once (occupancy × SMs), computed once per device.
// The >48 KB shared-memory opt-in is set at the same time; neither call is a stream operation.
template <typename Kernel>
int persistent_blocks() {
  static std::mutex mutex;
  static std::array<int, 64> blocks{};
  int device = 0;
  MOME_CUDA_CHECK(cudaGetDevice(&device));
  if (device >= int(blocks.size()))
    throw std::runtime_error(::mome::str("grouped_adapter: device index ", device, " out of range"));
  std::lock_guard<std::mutex> lock(mutex);
  if (blocks[device] == 0) {
    const int smem = int(sizeof(typename Kernel::SharedStorage));
    if (smem >= (48 << 10))
      MOME_CUDA_CHECK(
          cudaFuncSetAttribute(cutlass::Kernel<Kernel>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    int per_sm = 0, sms = 0;
    MOME_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, cutlass::Kernel<Kernel>, Kernel::kThreadCount, smem));
    MOME_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    if (per_sm <= 0)
      throw std::runtime_error(::mome::str("grouped_adapter: a CUTLASS grouped GEMM does not fit on this device (",
                                           smem, " bytes of shared memory)"));
    blocks[device] = per_sm * sms;
  }
  return blocks[device];
}

template <typename Kernel>
void launch(const GroupedGemmArgs& a, int count, float beta, cudaStream_t stream) {
  if (count == 0) return;
  using ElementA = typename Kernel::ElementA;
  using ElementB = typename Kernel::ElementB;
  using ElementC = typename Kernel::ElementC;
  using OutputOp = typename Kernel::EpilogueOutputOp;
  const int blocks = persistent_blocks<Kernel>();
  typename Kernel::Arguments args(reinterpret_cast<cutlass::gemm::GemmCoord*>(a.sizes), count, blocks,
                                  typename OutputOp::Params(1.0f, beta), reinterpret_cast<ElementA**>(a.a),
                                  reinterpret_cast<ElementB**>(a.b), reinterpret_cast<ElementC**>(a.c),
                                  reinterpret_cast<ElementC**>(a.d), a.lda, a.ldb, a.ldc, a.ldd);
  // kDeviceOnly needs no workspace and no tile count: the visitor derives tiles from the device-side sizes.
  typename Kernel::Params params(args, nullptr, 0);
  const int smem = int(sizeof(typename Kernel::SharedStorage));
  cutlass::Kernel<Kernel><<<blocks, Kernel::kThreadCount, smem, stream>>>(params);
  MOME_KERNEL_LAUNCH_CHECK();
}

template <typename Kernels>
void run_grouped_gemm(Gemm gemm, const GroupedGemmArgs& args, int count, float beta, cudaStream_t stream) {
  switch (gemm) {
    case Gemm::kDown: return launch<typename Kernels::Down>(args, count, beta, stream);
    case Gemm::kUp: return launch<typename Kernels::Up>(args, count, beta, stream);
    case Gemm::kDhAug: return launch<typename Kernels::DhAug>(args, count, beta, stream);
    case Gemm::kWeightGrad: return launch<typename Kernels::WeightGrad>(args, count, beta, stream);
    case Gemm::kDx: return launch<typename Kernels::Dx>(args, count, beta, stream);
  }
}

}  // namespace mome::grouped_adapter_detail
