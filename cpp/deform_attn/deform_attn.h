// mome::deform_attn — multi-scale deformable attention (Deformable DETR semantics; ADT's cross-attention sampler).
//   value               (B, S, H, D)        S = Σ_l h_l · w_l, levels stacked along S
//   spatial_shapes      (Lv, 2) int64       rows (h_l, w_l)
//   level_start_index   (Lv,)   int64       start of level l along S
//   sampling_locations  (B, Q, H, Lv, P, 2) normalised (x, y); pixel coordinate x·w − 0.5 (align_corners=False)
//   attention_weights   (B, Q, H, Lv, P)
//   -> output           (B, Q, H·D)
// Launchers: every pointer addresses a contiguous tensor of the shape above, allocated by the caller (python/mome/ops/
// deform_attn.py, which also checks shapes, dtypes and devices). Backward outputs: grad_value, grad_sampling_locations,
// grad_attention_weights, the shapes of value, sampling_locations, attention_weights.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/core.h"

namespace mome {

struct DeformAttnSizes {
  int64_t B, S, H, D, Q, Lv, P;
};

// CPU (float32, float64; locations and weights in value's dtype). Reads spatial_shapes / level_start_index and
// throws std::invalid_argument when they are inconsistent with each other and S.
void deform_attn_forward_cpu(DType dtype, const void* value, const int64_t* spatial_shapes,
                             const int64_t* level_start_index, const void* sampling_locations,
                             const void* attention_weights, void* out, const DeformAttnSizes& n, int threads);
void deform_attn_backward_cpu(DType dtype, const void* grad_output, const void* value, const int64_t* spatial_shapes,
                              const int64_t* level_start_index, const void* sampling_locations,
                              const void* attention_weights, void* grad_value, void* grad_sampling_locations,
                              void* grad_attention_weights, const DeformAttnSizes& n, int threads);

#ifdef MOME_WITH_CUDA
// CUDA (value float16, bfloat16, float32, float64; locations and weights in value's dtype or float32, `loc_dtype`).
// The index tensors stay on the device (never read on the host). The backward needs `workspace_bytes` of scratch
// memory at `workspace` (16-byte aligned), from deform_attn_backward_workspace_cuda.
void deform_attn_forward_cuda(DType dtype, DType loc_dtype, const void* value, const int64_t* spatial_shapes,
                              const int64_t* level_start_index, const void* sampling_locations,
                              const void* attention_weights, void* out, const DeformAttnSizes& n, int device,
                              std::uintptr_t stream);
std::size_t deform_attn_backward_workspace_cuda(DType dtype, const DeformAttnSizes& n, int device);
void deform_attn_backward_cuda(DType dtype, DType loc_dtype, const void* grad_output, const void* value,
                               const int64_t* spatial_shapes, const int64_t* level_start_index,
                               const void* sampling_locations, const void* attention_weights, void* grad_value,
                               void* grad_sampling_locations, void* grad_attention_weights, void* workspace,
                               std::size_t workspace_bytes, const DeformAttnSizes& n, int device,
                               std::uintptr_t stream);
#endif

}  // namespace mome
