// CUDA kernels of mome::router_mix (see router_mix.h): out[b] = Σ_n weights[b, n] · features[n, b].
//
// Both directions are one streaming pass over features; work is counted in packs of V elements (16 bytes; V = 1 when
// L·D does not split into them), accumulation in float32 (float64 for double).
//   forward   one thread per output pack: reads the N feature packs and weights[b, :], writes one pack.
//             Bytes: (N + 1)·B·L·D·sizeof(T) (+ B·N weights).
//   backward  grid (K, B): block k of sample b owns a contiguous range of packs. For each expert n it writes
//             grad_features[n, b] = weights[b, n] · grad_out[b] over its range and reduces <grad_out[b], features[n, b]>
//             over the range with a fixed-shape block reduction into partial[b, n, k]; a second tiny kernel sums
//             partial[b, n, 0..K) in order. No atomics: grad_weights is the same bits on every run. The block's
//             grad_out range (≤ 32 KiB) is re-read N times from L1/L2, not from HBM.
//             Bytes: (2N + 1)·B·L·D·sizeof(T) (+ 4·B·N·K partials).
// The reduction order depends on the shape only: V from L·D and the dtype, K from the packs (≤ 2048 per block), never
// on the device or on pointer alignment. A pointer that allows no 16-byte access (a view with an odd storage offset)
// reads the same packs element by element, so grad_weights is the same bits for an aligned and a misaligned input.
#include <algorithm>
#include <limits>

#include "common/cuda_utils.cuh"
#include "router_mix/router_mix.h"

namespace mome {
namespace {

using cuda::acc_t;
constexpr int kThreads = 256;
constexpr int64_t kPacksPerBlock = 2048;  // backward: 8 packs per thread

template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ features,  // (N, B, LD)
                   const T* __restrict__ weights,   // (B, N)
                   T* __restrict__ out,             // (B, LD)
                   int64_t N, int64_t B, int64_t LD) {
  using A = acc_t<T>;
  const int64_t packs = LD / V;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // (b, pack)
  if (idx >= B * packs) return;
  const int64_t b = idx / packs, i = (idx % packs) * V;
  A acc[V];
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] = A(0);
#pragma unroll 4
  for (int64_t n = 0; n < N; ++n) {
    const A wn = static_cast<A>(weights[b * N + n]);
    A x[V];
    cuda::load_acc<T, V>(features + (n * B + b) * LD + i, x);
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] += wn * x[j];
  }
  cuda::store_acc<T, V>(out + b * LD + i, acc);
}

template <typename T, int V, bool Aligned>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const T* __restrict__ grad_out,   // (B, LD)
                    const T* __restrict__ features,   // (N, B, LD)
                    const T* __restrict__ weights,    // (B, N)
                    T* __restrict__ grad_features,    // (N, B, LD)
                    acc_t<T>* __restrict__ partial,   // (B, N, K)
                    int64_t N, int64_t B, int64_t LD) {
  using A = acc_t<T>;
  __shared__ A scratch[cuda::kWarp];
  const int64_t K = gridDim.x, k = blockIdx.x, b = blockIdx.y;
  const int64_t packs = LD / V;
  const int64_t per_block = cuda::ceil_div(packs, K);
  const int64_t lo = k * per_block, hi = std::min(packs, lo + per_block);
  const T* g = grad_out + b * LD;
  for (int64_t n = 0; n < N; ++n) {
    const A wn = static_cast<A>(weights[b * N + n]);
    const T* f = features + (n * B + b) * LD;
    T* gf = grad_features + (n * B + b) * LD;
    A dot = A(0);
    for (int64_t p = lo + threadIdx.x; p < hi; p += blockDim.x) {
      A gv[V], x[V], y[V];
      cuda::load_acc<T, V, Aligned>(g + p * V, gv);
      cuda::load_acc<T, V, Aligned>(f + p * V, x);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        dot += gv[j] * x[j];
        y[j] = wn * gv[j];
      }
      cuda::store_acc<T, V, Aligned>(gf + p * V, y);
    }
    dot = cuda::block_sum(dot, scratch);
    if (threadIdx.x == 0) partial[(b * N + n) * K + k] = dot;
  }
}

template <typename T>
__global__ void reduce_partials_kernel(const acc_t<T>* __restrict__ partial,  // (B·N, K)
                                       T* __restrict__ grad_weights,          // (B, N)
                                       int64_t BN, int64_t K) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= BN) return;
  acc_t<T> s = 0;
  for (int64_t k = 0; k < K; ++k) s += partial[r * K + k];
  grad_weights[r] = static_cast<T>(s);
}

unsigned blocks_for(int64_t threads) {
  const int64_t blocks = cuda::ceil_div(threads, kThreads);
  if (blocks > std::numeric_limits<int32_t>::max()) value_error("router_mix: input too large for one launch");
  return static_cast<unsigned>(std::max<int64_t>(blocks, 1));
}


// The backward's partial sums (B, N, K) in the accumulation type, K blocks per sample.
template <typename T>
int64_t backward_blocks(int64_t LD) {
  constexpr int VP = 16 / sizeof(T);
  const int V = LD % VP == 0 ? VP : 1;  // the shape alone: it fixes which elements each thread sums
  return cuda::ceil_div(LD / V, kPacksPerBlock);
}

}  // namespace

void router_mix_forward_cuda(DType dtype, const void* features, const void* weights, void* out, int64_t N, int64_t B,
                             int64_t LD, int device, std::uintptr_t stream_handle) {
  if (B * LD == 0) return;
  const cuda::DeviceGuard guard(device);
  const cudaStream_t stream = cuda::as_stream(stream_handle);
  cuda::dispatch_floating(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    const auto* f = static_cast<const scalar_t*>(features);
    const auto* w = static_cast<const scalar_t*>(weights);
    auto* o = static_cast<scalar_t*>(out);
    constexpr int VP = 16 / sizeof(scalar_t);
    const int V = cuda::pack_width<scalar_t>(LD, {f, o});
    const unsigned blocks = blocks_for(B * LD / V);
    if (V == VP) {
      forward_kernel<scalar_t, VP><<<blocks, kThreads, 0, stream>>>(f, w, o, N, B, LD);
    } else {
      forward_kernel<scalar_t, 1><<<blocks, kThreads, 0, stream>>>(f, w, o, N, B, LD);
    }
    MOME_KERNEL_LAUNCH_CHECK();
  });
}

std::size_t router_mix_backward_workspace_cuda(DType dtype, int64_t N, int64_t B, int64_t LD) {
  std::size_t bytes = 0;
  cuda::dispatch_floating(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    cuda::Workspace plan;
    plan.take<acc_t<scalar_t>>(B * N * backward_blocks<scalar_t>(LD));
    bytes = plan.used();
  });
  return bytes;
}

void router_mix_backward_cuda(DType dtype, const void* grad_output, const void* features, const void* weights,
                              void* grad_features, void* grad_weights, void* workspace, std::size_t workspace_bytes,
                              int64_t N, int64_t B, int64_t LD, int device, std::uintptr_t stream_handle) {
  if (N * B * LD == 0) value_error("router_mix CUDA backward: empty features (the caller returns zeros)");
  if (B > 65535) value_error("router_mix CUDA backward: batch size must be ≤ 65535, got ", B);
  const cuda::DeviceGuard guard(device);
  const cudaStream_t stream = cuda::as_stream(stream_handle);
  cuda::dispatch_floating(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using A = acc_t<scalar_t>;
    const auto* go = static_cast<const scalar_t*>(grad_output);
    const auto* f = static_cast<const scalar_t*>(features);
    const auto* w = static_cast<const scalar_t*>(weights);
    auto* gf = static_cast<scalar_t*>(grad_features);
    auto* gw = static_cast<scalar_t*>(grad_weights);
    constexpr int VP = 16 / sizeof(scalar_t);
    const int V = LD % VP == 0 ? VP : 1;
    const bool aligned = cuda::aligned16({go, f, gf});
    const int64_t K = backward_blocks<scalar_t>(LD);
    cuda::Workspace ws(workspace, workspace_bytes);
    A* partial = ws.take<A>(B * N * K);
    const dim3 grid(static_cast<unsigned>(K), static_cast<unsigned>(B));
    auto launch = [&](auto kernel) { kernel<<<grid, kThreads, 0, stream>>>(go, f, w, gf, partial, N, B, LD); };
    if (V == 1) {
      launch(backward_kernel<scalar_t, 1, true>);
    } else if (aligned) {
      launch(backward_kernel<scalar_t, VP, true>);
    } else {
      launch(backward_kernel<scalar_t, VP, false>);
    }
    MOME_KERNEL_LAUNCH_CHECK();
    reduce_partials_kernel<scalar_t><<<blocks_for(B * N), kThreads, 0, stream>>>(partial, gw, B * N, K);
    MOME_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace mome
