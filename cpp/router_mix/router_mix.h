// mome::router_mix — MoVE's soft-router aggregation (PAPER.md: F = Σ_i G_s(I)_i · f̂_i).
//   features (N, B, L, D)   one token sequence per encoder (expert) and sample
//   weights  (B, N)         router probabilities per sample
//   -> out   (B, L, D)      out[b] = Σ_n weights[b, n] · features[n, b]
// Launchers: contiguous tensors allocated by the caller (python/mome/ops/router_mix.py checks shapes and dtypes);
// LD = L·D. Backward outputs: grad_features (N, B, L, D), grad_weights (B, N).
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/core.h"

namespace mome {

// CPU: float32, float64 (features and weights in one dtype).
void router_mix_forward_cpu(DType dtype, const void* features, const void* weights, void* out, int64_t N, int64_t B,
                            int64_t LD, int threads);
void router_mix_backward_cpu(DType dtype, const void* grad_output, const void* features, const void* weights,
                             void* grad_features, void* grad_weights, int64_t N, int64_t B, int64_t LD, int threads);

#ifdef MOME_WITH_CUDA
// CUDA: float16, bfloat16, float32, float64. The backward needs router_mix_backward_workspace_cuda bytes of scratch.
void router_mix_forward_cuda(DType dtype, const void* features, const void* weights, void* out, int64_t N, int64_t B,
                             int64_t LD, int device, std::uintptr_t stream);
std::size_t router_mix_backward_workspace_cuda(DType dtype, int64_t N, int64_t B, int64_t LD);
void router_mix_backward_cuda(DType dtype, const void* grad_output, const void* features, const void* weights,
                              void* grad_features, void* grad_weights, void* workspace, std::size_t workspace_bytes,
                              int64_t N, int64_t B, int64_t LD, int device, std::uintptr_t stream);
#endif

}  // namespace mome
