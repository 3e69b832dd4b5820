// CUDA kernels of mome::deform_attn (see deform_attn.h for the shapes and deform_attn_cpu.cpp for the math).
//
// Thread layout. One group of G lanes (G a power of two ≤ 32 dividing the warp) owns one (b, q, h) row: the D
// channels are split into C = D / V packs of V elements (V·sizeof = 16 bytes: 8 half/bf16, 4 float, 2 double; V = 1
// when D or a pointer does not allow it), lane j takes packs j, j+G, …, and G = min(32, next_pow2(C)). Every lane
// computes the (cheap) bilinear corners itself, so a corner read is one coalesced 16-byte-per-lane row of
// value[b, s, h, :]. No power-of-two assumption on D: D = 176 in bf16 is 22 packs on a group of 32 lanes, D = 96 is 12
// packs on 16 lanes. Accumulation is float32 (float64 for double); locations and weights may be float32 or the value
// dtype.
//
// Forward (one kernel): out[b, q, h, :] = Σ_l Σ_p a · Σ_k w_k · value[b, s_k, h, :]. Bytes moved (HBM, each input
// once): value + loc + attn + out = (B·S·H·D + B·Q·H·D)·sizeof(T) + 3·B·Q·H·Lv·P·sizeof(loc); corner rows are re-read
// from L2 (4·Lv·P rows per output row), which is what makes this a gather and not a stream.
//
// Backward, deterministic by construction (no floating-point atomics anywhere, so it is the same bits on every run and
// torch.use_deterministic_algorithms needs no other path):
//   1. points kernel, same layout as the forward: per (b, q, h, l, p) the four dot products <grad_out, value corner k>
//      reduced over the group by a fixed butterfly give grad_attention_weights and grad_sampling_locations; it also
//      writes one entry per corner: key = (b·S + s_k)·H + h (the grad_value row it feeds; a sentinel when the corner
//      reads zero), id = its own index, weight a·w_k.
//   2. cub's stable radix sort of (key, id) over the key bits actually used: entries of one grad_value row become
//      contiguous, in increasing id order (stability), whatever the thread schedule.
//   3. segment bounds: each row's [begin, end) in the sorted list (rows that no corner hits keep the memset 0, 0).
//   4. gather kernel, one group per grad_value row (b, s, h) in memory order: acc = Σ_i weight_i · grad_out[row of
//      id_i, :] in sorted order, written once (rows with no entry write zeros, so grad_value needs no memset).
//   Bytes: the floor is grad_out + value + loc + attn in, grad_value + grad_loc + grad_attn out. The design adds the
//   4·E corner entries (E = B·Q·H·Lv·P): written once (12 bytes each), about three radix passes reading and writing
//   key + id (≈ 48 bytes each), the gather reading id + weight (8–12 bytes each), plus 8·B·S·H bytes of bounds. At ADT
//   shapes this is 0.3–0.8× the floor again, far under the 2–3.5× that Deformable DETR's four scalar atomicAdds per
//   point and channel cost, and it needs no zero-filled grad_value.
//
// Bad layouts. spatial_shapes / level_start_index live on the device and are never read on the host (no
// synchronisation; capturable in a CUDA graph), so the kernels cannot reject an inconsistent layout; the Python wrapper
// validates it when the index tensors are on the CPU. Instead, every read is guarded: a level with h or w outside
// [1, S] or a start outside [0, S] reads zeros, and a corner whose position start + y·w + x falls outside [0, S) reads
// zero. Garbage in gives defined output, never an out-of-bounds access.
//
// Limits (checked, with a message): B·S·H < 2^32 − 1 (32-bit sort keys) and 4·B·Q·H·Lv·P < 2^31 (32-bit ids).

#include <cub/device/device_radix_sort.cuh>

#include <cstdint>
#include <limits>

#include "common/cuda_utils.cuh"
#include "deform_attn/deform_attn.h"

namespace mome {
namespace {

using cuda::acc_t;
constexpr int kThreads = 256;

using Problem = DeformAttnSizes;

__device__ __forceinline__ float floor_of(float x) { return floorf(x); }
__device__ __forceinline__ double floor_of(double x) { return floor(x); }

struct Level {
  int64_t h, w, start;
  bool ok;  // false: the level cannot lie inside value and reads zeros
};

__device__ __forceinline__ Level load_level(const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts,
                                            int64_t l, int64_t S) {
  Level lv{shapes[2 * l], shapes[2 * l + 1], starts[l], false};
  lv.ok = lv.h >= 1 && lv.w >= 1 && lv.h <= S && lv.w <= S && lv.start >= 0 && lv.start <= S;
  return lv;
}

// Bilinear corners of a normalised location on one level: pixel coordinate (x·w − 0.5, y·h − 0.5)
// (grid_sample, align_corners=False). Corner k = (x0 + (k & 1), y0 + (k >> 1)); pos[k] is its absolute position
// along S, or −1 when it reads zero.
template <typename A>
struct Corners {
  bool any;  // false: every corner reads zero (also NaN / Inf locations, whose comparisons are false)
  A fx, fy;  // fractional parts
  A w[4];    // bilinear weights
  int64_t pos[4];
};

template <typename A>
__device__ __forceinline__ Corners<A> corners_of(A lx, A ly, const Level& lv, int64_t S) {
  Corners<A> c;
  c.any = false;
  if (!lv.ok) return c;
  const A x = lx * A(lv.w) - A(0.5), y = ly * A(lv.h) - A(0.5);
  // Same bounds as the CPU kernel, so the gradient at the map's border agrees with it.
  if (!(x >= A(-1) && x <= A(lv.w) && y >= A(-1) && y <= A(lv.h))) return c;
  c.any = true;
  const A xf = floor_of(x), yf = floor_of(y);
  const int64_t x0 = static_cast<int64_t>(xf), y0 = static_cast<int64_t>(yf);
  c.fx = x - xf;
  c.fy = y - yf;
  c.w[0] = (A(1) - c.fx) * (A(1) - c.fy);
  c.w[1] = c.fx * (A(1) - c.fy);
  c.w[2] = (A(1) - c.fx) * c.fy;
  c.w[3] = c.fx * c.fy;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int64_t xk = x0 + (k & 1), yk = y0 + (k >> 1);
    const int64_t p = lv.start + yk * lv.w + xk;
    c.pos[k] = (xk >= 0 && xk < lv.w && yk >= 0 && yk < lv.h && p < S) ? p : -1;
  }
  return c;
}

// ---------------------------------------------------------------------------------------------------------------------
// Forward: one group of G lanes per (b, q, h).
template <typename T, typename L, int V>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ value,        // (B, S, H, D)
                   const int64_t* __restrict__ shapes,  // (Lv, 2)
                   const int64_t* __restrict__ starts,  // (Lv,)
                   const L* __restrict__ loc,           // (B, Q, H, Lv, P, 2)
                   const L* __restrict__ attn,          // (B, Q, H, Lv, P)
                   T* __restrict__ out,                 // (B, Q, H, D)
                   Problem pr, int G) {
  using A = acc_t<T>;
  const int64_t item = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / G;  // (b, q, h)
  if (item >= pr.B * pr.Q * pr.H) return;                                      // no shuffles below: safe
  const int lane = threadIdx.x & (G - 1);
  const int64_t h = item % pr.H, b = item / (pr.Q * pr.H);
  const int64_t row = pr.H * pr.D;  // stride between positions along S
  const T* v = value + (b * pr.S * pr.H + h) * pr.D;
  const int64_t LP = pr.Lv * pr.P;
  const L* lp = loc + item * LP * 2;
  const L* ap = attn + item * LP;
  const int64_t C = pr.D / V;
  for (int64_t c = lane; c < C; c += G) {
    A acc[V];
#pragma unroll
    for (int i = 0; i < V; ++i) acc[i] = A(0);
    for (int64_t l = 0; l < pr.Lv; ++l) {
      const Level lv = load_level(shapes, starts, l, pr.S);
#pragma unroll 2
      for (int64_t p = 0; p < pr.P; ++p) {
        const int64_t e = l * pr.P + p;
        const Corners<A> cr = corners_of<A>(A(lp[2 * e]), A(lp[2 * e + 1]), lv, pr.S);
        if (!cr.any) continue;
        const A a = A(ap[e]);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (cr.pos[k] < 0) continue;
          A x[V];
          cuda::load_acc<T, V>(v + cr.pos[k] * row + c * V, x);
          const A wk = a * cr.w[k];
#pragma unroll
          for (int i = 0; i < V; ++i) acc[i] += wk * x[i];
        }
      }
    }
    cuda::store_acc<T, V>(out + item * pr.D + c * V, acc);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Backward step 1: grad_attn, grad_loc and the corner entries; one group of G lanes per (b, q, h).
template <typename T, typename L, int V>
__global__ void __launch_bounds__(kThreads)
    backward_points_kernel(const T* __restrict__ grad_out,    // (B, Q, H, D)
                           const T* __restrict__ value,       // (B, S, H, D)
                           const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts,
                           const L* __restrict__ loc,         // (B, Q, H, Lv, P, 2)
                           const L* __restrict__ attn,        // (B, Q, H, Lv, P)
                           L* __restrict__ grad_loc,          // (B, Q, H, Lv, P, 2)
                           L* __restrict__ grad_attn,         // (B, Q, H, Lv, P)
                           uint32_t* __restrict__ keys,       // (E, 4) grad_value row fed by each corner, or sentinel
                           int32_t* __restrict__ ids,         // (E, 4) = iota, the sort's payload
                           acc_t<T>* __restrict__ corner_w,   // (E, 4) a · w_k
                           Problem pr, int G, uint32_t sentinel) {
  using A = acc_t<T>;
  const int64_t items = pr.B * pr.Q * pr.H;
  const int64_t raw = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / G;
  // Groups past the end stay to take part in the warp shuffles; they load and store nothing.
  const bool active = raw < items;
  const int64_t item = active ? raw : 0;
  const int lane = threadIdx.x & (G - 1);
  const int64_t h = item % pr.H, b = item / (pr.Q * pr.H);
  const int64_t row = pr.H * pr.D;
  const T* v = value + (b * pr.S * pr.H + h) * pr.D;
  const T* g = grad_out + item * pr.D;
  const int64_t LP = pr.Lv * pr.P;
  const int64_t C = pr.D / V;
  for (int64_t l = 0; l < pr.Lv; ++l) {
    const Level lv = load_level(shapes, starts, l, pr.S);
    for (int64_t p = 0; p < pr.P; ++p) {
      const int64_t e = item * LP + l * pr.P + p;
      Corners<A> cr;
      cr.any = false;
      A a = A(0);
      if (active) {
        cr = corners_of<A>(A(loc[2 * e]), A(loc[2 * e + 1]), lv, pr.S);
        a = A(attn[e]);
      }
      A dot[4] = {A(0), A(0), A(0), A(0)};  // this lane's part of <grad_out, value at corner k>
      if (cr.any) {
        for (int64_t c = lane; c < C; c += G) {
          A gv[V];
          cuda::load_acc<T, V>(g + c * V, gv);
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if (cr.pos[k] < 0) continue;
            A x[V];
            cuda::load_acc<T, V>(v + cr.pos[k] * row + c * V, x);
#pragma unroll
            for (int i = 0; i < V; ++i) dot[k] += gv[i] * x[i];
          }
        }
      }
      A g_attn = A(0), g_x = A(0), g_y = A(0);
      if (cr.any) {
        g_attn = cr.w[0] * dot[0] + cr.w[1] * dot[1] + cr.w[2] * dot[2] + cr.w[3] * dot[3];
        // ∂w_k/∂fx = (−(1−fy), 1−fy, −fy, fy), ∂w_k/∂fy = (−(1−fx), −fx, 1−fx, fx)
        g_x = (A(1) - cr.fy) * (dot[1] - dot[0]) + cr.fy * (dot[3] - dot[2]);
        g_y = (A(1) - cr.fx) * (dot[2] - dot[0]) + cr.fx * (dot[3] - dot[1]);
      }
      g_attn = cuda::group_sum(g_attn, G);
      g_x = cuda::group_sum(g_x, G);
      g_y = cuda::group_sum(g_y, G);
      if (!active) continue;
      if (lane == 0) {
        grad_attn[e] = static_cast<L>(g_attn);
        // ∂(pixel x)/∂loc_x = w, ∂(pixel y)/∂loc_y = h
        grad_loc[2 * e] = static_cast<L>(cr.any ? a * g_x * A(lv.w) : A(0));
        grad_loc[2 * e + 1] = static_cast<L>(cr.any ? a * g_y * A(lv.h) : A(0));
      }
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if ((k & (G - 1)) != lane) continue;  // corner k is written by lane k mod G
        const bool hit = cr.any && cr.pos[k] >= 0;
        const int64_t e4 = 4 * e + k;
        keys[e4] = hit ? static_cast<uint32_t>((b * pr.S + cr.pos[k]) * pr.H + h) : sentinel;
        ids[e4] = static_cast<int32_t>(e4);
        corner_w[e4] = hit ? a * cr.w[k] : A(0);
      }
    }
  }
}

// Backward step 3: [begin, end) of each grad_value row in the sorted entries (rows with none keep 0, 0).
__global__ void segment_bounds_kernel(const uint32_t* __restrict__ keys_sorted, int64_t n, uint32_t sentinel,
                                      int32_t* __restrict__ begin, int32_t* __restrict__ end) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint32_t k = keys_sorted[i];
  if (k >= sentinel) return;
  if (i == 0 || keys_sorted[i - 1] != k) begin[k] = static_cast<int32_t>(i);
  if (i == n - 1 || keys_sorted[i + 1] != k) end[k] = static_cast<int32_t>(i + 1);
}

// Backward step 4: one group of G lanes per grad_value row (b, s, h), summing its entries in sorted order.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
    backward_gather_kernel(const T* __restrict__ grad_out,          // (B, Q, H, D)
                           const int32_t* __restrict__ begin,       // (B·S·H,)
                           const int32_t* __restrict__ end,         // (B·S·H,)
                           const int32_t* __restrict__ ids_sorted,  // (4E,)
                           const acc_t<T>* __restrict__ corner_w,   // (4E,) indexed by id
                           T* __restrict__ grad_value,              // (B, S, H, D)
                           Problem pr, int G) {
  using A = acc_t<T>;
  const int64_t item = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / G;  // (b, s, h)
  if (item >= pr.B * pr.S * pr.H) return;
  const int lane = threadIdx.x & (G - 1);
  const int32_t lo = begin[item], hi = end[item];
  const int64_t per_row = 4 * pr.Lv * pr.P;  // entries per (b, q, h): id / per_row is the grad_out row
  const int64_t C = pr.D / V;
  for (int64_t c = lane; c < C; c += G) {
    A acc[V];
#pragma unroll
    for (int i = 0; i < V; ++i) acc[i] = A(0);
#pragma unroll 4
    for (int32_t j = lo; j < hi; ++j) {  // unrolled: several grad_out rows in flight per lane
      const int32_t id = ids_sorted[j];
      const A wk = corner_w[id];
      A x[V];
      cuda::load_acc<T, V>(grad_out + (id / per_row) * pr.D + c * V, x);
#pragma unroll
      for (int i = 0; i < V; ++i) acc[i] += wk * x[i];
    }
    cuda::store_acc<T, V>(grad_value + item * pr.D + c * V, acc);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Host side.

// Lanes per group for C packs, and the grid covering `items` groups.
struct Launch {
  int G;
  unsigned blocks;
};
Launch launch_of(int64_t items, int64_t C) {
  const int G = static_cast<int>(std::min<int64_t>(cuda::kWarp, cuda::next_pow2(std::max<int64_t>(C, 1))));
  const int64_t blocks = cuda::ceil_div(items * G, kThreads);
  if (blocks > std::numeric_limits<int32_t>::max()) value_error("deform_attn: too many rows for one launch (", items, ")");
  return {G, static_cast<unsigned>(blocks)};
}

template <typename T, typename L>
void launch_forward(const T* v, const int64_t* shapes, const int64_t* starts, const L* loc, const L* attn, T* out,
                    const Problem& pr, cudaStream_t stream) {
  constexpr int VP = 16 / sizeof(T);
  const int V = cuda::pack_width<T>(pr.D, {v, out});
  const Launch ln = launch_of(pr.B * pr.Q * pr.H, pr.D / V);
  auto args = [&](auto kernel) {
    kernel<<<ln.blocks, kThreads, 0, stream>>>(v, shapes, starts, loc, attn, out, pr, ln.G);
  };
  if (V == VP) {
    args(forward_kernel<T, L, VP>);
  } else {
    args(forward_kernel<T, L, 1>);
  }
  MOME_KERNEL_LAUNCH_CHECK();
}

// The backward's scratch, carved from the caller's workspace in this order (the size query runs the same code).
template <typename A>
struct BackwardScratch {
  uint32_t* keys;  // (2, E4): [0] unsorted, [1] sorted
  int32_t* ids;    // (2, E4)
  A* corner_w;     // (E4,)
  int32_t* bounds;  // (2, rows): [0] begin, [1] end
  void* sort_temp;
  size_t sort_bytes;
};

template <typename A>
BackwardScratch<A> carve(cuda::Workspace& ws, int64_t E4, int64_t rows, int end_bit) {
  BackwardScratch<A> s;
  s.keys = ws.take<uint32_t>(2 * E4);
  s.ids = ws.take<int32_t>(2 * E4);
  s.corner_w = ws.take<A>(E4);
  s.bounds = ws.take<int32_t>(2 * rows);
  s.sort_bytes = 0;
  MOME_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, s.sort_bytes, s.keys, s.keys + E4, s.ids, s.ids + E4,
                                                  static_cast<int>(E4), 0, end_bit));
  s.sort_bytes = std::max<size_t>(s.sort_bytes, 1);
  s.sort_temp = ws.take<char>(static_cast<int64_t>(s.sort_bytes));
  return s;
}

struct BackwardShape {
  int64_t E4, rows;
  uint32_t sentinel;
  int end_bit;
};

BackwardShape backward_shape(const Problem& pr) {
  BackwardShape b;
  b.E4 = 4 * pr.B * pr.Q * pr.H * pr.Lv * pr.P;
  b.rows = pr.B * pr.S * pr.H;  // grad_value rows; also the sentinel key
  if (b.rows >= int64_t(std::numeric_limits<uint32_t>::max()))
    value_error("deform_attn CUDA backward: value.size(0)·size(1)·size(2) must be < 2^32 − 1, got ", b.rows);
  if (b.E4 >= int64_t(std::numeric_limits<int32_t>::max()))
    value_error("deform_attn CUDA backward: 4·B·Q·H·Lv·P (sampling_locations.numel() · 2) must be < 2^31, got ", b.E4);
  b.sentinel = static_cast<uint32_t>(b.rows);
  b.end_bit = 0;
  while (b.end_bit < 32 && (uint64_t(1) << b.end_bit) <= uint64_t(b.sentinel)) ++b.end_bit;  // bits of `sentinel`
  return b;
}

template <typename T, typename L>
void launch_backward(const T* go, const T* v, const int64_t* shapes, const int64_t* starts, const L* loc,
                     const L* attn, T* grad_value, L* grad_loc, L* grad_attn, cuda::Workspace& ws, const Problem& pr,
                     cudaStream_t stream) {
  using A = acc_t<T>;
  constexpr int VP = 16 / sizeof(T);
  const BackwardShape bs = backward_shape(pr);
  const int64_t E4 = bs.E4, rows = bs.rows;
  const uint32_t sentinel = bs.sentinel;
  const BackwardScratch<A> scratch = carve<A>(ws, E4, rows, bs.end_bit);
  uint32_t* keys_in = scratch.keys;
  uint32_t* keys_out = keys_in + E4;
  int32_t* ids_in = scratch.ids;
  int32_t* ids_out = ids_in + E4;
  int32_t* begin = scratch.bounds;
  int32_t* end = begin + rows;
  A* cw = scratch.corner_w;

  const int V = cuda::pack_width<T>(pr.D, {v, go, grad_value});
  {
    const Launch ln = launch_of(pr.B * pr.Q * pr.H, pr.D / V);
    auto args = [&](auto kernel) {
      kernel<<<ln.blocks, kThreads, 0, stream>>>(go, v, shapes, starts, loc, attn, grad_loc, grad_attn, keys_in,
                                                 ids_in, cw, pr, ln.G, sentinel);
    };
    if (V == VP) {
      args(backward_points_kernel<T, L, VP>);
    } else {
      args(backward_points_kernel<T, L, 1>);
    }
    MOME_KERNEL_LAUNCH_CHECK();
  }

  size_t temp_bytes = scratch.sort_bytes;
  MOME_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(scratch.sort_temp, temp_bytes, keys_in, keys_out, ids_in, ids_out,
                                                  static_cast<int>(E4), 0, bs.end_bit, stream));
  MOME_CUDA_CHECK(cudaGetLastError());

  MOME_CUDA_CHECK(cudaMemsetAsync(begin, 0, 2 * rows * sizeof(int32_t), stream));
  segment_bounds_kernel<<<static_cast<unsigned>(cuda::ceil_div(E4, kThreads)), kThreads, 0, stream>>>(
      keys_out, E4, sentinel, begin, end);
  MOME_KERNEL_LAUNCH_CHECK();

  {
    const Launch ln = launch_of(rows, pr.D / V);
    auto args = [&](auto kernel) {
      kernel<<<ln.blocks, kThreads, 0, stream>>>(go, begin, end, ids_out, cw, grad_value, pr, ln.G);
    };
    if (V == VP) {
      args(backward_gather_kernel<T, VP>);
    } else {
      args(backward_gather_kernel<T, 1>);
    }
    MOME_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace

// Locations and weights: the value dtype, or float32 (`loc_dtype`).
template <typename F>
void dispatch_loc(DType dtype, DType loc_dtype, F&& f) {
  cuda::dispatch_floating(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (loc_dtype == dtype) {
      f(T{}, T{});
    } else if (loc_dtype == DType::kFloat32) {
      f(T{}, float{});
    } else {
      value_error("sampling_locations (and attention_weights) must have the dtype of value or float32 on CUDA");
    }
  });
}

void deform_attn_forward_cuda(DType dtype, DType loc_dtype, const void* value, const int64_t* spatial_shapes,
                              const int64_t* level_start_index, const void* sampling_locations,
                              const void* attention_weights, void* out, const DeformAttnSizes& n, int device,
                              std::uintptr_t stream) {
  if (n.B * n.Q * n.H * n.D == 0) return;
  const cuda::DeviceGuard guard(device);
  dispatch_loc(dtype, loc_dtype, [&](auto t, auto l) {
    using T = decltype(t);
    using L = decltype(l);
    launch_forward<T, L>(static_cast<const T*>(value), spatial_shapes, level_start_index,
                         static_cast<const L*>(sampling_locations), static_cast<const L*>(attention_weights),
                         static_cast<T*>(out), n, cuda::as_stream(stream));
  });
}

std::size_t deform_attn_backward_workspace_cuda(DType dtype, const DeformAttnSizes& n, int device) {
  const cuda::DeviceGuard guard(device);  // cub's size query reads the current device's properties
  const BackwardShape bs = backward_shape(n);
  cuda::Workspace plan;
  cuda::dispatch_floating(dtype, [&](auto tag) { carve<acc_t<decltype(tag)>>(plan, bs.E4, bs.rows, bs.end_bit); });
  return plan.used();
}

void deform_attn_backward_cuda(DType dtype, DType loc_dtype, const void* grad_output, const void* value,
                               const int64_t* spatial_shapes, const int64_t* level_start_index,
                               const void* sampling_locations, const void* attention_weights, void* grad_value,
                               void* grad_sampling_locations, void* grad_attention_weights, void* workspace,
                               std::size_t workspace_bytes, const DeformAttnSizes& n, int device,
                               std::uintptr_t stream) {
  const cuda::DeviceGuard guard(device);
  cuda::Workspace ws(workspace, workspace_bytes);
  dispatch_loc(dtype, loc_dtype, [&](auto t, auto l) {
    using T = decltype(t);
    using L = decltype(l);
    launch_backward<T, L>(static_cast<const T*>(grad_output), static_cast<const T*>(value), spatial_shapes,
                          level_start_index, static_cast<const L*>(sampling_locations),
                          static_cast<const L*>(attention_weights), static_cast<T*>(grad_value),
                          static_cast<L*>(grad_sampling_locations), static_cast<L*>(grad_attention_weights), ws, n,
                          cuda::as_stream(stream));
  });
}

}  // namespace mome
