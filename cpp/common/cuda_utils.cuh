// Small device helpers shared by mome's CUDA kernels: accumulation types, 16-byte vector packs, fixed-order
// (deterministic) reductions. Only c10 headers: ATen/cuda/CUDAContext.h needs cuSPARSE headers a minimal toolkit lacks.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

namespace mome::cuda {

constexpr int kWarp = 32;

// float32 accumulation for half, bfloat16 and float; float64 for double.
template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccType<T>::type;

// V consecutive elements moved as one access (V·sizeof(T) = 16 bytes gives 128-bit loads and stores).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// Aligned: one 16-byte access (p must be V·sizeof(T)-aligned). Not aligned: the same V elements read or written one
// by one, for pointers that allow no vector access; the arithmetic on the V values, and so the result, is the same.
template <typename T, int V, bool Aligned = true>
__device__ __forceinline__ void load_acc(const T* __restrict__ p, acc_t<T> (&out)[V]) {
  if constexpr (Aligned) {
    const Pack<T, V> pk = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = static_cast<acc_t<T>>(pk.v[i]);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = static_cast<acc_t<T>>(p[i]);
  }
}

template <typename T, int V, bool Aligned = true>
__device__ __forceinline__ void store_acc(T* __restrict__ p, const acc_t<T> (&in)[V]) {
  if constexpr (Aligned) {
    Pack<T, V> pk;
#pragma unroll
    for (int i = 0; i < V; ++i) pk.v[i] = static_cast<T>(in[i]);
    *reinterpret_cast<Pack<T, V>*>(p) = pk;
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) p[i] = static_cast<T>(in[i]);
  }
}

// Sum over aligned groups of G lanes (G a power of two ≤ 32), a butterfly of fixed shape: every lane of the group gets
// the same, reproducible result. All 32 lanes of the warp must call it.
template <typename A>
__device__ __forceinline__ A group_sum(A x, int G) {
  for (int off = G >> 1; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024) in a fixed order; the result is valid in thread 0.
// `scratch` holds 32 values. Every thread must call it.
template <typename A>
__device__ __forceinline__ A block_sum(A x, A* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  x = group_sum(x, kWarp);
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  A total = 0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < warps; ++w) total += scratch[w];
  }
  __syncthreads();  // scratch may be reused by the caller's next reduction
  return total;
}

inline int next_pow2(int64_t x) {
  int p = 1;
  while (p < x && p < (1 << 30)) p <<= 1;
  return p;
}

// Whether every pointer is 16-byte aligned.
inline bool aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

// Elements per 16-byte pack when D splits into packs and every pointer is 16-byte aligned; else 1 (scalar accesses).
template <typename T>
inline int pack_width(int64_t D, std::initializer_list<const void*> ptrs) {
  constexpr int V = 16 / sizeof(T);
  return (D % V == 0 && aligned16(ptrs)) ? V : 1;
}

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace mome::cuda
