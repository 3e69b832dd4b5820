// CPU launchers of mome::deform_attn (see deform_attn.h for the shapes).
//
// Bilinear sampling matches grid_sample(align_corners=False, padding_mode="zeros") at 2·loc − 1: the pixel coordinate
// is x = loc_x · w − 0.5, corners outside the map read zero. Forward parallelises over (b, q) rows, which own their
// output. Backward parallelises over (b, h) pairs, which own their slice grad_value[b, :, h, :], their grad_loc and
// grad_attn entries: no atomics, and the result is the same for any thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "deform_attn/deform_attn.h"

namespace mome {
namespace {

struct Level {
  int64_t h, w, start;
};

// Reads the level layout and checks it against S (value.size(1)).
std::vector<Level> read_levels(const int64_t* sp, const int64_t* st, int64_t Lv, int64_t S) {
  std::vector<Level> levels(Lv);
  int64_t expected_start = 0;
  for (size_t l = 0; l < levels.size(); ++l) {
    const int64_t h = sp[2 * l], w = sp[2 * l + 1];
    if (!(h >= 1 && w >= 1)) value_error("spatial_shapes[", l, "] must be a positive (h, w), got (", h, ", ", w, ")");
    if (st[l] != expected_start)
      value_error("level_start_index[", l, "] must be ", expected_start,
                  " (the sum of h·w over the previous levels of spatial_shapes), got ", st[l]);
    levels[l] = {h, w, st[l]};
    expected_start += h * w;
  }
  if (expected_start != S)
    value_error("value.size(1) must equal the total number of positions in spatial_shapes (", expected_start,
                "), got ", S);
  return levels;
}

// The four bilinear corners of pixel coordinate (x, y) on an h×w map. `valid` marks corners inside the map;
// `offset` is the corner's position index (row·w + col) relative to the level start.
struct Corners {
  bool any;
  int64_t offset[4];
  bool valid[4];
  double lx, ly;  // fractional parts
};

template <typename T>
inline Corners corners_of(T x, T y, int64_t h, int64_t w) {
  Corners c;
  // Outside [-1, w] × [-1, h] every corner is outside (also catches NaN/Inf, whose comparisons are false).
  c.any = x >= T(-1) && x <= T(w) && y >= T(-1) && y <= T(h);
  if (!c.any) return c;
  const T xf = std::floor(x), yf = std::floor(y);
  const int64_t x0 = static_cast<int64_t>(xf), y0 = static_cast<int64_t>(yf);
  c.lx = static_cast<double>(x - xf);
  c.ly = static_cast<double>(y - yf);
  const int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1};
  const int64_t ys[4] = {y0, y0, y0 + 1, y0 + 1};
  for (int k = 0; k < 4; ++k) {
    c.valid[k] = xs[k] >= 0 && xs[k] < w && ys[k] >= 0 && ys[k] < h;
    c.offset[k] = ys[k] * w + xs[k];
  }
  return c;
}

template <typename scalar_t>
void forward_kernel(const scalar_t* value, const std::vector<Level>& levels, const scalar_t* loc,
                    const scalar_t* attn, scalar_t* out, int64_t B, int64_t S, int64_t H, int64_t D, int64_t Q,
                    int64_t P, int threads) {
  const int64_t Lv = static_cast<int64_t>(levels.size());
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, H * Lv * P * D / 64));
  parallel_for(0, B * Q, grain, threads, [&](int64_t begin, int64_t end) {
    for (int64_t bq = begin; bq < end; ++bq) {
      const int64_t b = bq / Q;
      for (int64_t hh = 0; hh < H; ++hh) {
        scalar_t* __restrict__ o = out + (bq * H + hh) * D;  // (D,)
        for (int64_t d = 0; d < D; ++d) o[d] = scalar_t(0);
        for (int64_t l = 0; l < Lv; ++l) {
          const Level& lv = levels[l];
          // value rows of this (b, level, head): position s at v + s·H·D
          const scalar_t* v = value + ((b * S + lv.start) * H + hh) * D;
          const int64_t base = ((bq * H + hh) * Lv + l) * P;
          for (int64_t p = 0; p < P; ++p) {
            const scalar_t x = loc[2 * (base + p)] * scalar_t(lv.w) - scalar_t(0.5);
            const scalar_t y = loc[2 * (base + p) + 1] * scalar_t(lv.h) - scalar_t(0.5);
            const Corners c = corners_of(x, y, lv.h, lv.w);
            if (!c.any) continue;
            const scalar_t a = attn[base + p];
            const scalar_t lx = scalar_t(c.lx), ly = scalar_t(c.ly);
            const scalar_t cw[4] = {(1 - lx) * (1 - ly), lx * (1 - ly), (1 - lx) * ly, lx * ly};
            for (int k = 0; k < 4; ++k) {
              if (!c.valid[k]) continue;
              const scalar_t wk = a * cw[k];
              const scalar_t* __restrict__ vk = v + c.offset[k] * H * D;
              for (int64_t d = 0; d < D; ++d) o[d] += wk * vk[d];
            }
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad_out, const scalar_t* value, const std::vector<Level>& levels,
                     const scalar_t* loc, const scalar_t* attn, scalar_t* grad_value, scalar_t* grad_loc,
                     scalar_t* grad_attn, int64_t B, int64_t S, int64_t H, int64_t D, int64_t Q, int64_t P,
                     int threads) {
  using acc_t = double;
  const int64_t Lv = static_cast<int64_t>(levels.size());
  // At least ~32k multiply-adds per chunk: waking a thread for less costs more than it saves.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, Q * Lv * P * 4 * D));
  parallel_for(0, B * H, grain, threads, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, hh = bh % H;
      // This task owns grad_value[b, :, hh, :]: zero it here, in parallel and right before it is accumulated into.
      for (int64_t s = 0; s < S; ++s) {
        scalar_t* __restrict__ row = grad_value + ((b * S + s) * H + hh) * D;
        for (int64_t d = 0; d < D; ++d) row[d] = scalar_t(0);
      }
      for (int64_t q = 0; q < Q; ++q) {
        const int64_t bq = b * Q + q;
        const scalar_t* __restrict__ go = grad_out + (bq * H + hh) * D;  // (D,)
        for (int64_t l = 0; l < Lv; ++l) {
          const Level& lv = levels[l];
          const int64_t voff = ((b * S + lv.start) * H + hh) * D;
          const scalar_t* v = value + voff;
          scalar_t* gv = grad_value + voff;
          const int64_t base = ((bq * H + hh) * Lv + l) * P;
          for (int64_t p = 0; p < P; ++p) {
            const scalar_t x = loc[2 * (base + p)] * scalar_t(lv.w) - scalar_t(0.5);
            const scalar_t y = loc[2 * (base + p) + 1] * scalar_t(lv.h) - scalar_t(0.5);
            const Corners c = corners_of(x, y, lv.h, lv.w);
            if (!c.any) {
              grad_attn[base + p] = scalar_t(0);
              grad_loc[2 * (base + p)] = scalar_t(0);
              grad_loc[2 * (base + p) + 1] = scalar_t(0);
              continue;
            }
            const scalar_t a = attn[base + p];
            const acc_t lx = c.lx, ly = c.ly;
            const acc_t cw[4] = {(1 - lx) * (1 - ly), lx * (1 - ly), (1 - lx) * ly, lx * ly};
            const acc_t dwdx[4] = {-(1 - ly), (1 - ly), -ly, ly};
            const acc_t dwdy[4] = {-(1 - lx), -lx, (1 - lx), lx};
            acc_t g_attn = 0, g_x = 0, g_y = 0;
            for (int k = 0; k < 4; ++k) {
              if (!c.valid[k]) continue;
              const scalar_t* __restrict__ vk = v + c.offset[k] * H * D;
              scalar_t* __restrict__ gvk = gv + c.offset[k] * H * D;
              const scalar_t wk = scalar_t(a * cw[k]);
              // <grad_out, value at corner k>: a D-term sum, accumulated in scalar_t so the loop vectorises
              scalar_t dot_s = 0;
#pragma omp simd reduction(+ : dot_s)
              for (int64_t d = 0; d < D; ++d) {
                dot_s += go[d] * vk[d];
                gvk[d] += wk * go[d];
              }
              const acc_t dot = dot_s;
              g_attn += cw[k] * dot;
              g_x += dwdx[k] * dot;
              g_y += dwdy[k] * dot;
            }
            grad_attn[base + p] = scalar_t(g_attn);
            // d(pixel x)/d(loc_x) = w, d(pixel y)/d(loc_y) = h
            grad_loc[2 * (base + p)] = scalar_t(acc_t(a) * g_x * acc_t(lv.w));
            grad_loc[2 * (base + p) + 1] = scalar_t(acc_t(a) * g_y * acc_t(lv.h));
          }
        }
      }
    }
  });
}

}  // namespace

void deform_attn_forward_cpu(DType dtype, const void* value, const int64_t* spatial_shapes,
                             const int64_t* level_start_index, const void* sampling_locations,
                             const void* attention_weights, void* out, const DeformAttnSizes& n, int threads) {
  const auto levels = read_levels(spatial_shapes, level_start_index, n.Lv, n.S);
  if (n.B * n.Q * n.H * n.D == 0) return;
  auto run = [&](auto tag) {
    using scalar_t = decltype(tag);
    forward_kernel<scalar_t>(static_cast<const scalar_t*>(value), levels,
                             static_cast<const scalar_t*>(sampling_locations),
                             static_cast<const scalar_t*>(attention_weights), static_cast<scalar_t*>(out), n.B, n.S,
                             n.H, n.D, n.Q, n.P, threads);
  };
  dtype == DType::kFloat64 ? run(double{}) : run(float{});
}

void deform_attn_backward_cpu(DType dtype, const void* grad_output, const void* value, const int64_t* spatial_shapes,
                              const int64_t* level_start_index, const void* sampling_locations,
                              const void* attention_weights, void* grad_value, void* grad_sampling_locations,
                              void* grad_attention_weights, const DeformAttnSizes& n, int threads) {
  const auto levels = read_levels(spatial_shapes, level_start_index, n.Lv, n.S);
  const size_t elt = dtype == DType::kFloat64 ? sizeof(double) : sizeof(float);
  const int64_t n_loc = n.B * n.Q * n.H * n.Lv * n.P;
  if (n_loc == 0 || n.B * n.S * n.H * n.D == 0) {  // nothing sampled, or nothing to sample from: all zeros
    const int64_t n_value = n.B * n.S * n.H * n.D;
    if (n_value) std::memset(grad_value, 0, elt * n_value);
    if (n_loc) std::memset(grad_sampling_locations, 0, elt * 2 * n_loc);
    if (n_loc) std::memset(grad_attention_weights, 0, elt * n_loc);
    return;
  }
  auto run = [&](auto tag) {
    using scalar_t = decltype(tag);
    backward_kernel<scalar_t>(static_cast<const scalar_t*>(grad_output), static_cast<const scalar_t*>(value), levels,
                              static_cast<const scalar_t*>(sampling_locations),
                              static_cast<const scalar_t*>(attention_weights), static_cast<scalar_t*>(grad_value),
                              static_cast<scalar_t*>(grad_sampling_locations),
                              static_cast<scalar_t*>(grad_attention_weights), n.B, n.S, n.H, n.D, n.Q, n.P, threads);
  };
  dtype == DType::kFloat64 ? run(double{}) : run(float{});
}

}  // namespace mome
