// CUDA kernel of mome::grouped_adapter and mome::grouped_adapter_sorted (see grouped_adapter.h for the math, the
// CPU kernel's header comment for the backward formulas).
//
// Everything stays on the device: the grouping (a stable counting sort by expert), the per-expert offsets, and the
// arguments of the CUTLASS grouped GEMMs (problem sizes, pointers, leading dimensions) are produced by the small
// kernels below and read by the GEMMs' device-side scheduler (GroupScheduleMode::kDeviceOnly). No call copies a
// value to the host, so a step is capturable in a CUDA graph.
//
// Forward, rows grouped (sorted entry point: x itself; unsorted: xs = x[perm], one gather):
//   1. kDown GEMM          hs = ReLU(xs @ w_down[e] + b_down[e])        bias + ReLU in the epilogue
//   2. augment kernels     A' = [c·hs, c, 0] (T×Rp), B'_e = [w_up[e]; b_up[e]; 0] (K×Rp×D), c = gate·scale[e]
//   3. kUp GEMM            y = A' @ B'_e (+ residual, the epilogue's C)  so bias, scale and gate ride in the GEMM
//   unsorted: y and hidden are scattered back to the original row order (the residual is added there).
// Backward (same grouping):
//   1. augment B'; kDhAug GEMM  G' = dy @ B'_eᵀ (float32): G'[:, :R] = dy @ w_up[e]ᵀ, G'[:, R] = <dy, b_up[e]>
//   2. row kernel          s = <G'[:, :R], h> + G'[:, R]; dz = c·G'[:, :R]·[h > 0]; A' = [c·h, c, 0];
//                          dgate = scale[e]·s
//   3. kWeightGrad GEMM    [dW_up; db_up; 0] = A'ᵀ @ dy  and  dW_down = xsᵀ @ dz   (one launch, 2K problems)
//   4. kDx GEMM            dx = dz @ w_down[e]ᵀ
//   5. segment sums        db_down[e] = Σ dz, dscale[e] = Σ gate·s   (fixed-order block reductions)
// Determinism: the sort is stable, no split-K, no atomics in any reduction: results are bitwise reproducible.
//
// Alignment: the float16/bfloat16 GEMMs use 128-bit accesses, so D and R must be multiples of 8 (checked below with
// a message naming the argument; mome.ops routes other sizes to the reference). Tensors whose data pointer is not
// 16-byte aligned (views with an odd storage offset) are copied first. float32 runs SIMT kernels with scalar accesses.
#ifdef MOME_WITH_CUTLASS
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

#include "common/cuda_utils.cuh"
#include "grouped_adapter/grouped_adapter.h"
#include "grouped_adapter/grouped_gemm.h"

namespace mome {
namespace {

using namespace grouped_adapter_detail;

constexpr int kSortChunk = 256;  // rows per block of the counting sort
constexpr int kRowPad = 8;       // Rp = R + kRowPad: room for the bias column, keeps 16-byte alignment

// ------------------------------------------------------------------------------------------------------------------
// Grouping: a stable counting sort of the rows by expert id. Ids outside [0, K) trip a device-side assertion; if
// assertions are compiled out they land in an extra bucket K that no GEMM reads and whose output rows are NaN.
// ------------------------------------------------------------------------------------------------------------------

// block_counts[e * nb + b] = rows of expert e in chunk b (e ∈ [0, K], K = the invalid bucket).
__global__ void count_experts_kernel(const int64_t* __restrict__ ids, int64_t T, int K, int* __restrict__ block_counts,
                                     int nb) {
  extern __shared__ int counts[];
  for (int e = threadIdx.x; e <= K; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  const int64_t begin = int64_t(blockIdx.x) * kSortChunk, end = min(T, begin + kSortChunk);
  for (int64_t t = begin + threadIdx.x; t < end; t += blockDim.x) {
    const int64_t e = ids[t];
    MOME_KERNEL_ASSERT_MSG(e >= 0 && e < K, "grouped_adapter: expert_ids out of range [0, K)");
    atomicAdd(&counts[(e >= 0 && e < K) ? int(e) : K], 1);  // a count: the order of the adds does not matter
  }
  __syncthreads();
  for (int e = threadIdx.x; e <= K; e += blockDim.x) block_counts[int64_t(e) * nb + blockIdx.x] = counts[e];
}

// Exclusive scan of block_counts (expert-major) in place, by one block of 1024 threads; offsets[e] = first sorted row
// of expert e for e ∈ [0, K] (offsets[K]: the end of the valid rows, T unless some ids were invalid), offsets[K+1] = T.
__global__ void scan_counts_kernel(int* __restrict__ block_counts, int n, int nb, int K, int64_t T,
                                   int64_t* __restrict__ offsets) {
  __shared__ int warp_totals[32];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int per = (n + blockDim.x - 1) / blockDim.x;
  const int lo = min(n, tid * per), hi = min(n, lo + per);
  int local = 0;
  for (int i = lo; i < hi; ++i) local += block_counts[i];
  int incl = local;  // inclusive scan of `local` over the warp
  for (int off = 1; off < 32; off <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, off);
    if (lane >= off) incl += v;
  }
  if (lane == 31) warp_totals[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int w = lane < int(blockDim.x / 32) ? warp_totals[lane] : 0;
    for (int off = 1; off < 32; off <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, w, off);
      if (lane >= off) w += v;
    }
    warp_totals[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  int run = incl - local + (warp > 0 ? warp_totals[warp - 1] : 0);
  for (int i = lo; i < hi; ++i) {
    const int c = block_counts[i];
    block_counts[i] = run;
    if (i % nb == 0) offsets[i / nb] = run;
    run += c;
  }
  if (tid == 0) offsets[K + 1] = T;
}

// perm[sorted row] = original row. One warp per chunk walks its rows in order and ranks equal ids with
// __match_any_sync, so rows of one expert keep their original order (stable, hence deterministic).
__global__ void scatter_rows_kernel(const int64_t* __restrict__ ids, int64_t T, int K,
                                    const int* __restrict__ block_base, int nb, int64_t* __restrict__ perm) {
  extern __shared__ int cursor[];
  const int lane = threadIdx.x;
  for (int e = lane; e <= K; e += 32) cursor[e] = block_base[int64_t(e) * nb + blockIdx.x];
  __syncwarp();
  const int64_t begin = int64_t(blockIdx.x) * kSortChunk, end = min(T, begin + kSortChunk);
  for (int64_t s = begin; s < end; s += 32) {
    const int64_t t = s + lane;
    const bool valid = t < end;
    int e = -1;
    if (valid) {
      const int64_t v = ids[t];
      e = (v >= 0 && v < K) ? int(v) : K;
    }
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    const int base = valid ? cursor[e] : 0;
    __syncwarp();
    if (valid) {
      perm[base + rank] = t;
      if (rank == 0) cursor[e] = base + __popc(peers);
    }
    __syncwarp();
  }
}

struct DeviceGrouping {
  const int64_t* perm;     // (T,), or null for rows already grouped
  const int64_t* offsets;  // on the device; expert e < K owns sorted rows [offsets[e], offsets[e + 1])
  bool from_caller;        // offsets given by the caller (sorted entry point): asserted to partition [0, T)
};

// Scratch from `ws`; launches nothing in planning mode.
DeviceGrouping group_rows_cuda(const int64_t* ids, int64_t T, int64_t K, cuda::Workspace& ws, cudaStream_t stream) {
  const int nb = int(std::max<int64_t>(1, (T + kSortChunk - 1) / kSortChunk));
  int* block_counts = ws.take<int>((K + 1) * nb);
  int64_t* perm = ws.take<int64_t>(T);
  int64_t* offsets = ws.take<int64_t>(K + 2);
  if (ws.planning()) return {perm, offsets, false};
  const size_t smem = sizeof(int) * (K + 1);
  count_experts_kernel<<<nb, 256, smem, stream>>>(ids, T, int(K), block_counts, nb);
  MOME_KERNEL_LAUNCH_CHECK();
  scan_counts_kernel<<<1, 1024, 0, stream>>>(block_counts, int((K + 1) * nb), nb, int(K), T, offsets);
  MOME_KERNEL_LAUNCH_CHECK();
  if (T > 0) {
    scatter_rows_kernel<<<nb, 32, smem, stream>>>(ids, T, int(K), block_counts, nb, perm);
    MOME_KERNEL_LAUNCH_CHECK();
  }
  return {perm, offsets, false};
}

// ------------------------------------------------------------------------------------------------------------------
// Grouped-GEMM arguments, written on the device from the offsets.
// ------------------------------------------------------------------------------------------------------------------

// Operand of problem e at byte address base + offsets[e]·row_bytes + e·expert_bytes, leading dimension ld.
struct Operand {
  const void* base = nullptr;
  int64_t row_bytes = 0;
  int64_t expert_bytes = 0;
  int64_t ld = 0;
};

// One grouped GEMM over the K experts; a dimension < 0 means "the expert's row count".
struct GemmDesc {
  Operand a, b, c, d;
  int m = 0, n = 0, k = 0;
  GroupedGemmArgs out{};
  int first = 0;  // index of expert 0's problem in `out`
};

constexpr int kMaxDescs = 3;
struct FillJob {
  GemmDesc desc[kMaxDescs];
  int count = 0;
};

// Reads the offsets once per (descriptor, expert). For the sorted entry point they come from the caller: they are
// asserted to be a valid partition of [0, T) and clamped into it, so a bad tensor can never address out of bounds.
__global__ void fill_gemm_args_kernel(FillJob job, const int64_t* __restrict__ offsets, int K, int64_t T,
                                      bool from_caller) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= K) return;
  const int64_t o0 = offsets[e], o1 = offsets[e + 1];
  if (from_caller) {
    MOME_KERNEL_ASSERT_MSG(o0 >= 0 && o0 <= o1 && o1 <= T, "grouped_adapter: expert_offsets must be non-decreasing in [0, T]");
    MOME_KERNEL_ASSERT_MSG(e != 0 || o0 == 0, "grouped_adapter: expert_offsets[0] must be 0");
    MOME_KERNEL_ASSERT_MSG(e != K - 1 || o1 == T, "grouped_adapter: expert_offsets[K] must equal x.size(0)");
  }
  const int64_t lo = min(max(o0, int64_t(0)), T);
  const int64_t hi = min(max(o1, lo), T);
  const int rows = int(hi - lo);
  for (int j = 0; j < job.count; ++j) {
    const GemmDesc& g = job.desc[j];
    const int p = g.first + e;
    g.out.sizes[p] = ProblemSize{g.m < 0 ? rows : g.m, g.n < 0 ? rows : g.n, g.k < 0 ? rows : g.k};
    const Operand* ops[4] = {&g.a, &g.b, &g.c, &g.d};
    void** ptrs[4] = {g.out.a, g.out.b, g.out.c, g.out.d};
    int64_t* lds[4] = {g.out.lda, g.out.ldb, g.out.ldc, g.out.ldd};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const char* base = static_cast<const char*>(ops[i]->base);
      ptrs[i][p] = base ? const_cast<char*>(base + lo * ops[i]->row_bytes + e * ops[i]->expert_bytes) : nullptr;
      lds[i][p] = ops[i]->ld;
    }
  }
}

// Device storage for the argument arrays of several grouped GEMMs, carved from the workspace.
class GemmArgsBuffer {
 public:
  GemmArgsBuffer(cuda::Workspace& ws, std::initializer_list<int> counts) {
    for (int c : counts) {
      GroupedGemmArgs a;
      a.sizes = ws.take<ProblemSize>(c);
      a.a = ws.take<void*>(c);
      a.b = ws.take<void*>(c);
      a.c = ws.take<void*>(c);
      a.d = ws.take<void*>(c);
      a.lda = ws.take<int64_t>(c);
      a.ldb = ws.take<int64_t>(c);
      a.ldc = ws.take<int64_t>(c);
      a.ldd = ws.take<int64_t>(c);
      args_.push_back(a);
    }
  }
  const GroupedGemmArgs& operator[](size_t i) const { return args_[i]; }

 private:
  std::vector<GroupedGemmArgs> args_;
};

void fill_gemm_args(const FillJob& job, const DeviceGrouping& g, int64_t K, int64_t T, cudaStream_t stream) {
  const int threads = 128, blocks = int((K + threads - 1) / threads);
  fill_gemm_args_kernel<<<blocks, threads, 0, stream>>>(job, g.offsets, int(K), T, g.from_caller);
  MOME_KERNEL_LAUNCH_CHECK();
}

Operand rows_of(const void* p, int64_t elt, int64_t ld) {  // (T, ld) row-blocked by expert
  return Operand{p, elt * ld, 0, ld};
}
Operand expert_of(const void* p, int64_t elt, int64_t per_expert, int64_t ld) {  // (K, ...) one block per expert
  return Operand{p, 0, elt * per_expert, ld};
}

int64_t element_size(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }

// Calls f(T{}) for the three dtypes of the CUDA kernel (no float64 instantiations of the row kernels).
template <typename F>
void dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat16: return f(__half{});
    case DType::kBFloat16: return f(__nv_bfloat16{});
    case DType::kFloat32: return f(float{});
    default: value_error("grouped_adapter (CUDA): unsupported dtype (float16, bfloat16, float32)");
  }
}

void grouped_gemm(Gemm gemm, DType dtype, const GroupedGemmArgs& args, int count, float beta, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat16: return grouped_gemm_f16(gemm, args, count, beta, stream);
    case DType::kBFloat16: return grouped_gemm_bf16(gemm, args, count, beta, stream);
    case DType::kFloat32: return grouped_gemm_f32(gemm, args, count, beta, stream);
    default: value_error("grouped_adapter (CUDA): unsupported dtype (float16, bfloat16, float32)");
  }
}

// ------------------------------------------------------------------------------------------------------------------
// Small row kernels (memory-bound, float32 arithmetic).
// ------------------------------------------------------------------------------------------------------------------

// The expert of sorted row i: the last e with offsets[e] <= i (binary search, K is small). K for rows past offsets[K]
// (invalid ids). Always in [0, K], so a bad offsets tensor cannot make a read go out of bounds.
__device__ __forceinline__ int expert_of_row(const int64_t* __restrict__ offsets, int K, int64_t i) {
  int lo = 0, hi = K;  // offsets[lo] <= i < offsets[hi] when valid
  if (i >= offsets[K] || i < offsets[0]) return K;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (offsets[mid] <= i) lo = mid; else hi = mid;
  }
  return lo;
}

// dst[i] = src[perm[i]] for rows of row_bytes bytes (V-byte vectors: V divides row_bytes and the alignment).
template <typename V>
__global__ void gather_rows_kernel(const char* __restrict__ src, const int64_t* __restrict__ perm, char* __restrict__ dst,
                                   int64_t rows, int64_t row_vecs) {
  const int64_t n = rows * row_vecs;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / row_vecs, j = idx % row_vecs;
    reinterpret_cast<V*>(dst)[i * row_vecs + j] = reinterpret_cast<const V*>(src)[perm[i] * row_vecs + j];
  }
}

// The row kernels below are grid-stride loops, launched with at most max_blocks() blocks: 65535·8 by default, lowered
// by the environment variable MOME_CUDA_MAX_BLOCKS (read once) so that a test can drive every loop through many
// strides on a small problem (tests/cuda/test_grouped_adapter_cuda.py).
int max_blocks() {
  static const int cap = [] {
    constexpr long kDefault = 65535L * 8;
    const char* env = std::getenv("MOME_CUDA_MAX_BLOCKS");
    const long v = env ? std::strtol(env, nullptr, 10) : 0;
    return int(v > 0 ? std::min(v, kDefault) : kDefault);
  }();
  return cap;
}

int grid_for(int64_t n, int threads = 256) {
  return int(std::min<int64_t>(std::max<int64_t>(1, (n + threads - 1) / threads), max_blocks()));
}

// dst[i] = src[perm[i]], rows of row_bytes bytes.
void gather_rows(const void* src, int64_t rows, int64_t row_bytes, const int64_t* perm, void* dst,
                 cudaStream_t stream) {
  if (rows * row_bytes == 0) return;
  auto go = [&](auto vec) {
    using V = decltype(vec);  // divides the row size and the alignment of both pointers
    const int64_t row_vecs = row_bytes / int64_t(sizeof(V));
    gather_rows_kernel<V><<<grid_for(rows * row_vecs), 256, 0, stream>>>(
        static_cast<const char*>(src), perm, static_cast<char*>(dst), rows, row_vecs);
    MOME_KERNEL_LAUNCH_CHECK();
  };
  // The vector width must divide both addresses as well as the row size, or the loads fault (misaligned address).
  const uintptr_t bits = reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst) |
                         static_cast<uintptr_t>(row_bytes);
  if (bits % 16 == 0) go(uint4{});
  else if (bits % 8 == 0) go(uint2{});
  else if (bits % 4 == 0) go(uint32_t{});
  else if (bits % 2 == 0) go(uint16_t{});
  else go(uint8_t{});
}

// out[perm[i]] = (residual[perm[i]] +) src[i]; rows past offsets[K] (invalid expert ids) become NaN.
template <typename T>
__global__ void scatter_rows_kernel_t(const T* __restrict__ src, const int64_t* __restrict__ perm,
                                      const T* __restrict__ residual, const int64_t* __restrict__ offsets, int K,
                                      T* __restrict__ out, int64_t rows, int64_t width) {
  const int64_t valid_rows = offsets[K];
  const int64_t n = rows * width;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / width, j = idx % width, t = perm[i];
    float v = i < valid_rows ? float(src[idx]) : std::numeric_limits<float>::quiet_NaN();
    if (residual) v += float(residual[t * width + j]);
    out[t * width + j] = T(v);
  }
}

template <typename T>
void scatter_rows(const T* src, int64_t rows, int64_t width, const DeviceGrouping& g, const T* residual, int64_t K,
                  T* out, cudaStream_t stream) {
  if (rows * width == 0) return;
  scatter_rows_kernel_t<T><<<grid_for(rows * width), 256, 0, stream>>>(src, g.perm, residual, g.offsets, int(K), out,
                                                                       rows, width);
  MOME_KERNEL_LAUNCH_CHECK();
}

// B'[e] = [w_up[e]; b_up[e]; 0]  (K, Rp, D)
template <typename T>
__global__ void augment_up_kernel(const T* __restrict__ w_up, const T* __restrict__ b_up, T* __restrict__ out, int K,
                                  int R, int Rp, int64_t D) {
  const int64_t n = int64_t(K) * Rp * D;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = idx % D, row = idx / D;
    const int j = int(row % Rp), e = int(row / Rp);
    out[idx] = j < R ? w_up[(int64_t(e) * R + j) * D + d] : (j == R ? b_up[int64_t(e) * D + d] : T(0));
  }
}

// A'[i] = [c·h[i], c, 0], c = scale[e]·gate[t] (t = perm[i] or i); zero for invalid rows.
template <typename T>
__global__ void augment_hidden_kernel(const T* __restrict__ hs, const int64_t* __restrict__ offsets, int K,
                                      const int64_t* __restrict__ perm, const T* __restrict__ scale,
                                      const T* __restrict__ gate, T* __restrict__ a_aug, int64_t rows, int R, int Rp) {
  const int64_t n = rows * Rp;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / Rp;
    const int j = int(idx % Rp);
    const int e = expert_of_row(offsets, K, i);
    float c = 0.f;
    if (e < K) c = float(scale[e]) * (gate ? float(gate[perm ? perm[i] : i]) : 1.f);
    a_aug[idx] = T(j < R ? c * float(hs[i * R + j]) : (j == R ? c : 0.f));
  }
}

// One warp per sorted row, grid-stride (the grid is capped, T is not): s, dz (low precision for the GEMMs and float32
// for db_down), A', dgate, gate·s.
template <typename T>
__global__ void backward_rows_kernel(const float* __restrict__ g_aug, const T* __restrict__ hs,
                                     const int64_t* __restrict__ offsets, int K, const int64_t* __restrict__ perm,
                                     const T* __restrict__ scale, const T* __restrict__ gate, T* __restrict__ dz,
                                     float* __restrict__ dz32, T* __restrict__ a_aug, T* __restrict__ grad_gate,
                                     float* __restrict__ gs, int64_t rows, int R, int Rp) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  // i is the same for the 32 lanes of a warp (blockDim is a multiple of 32): whole warps leave the loop together.
  for (int64_t i = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; i < rows; i += warps) {
    const int e = expert_of_row(offsets, K, i);
    const int64_t t = perm ? perm[i] : i;
    const bool valid = e < K;
    const float gate_t = gate ? float(gate[t]) : 1.f;
    const float sc = valid ? float(scale[e]) : 0.f;
    const float c = sc * gate_t;
    const float* g = g_aug + i * Rp;
    float s = 0.f;
    for (int r = lane; r < R; r += 32) {
      const float h = float(hs[i * R + r]), gr = g[r];
      s += gr * h;
      const float dzv = (valid && h > 0.f) ? c * gr : 0.f;
      dz[i * R + r] = T(dzv);
      dz32[i * R + r] = dzv;
      a_aug[i * Rp + r] = T(c * h);
    }
    for (int j = R + lane; j < Rp; j += 32) a_aug[i * Rp + j] = T(j == R ? c : 0.f);
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);  // fixed butterfly
    if (lane == 0) {
      s += g[R];
      if (grad_gate) grad_gate[t] = T(valid ? sc * s : std::numeric_limits<float>::quiet_NaN());
      gs[i] = valid ? gate_t * s : 0.f;
    }
  }
}

// out[e, j] = Σ_{i ∈ [offsets[e], offsets[e+1])} in[i·ld + j] for j < width, in a fixed order (deterministic).
// Block (32, 32): threadIdx.x picks the column, threadIdx.y strides the rows; the 32 partial sums are then added
// in order by one thread.
template <typename T>
__global__ void segment_sum_kernel(const float* __restrict__ in, int64_t ld, int width,
                                   const int64_t* __restrict__ offsets, int64_t rows, T* __restrict__ out) {
  __shared__ float partial[32][33];
  const int e = blockIdx.y, j = blockIdx.x * 32 + threadIdx.x;
  const int64_t lo = min(max(offsets[e], int64_t(0)), rows), hi = min(max(offsets[e + 1], lo), rows);
  float acc = 0.f;
  if (j < width)
    for (int64_t i = lo + threadIdx.y; i < hi; i += 32) acc += in[i * ld + j];
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < width) {
    float total = 0.f;
    for (int y = 0; y < 32; ++y) total += partial[y][threadIdx.x];
    out[int64_t(e) * width + j] = T(total);
  }
}

template <typename T>
void segment_sum(const float* in, int64_t rows, int64_t ld, int width, const int64_t* offsets, int64_t K, T* out,
                 cudaStream_t stream) {
  if (width == 0) return;  // R = 0: db_down is empty, and a grid of 0 blocks is an invalid launch
  const dim3 grid((width + 31) / 32, unsigned(K)), block(32, 32);
  segment_sum_kernel<T><<<grid, block, 0, stream>>>(in, ld, width, offsets, rows, out);
  MOME_KERNEL_LAUNCH_CHECK();
}

// ------------------------------------------------------------------------------------------------------------------
// Entry points
// ------------------------------------------------------------------------------------------------------------------

void check_sizes(DType dtype, const AdapterSizes& n) {
  if (dtype != DType::kFloat32) {
    if (n.D % 8) value_error("x.size(1) (the model width D = ", n.D, ") must be a multiple of 8 for the float16/bfloat16 "
                             "CUDA kernel (CUTLASS 128-bit accesses); mome.ops falls back to the reference for such sizes");
    if (n.R % 8) value_error("w_down.size(2) (the rank R = ", n.R, ") must be a multiple of 8 for the float16/bfloat16 "
                             "CUDA kernel (CUTLASS 128-bit accesses); mome.ops falls back to the reference for such sizes");
  }
  if (!(n.T < (int64_t(1) << 31) && n.K < 4096 && n.R + kRowPad < (int64_t(1) << 31) && n.D < (int64_t(1) << 31)))
    value_error("grouped_adapter (CUDA): x has ", n.T, " rows and w_down ", n.K,
                " experts; the kernel supports fewer than 2^31 rows and 4096 experts");
}

// Forward on grouped rows. Every scratch block is taken from `ws` before the first launch; in planning mode nothing
// is launched (the workspace size is then ws.used()). Null `expert_ids`: x, gate and residual are in grouped order.
void forward(DType dtype, const int64_t* expert_ids, const int64_t* expert_offsets, const void* x, const void* w_down,
             const void* b_down, const void* w_up, const void* b_up, const void* scale, const void* gate,
             const void* residual, void* y, void* hidden, cuda::Workspace& ws, const AdapterSizes& n,
             cudaStream_t stream) {
  const int64_t T = n.T, D = n.D, K = n.K, R = n.R, Rp = R + kRowPad, es = element_size(dtype);
  const bool sorted = expert_ids == nullptr;
  const DeviceGrouping g =
      sorted ? DeviceGrouping{nullptr, expert_offsets, true} : group_rows_cuda(expert_ids, T, K, ws, stream);
  void* xs = sorted ? const_cast<void*>(x) : ws.take<char>(T * D * es);
  void* hs = sorted ? hidden : ws.take<char>(T * R * es);
  void* a_aug = ws.take<char>(T * Rp * es);
  void* b_aug = ws.take<char>(K * Rp * D * es);
  void* ys = sorted ? y : ws.take<char>(T * D * es);
  GemmArgsBuffer buf(ws, {int(K), int(K)});
  if (ws.planning()) return;
  if (!sorted) gather_rows(x, T, D * es, g.perm, xs, stream);

  FillJob job;
  job.count = 2;
  GemmDesc& down = job.desc[0];
  down.a = rows_of(xs, es, D);
  down.b = expert_of(w_down, es, D * R, R);
  down.c = expert_of(b_down, es, R, 0);  // ldc = 0: every row of C is the bias row
  down.d = rows_of(hs, es, R);
  down.m = -1, down.n = int(R), down.k = int(D);
  down.out = buf[0];
  GemmDesc& up = job.desc[1];
  up.a = rows_of(a_aug, es, Rp);
  up.b = expert_of(b_aug, es, Rp * D, D);
  if (sorted && residual) up.c = rows_of(residual, es, D);
  up.d = rows_of(ys, es, D);
  up.m = -1, up.n = int(D), up.k = int(Rp);
  up.out = buf[1];
  fill_gemm_args(job, g, K, T, stream);

  grouped_gemm(Gemm::kDown, dtype, buf[0], int(K), 1.0f, stream);
  dispatch_dtype(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    augment_up_kernel<scalar_t><<<grid_for(K * Rp * D), 256, 0, stream>>>(
        static_cast<const scalar_t*>(w_up), static_cast<const scalar_t*>(b_up), static_cast<scalar_t*>(b_aug),
        int(K), int(R), int(Rp), D);
    MOME_KERNEL_LAUNCH_CHECK();
    augment_hidden_kernel<scalar_t><<<grid_for(T * Rp), 256, 0, stream>>>(
        static_cast<const scalar_t*>(hs), g.offsets, int(K), g.perm, static_cast<const scalar_t*>(scale),
        static_cast<const scalar_t*>(gate), static_cast<scalar_t*>(a_aug), T, int(R), int(Rp));
    MOME_KERNEL_LAUNCH_CHECK();
    grouped_gemm(Gemm::kUp, dtype, buf[1], int(K), (sorted && residual) ? 1.0f : 0.0f, stream);
    if (!sorted) {
      scatter_rows<scalar_t>(static_cast<const scalar_t*>(ys), T, D, g, static_cast<const scalar_t*>(residual), K,
                             static_cast<scalar_t*>(y), stream);
      scatter_rows<scalar_t>(static_cast<const scalar_t*>(hs), T, R, g, nullptr, K, static_cast<scalar_t*>(hidden),
                             stream);
    }
  });
}

// Backward on grouped rows (same conventions as forward). grad_gate is null without a gate.
void backward(DType dtype, const int64_t* expert_ids, const int64_t* expert_offsets, const void* grad_output,
              const void* x, const void* hidden, const void* w_down, const void* w_up, const void* b_up,
              const void* scale, const void* gate, void* grad_x, void* grad_wd, void* grad_bd, void* grad_wu,
              void* grad_bu, void* grad_scale, void* grad_gate, cuda::Workspace& ws, const AdapterSizes& n,
              cudaStream_t stream) {
  const int64_t T = n.T, D = n.D, K = n.K, R = n.R, Rp = R + kRowPad, es = element_size(dtype);
  const bool sorted = expert_ids == nullptr;
  const DeviceGrouping g =
      sorted ? DeviceGrouping{nullptr, expert_offsets, true} : group_rows_cuda(expert_ids, T, K, ws, stream);
  void* dys = sorted ? const_cast<void*>(grad_output) : ws.take<char>(T * D * es);
  void* xs = sorted ? const_cast<void*>(x) : ws.take<char>(T * D * es);
  void* hs = sorted ? const_cast<void*>(hidden) : ws.take<char>(T * R * es);
  void* b_aug = ws.take<char>(K * Rp * D * es);
  float* g_aug = ws.take<float>(T * Rp);
  void* a_aug = ws.take<char>(T * Rp * es);
  void* dz = ws.take<char>(T * R * es);
  float* dz32 = ws.take<float>(T * R);
  float* gs = ws.take<float>(T);
  void* dxs = sorted ? grad_x : ws.take<char>(T * D * es);
  void* gwu_aug = ws.take<char>(K * Rp * D * es);  // [dW_up; db_up; 0] per expert
  GemmArgsBuffer buf(ws, {int(K), int(2 * K), int(K)});
  if (ws.planning()) return;
  if (!sorted) {
    gather_rows(grad_output, T, D * es, g.perm, dys, stream);
    gather_rows(x, T, D * es, g.perm, xs, stream);
    gather_rows(hidden, T, R * es, g.perm, hs, stream);
  }

  FillJob job;
  job.count = 3;
  GemmDesc& dh = job.desc[0];  // G' = dy @ B'ᵀ
  dh.a = rows_of(dys, es, D);
  dh.b = expert_of(b_aug, es, Rp * D, D);  // B'_e (Rp×D) row-major read as B'_eᵀ (D×Rp) column-major
  dh.d = rows_of(g_aug, 4, Rp);
  dh.m = -1, dh.n = int(Rp), dh.k = int(D);
  dh.out = buf[0];
  GemmDesc& wu = job.desc[1];  // [dW_up; db_up; 0] = A'ᵀ @ dy
  wu.a = rows_of(a_aug, es, Rp);  // A' (n×Rp) row-major read as A'ᵀ (Rp×n) column-major
  wu.b = rows_of(dys, es, D);
  wu.d = expert_of(gwu_aug, es, Rp * D, D);
  wu.m = int(Rp), wu.n = int(D), wu.k = -1;
  wu.out = buf[1];
  wu.first = 0;
  GemmDesc& dx = job.desc[2];  // dx = dz @ w_downᵀ
  dx.a = rows_of(dz, es, R);
  dx.b = expert_of(w_down, es, D * R, R);  // w_down[e] (D×R) row-major read as its transpose (R×D) column-major
  dx.d = rows_of(dxs, es, D);
  dx.m = -1, dx.n = int(D), dx.k = int(R);
  dx.out = buf[2];
  fill_gemm_args(job, g, K, T, stream);
  FillJob job2;  // dW_down = xsᵀ @ dz: problems K..2K-1 of the weight-gradient launch
  job2.count = 1;
  GemmDesc& wd = job2.desc[0];
  wd.a = rows_of(xs, es, D);  // xs (n×D) row-major read as xsᵀ (D×n) column-major
  wd.b = rows_of(dz, es, R);
  wd.d = expert_of(grad_wd, es, D * R, R);
  wd.m = int(D), wd.n = int(R), wd.k = -1;
  wd.out = buf[1];
  wd.first = int(K);
  fill_gemm_args(job2, g, K, T, stream);

  dispatch_dtype(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    augment_up_kernel<scalar_t><<<grid_for(K * Rp * D), 256, 0, stream>>>(
        static_cast<const scalar_t*>(w_up), static_cast<const scalar_t*>(b_up), static_cast<scalar_t*>(b_aug),
        int(K), int(R), int(Rp), D);
    MOME_KERNEL_LAUNCH_CHECK();
    grouped_gemm(Gemm::kDhAug, dtype, buf[0], int(K), 0.0f, stream);
    backward_rows_kernel<scalar_t><<<grid_for(T * 32), 256, 0, stream>>>(
        g_aug, static_cast<const scalar_t*>(hs), g.offsets, int(K), g.perm, static_cast<const scalar_t*>(scale),
        static_cast<const scalar_t*>(gate), static_cast<scalar_t*>(dz), dz32, static_cast<scalar_t*>(a_aug),
        static_cast<scalar_t*>(grad_gate), gs, T, int(R), int(Rp));
    MOME_KERNEL_LAUNCH_CHECK();
    grouped_gemm(Gemm::kWeightGrad, dtype, buf[1], int(2 * K), 0.0f, stream);
    grouped_gemm(Gemm::kDx, dtype, buf[2], int(K), 0.0f, stream);
    segment_sum<scalar_t>(dz32, T, R, int(R), g.offsets, K, static_cast<scalar_t*>(grad_bd), stream);
    segment_sum<scalar_t>(gs, T, 1, 1, g.offsets, K, static_cast<scalar_t*>(grad_scale), stream);
    if (!sorted)
      scatter_rows<scalar_t>(static_cast<const scalar_t*>(dxs), T, D, g, nullptr, K, static_cast<scalar_t*>(grad_x),
                             stream);
  });
  // grad_w_up[e] = gwu_aug[e, :R], grad_b_up[e] = gwu_aug[e, R]: strided copies out of the workspace.
  const size_t pitch = size_t(Rp * D * es);
  if (R * D > 0)
    MOME_CUDA_CHECK(cudaMemcpy2DAsync(grad_wu, size_t(R * D * es), gwu_aug, pitch, size_t(R * D * es), size_t(K),
                                      cudaMemcpyDeviceToDevice, stream));
  if (D > 0)
    MOME_CUDA_CHECK(cudaMemcpy2DAsync(grad_bu, size_t(D * es), static_cast<char*>(gwu_aug) + R * D * es, pitch,
                                      size_t(D * es), size_t(K), cudaMemcpyDeviceToDevice, stream));
}

}  // namespace

std::size_t grouped_adapter_forward_workspace_cuda(DType dtype, const AdapterSizes& n, bool sorted) {
  check_sizes(dtype, n);
  cuda::Workspace plan;
  const int64_t dummy = 0;
  forward(dtype, sorted ? nullptr : &dummy, sorted ? &dummy : nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
          nullptr, nullptr, nullptr, nullptr, nullptr, plan, n, nullptr);
  return plan.used();
}

void grouped_adapter_forward_cuda(DType dtype, const int64_t* expert_ids, const int64_t* expert_offsets, const void* x,
                                  const void* w_down, const void* b_down, const void* w_up, const void* b_up,
                                  const void* scale, const void* gate, const void* residual, void* y, void* hidden,
                                  void* workspace, std::size_t workspace_bytes, const AdapterSizes& n, int device,
                                  std::uintptr_t stream) {
  check_sizes(dtype, n);
  if (n.T == 0) return;
  const cuda::DeviceGuard guard(device);
  cuda::Workspace ws(workspace, workspace_bytes);
  forward(dtype, expert_ids, expert_offsets, x, w_down, b_down, w_up, b_up, scale, gate, residual, y, hidden, ws, n,
          cuda::as_stream(stream));
}

std::size_t grouped_adapter_backward_workspace_cuda(DType dtype, const AdapterSizes& n, bool sorted) {
  check_sizes(dtype, n);
  cuda::Workspace plan;
  const int64_t dummy = 0;
  backward(dtype, sorted ? nullptr : &dummy, sorted ? &dummy : nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
           nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, plan, n, nullptr);
  return plan.used();
}

void grouped_adapter_backward_cuda(DType dtype, const int64_t* expert_ids, const int64_t* expert_offsets,
                                   const void* grad_output, const void* x, const void* hidden, const void* w_down,
                                   const void* w_up, const void* b_up, const void* scale, const void* gate,
                                   void* grad_x, void* grad_w_down, void* grad_b_down, void* grad_w_up,
                                   void* grad_b_up, void* grad_scale, void* grad_gate, void* workspace,
                                   std::size_t workspace_bytes, const AdapterSizes& n, int device,
                                   std::uintptr_t stream) {
  check_sizes(dtype, n);
  if (n.T == 0) return;
  const cuda::DeviceGuard guard(device);
  cuda::Workspace ws(workspace, workspace_bytes);
  backward(dtype, expert_ids, expert_offsets, grad_output, x, hidden, w_down, w_up, b_up, scale, gate, grad_x,
           grad_w_down, grad_b_down, grad_w_up, grad_b_up, grad_scale, grad_gate, ws, n, cuda::as_stream(stream));
}

}  // namespace mome
#endif  // MOME_WITH_CUTLASS
