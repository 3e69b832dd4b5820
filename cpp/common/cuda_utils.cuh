// Helpers shared by mome's CUDA launchers and kernels: error checks, the device guard, the caller's workspace,
// the dtype dispatch, accumulation types, 16-byte vector packs, fixed-order (deterministic) reductions. Plain CUDA
// runtime and cccl headers only (a minimal toolkit has everything needed).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cassert>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>

#include "common/core.h"

// Throws std::runtime_error (RuntimeError in Python) naming the failed call and CUDA's message.
#define MOME_CUDA_CHECK(expr)                                                                                \
  do {                                                                                                      \
    const cudaError_t mome_err_ = (expr);                                                                   \
    if (mome_err_ != cudaSuccess)                                                                           \
      throw std::runtime_error(::mome::str("CUDA error: ", cudaGetErrorString(mome_err_), " (", #expr, " at ", \
                                           __FILE__, ":", __LINE__, ")"));                                 \
  } while (0)

// After every kernel launch: a bad configuration is reported here, not by a later unrelated call.
#define MOME_KERNEL_LAUNCH_CHECK() MOME_CUDA_CHECK(cudaGetLastError())

#ifdef NDEBUG
// <assert.h> declares __assert_fail only without NDEBUG; CUDA implements it on the device (as c10 relies on too).
extern "C" __host__ __device__ void __assert_fail(const char* assertion, const char* file, unsigned int line,
                                                  const char* function) noexcept __attribute__((__noreturn__));
#endif

// A device-side assertion that stays on in release builds (as c10's CUDA_KERNEL_ASSERT did): the kernel traps and
// the next synchronising call reports a device-side assert.
#define MOME_KERNEL_ASSERT_MSG(cond, msg)                                                                    \
  do {                                                                                                      \
    if (!(cond)) __assert_fail(msg, __FILE__, static_cast<unsigned int>(__LINE__), __func__);                \
  } while (0)

namespace mome::cuda {

constexpr int kWarp = 32;

// Makes `device` current for the launcher's scope and restores the caller's device after (torch's tensors and stream
// live on `device`; the caller's current device may be another one).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) : device_(device) {
    MOME_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device_) MOME_CUDA_CHECK(cudaSetDevice(device_));
  }
  ~DeviceGuard() {
    if (previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_, previous_ = -1;
};

inline cudaStream_t as_stream(std::uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

// Scratch memory handed in by the caller (a torch uint8 tensor: the caching allocator owns it, CUDA-graph capture
// sees it). Planning mode (no base): take() returns null and only counts, so the "how many bytes" function of a
// launcher runs the same sequence of take() calls as the launcher itself. Every block is 16-byte aligned.
class Workspace {
 public:
  Workspace() = default;
  Workspace(void* base, std::size_t bytes) : base_(static_cast<char*>(base)), capacity_(bytes) {}
  template <typename T>
  T* take(int64_t count) {
    const std::size_t offset = used_;
    used_ += (static_cast<std::size_t>(count) * sizeof(T) + 15) / 16 * 16;
    if (!base_) return nullptr;
    if (used_ > capacity_)
      throw std::invalid_argument(::mome::str("workspace too small: ", capacity_, " bytes, need at least ", used_));
    return reinterpret_cast<T*>(base_ + offset);
  }
  bool planning() const { return base_ == nullptr; }
  std::size_t used() const { return used_; }

 private:
  char* base_ = nullptr;
  std::size_t capacity_ = 0, used_ = 0;
};

// Calls f(T{}) for the element type of `dtype` (__half, __nv_bfloat16, float, double).
template <typename F>
void dispatch_floating(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat16: return f(__half{});
    case DType::kBFloat16: return f(__nv_bfloat16{});
    case DType::kFloat32: return f(float{});
    case DType::kFloat64: return f(double{});
  }
  throw std::invalid_argument("unknown dtype tag");
}

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
