// CPU launchers of mome::router_mix (see router_mix.h). Forward: each thread owns a range of output elements and sums
// the N experts into it. Backward: each (n, b) pair is owned by one thread, which scales grad_output into
// grad_features[n, b] and reduces <grad_output[b], features[n, b]> into grad_weights[b, n] (fixed order: deterministic).
#include <algorithm>
#include <cstring>

#include "router_mix/router_mix.h"

namespace mome {
namespace {

template <typename scalar_t>
void forward(const scalar_t* fp, const scalar_t* wp, scalar_t* op, int64_t N, int64_t B, int64_t LD, int threads) {
  // fp (N, B, LD), wp (B, N), op (B, LD)
  parallel_for(0, B * LD, 16384, threads, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      const int64_t b = i / LD;
      const int64_t stop = std::min(end, (b + 1) * LD);  // this sample's part of [begin, end)
      scalar_t* __restrict__ o = op + i;
      const int64_t n_el = stop - i;
      for (int64_t j = 0; j < n_el; ++j) o[j] = scalar_t(0);
      for (int64_t n = 0; n < N; ++n) {
        const scalar_t wn = wp[b * N + n];
        const scalar_t* __restrict__ fn = fp + n * B * LD + i;
        for (int64_t j = 0; j < n_el; ++j) o[j] += wn * fn[j];
      }
      i = stop;
    }
  });
}

template <typename scalar_t>
void backward(const scalar_t* gop, const scalar_t* fp, const scalar_t* wp, scalar_t* gfp, scalar_t* gwp, int64_t N,
              int64_t B, int64_t LD, int threads) {
  // gop (B, LD), fp (N, B, LD), wp (B, N)
  // At least ~32k multiply-adds per chunk: waking a thread for less costs more than it saves.
  parallel_for(0, N * B, std::max<int64_t>(1, 32768 / std::max<int64_t>(LD, 1)), threads, [&](int64_t begin, int64_t end) {
    for (int64_t nb = begin; nb < end; ++nb) {
      const int64_t n = nb / B, b = nb % B;
      const scalar_t wn = wp[b * N + n];
      const scalar_t* __restrict__ g = gop + b * LD;
      const scalar_t* __restrict__ fn = fp + nb * LD;
      scalar_t* __restrict__ gf = gfp + nb * LD;
      double dot = 0;
      for (int64_t j = 0; j < LD; ++j) {
        gf[j] = wn * g[j];
        dot += double(g[j]) * double(fn[j]);
      }
      gwp[b * N + n] = scalar_t(dot);
    }
  });
}

}  // namespace

void router_mix_forward_cpu(DType dtype, const void* features, const void* weights, void* out, int64_t N, int64_t B,
                            int64_t LD, int threads) {
  if (B * LD == 0) return;
  if (dtype == DType::kFloat64)
    forward(static_cast<const double*>(features), static_cast<const double*>(weights), static_cast<double*>(out), N,
            B, LD, threads);
  else
    forward(static_cast<const float*>(features), static_cast<const float*>(weights), static_cast<float*>(out), N, B,
            LD, threads);
}

void router_mix_backward_cpu(DType dtype, const void* grad_output, const void* features, const void* weights,
                             void* grad_features, void* grad_weights, int64_t N, int64_t B, int64_t LD, int threads) {
  if (dtype == DType::kFloat64)
    backward(static_cast<const double*>(grad_output), static_cast<const double*>(features),
             static_cast<const double*>(weights), static_cast<double*>(grad_features),
             static_cast<double*>(grad_weights), N, B, LD, threads);
  else
    backward(static_cast<const float*>(grad_output), static_cast<const float*>(features),
             static_cast<const float*>(weights), static_cast<float*>(grad_features), static_cast<float*>(grad_weights),
             N, B, LD, threads);
}

}  // namespace mome
