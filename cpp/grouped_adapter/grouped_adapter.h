// mome::grouped_adapter — MoLE's top-1 bottleneck adapters for a whole batch in one call (PAPER.md, MoLE):
//   x (T, D), expert_ids (T,) int64 in [0, K), w_down (K, D, R), b_down (K, R), w_up (K, R, D), b_up (K, D),
//   scale (K,), gate (T,) or none.  With e = expert_ids[t]:
//     h[t] = ReLU(x[t] @ w_down[e] + b_down[e])                      (T, R)  returned too: the backward needs it
//     y[t] = gate[t] · scale[e] · (h[t] @ w_up[e] + b_up[e])         (T, D)
// plus residual[t] when a residual (T, D) is given: the accumulate option, `ffn_out + adapter(x)` in one pass.
//
// mome::grouped_adapter_sorted takes rows already grouped by expert instead of expert_ids: expert_offsets (K + 1,)
// int64 with 0 = offsets[0] <= ... <= offsets[K] = T; expert e owns rows [offsets[e], offsets[e + 1]).
//
// Launchers: contiguous tensors allocated by the caller (python/mome/ops/grouped_adapter.py); an absent optional
// tensor (gate, residual, perm) is a null pointer.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/core.h"

namespace mome {

// CPU (float32, float64): the non-GEMM pieces; the per-expert GEMMs are torch's (see grouped_adapter_cpu.cpp).
// Stable counting sort by expert: perm (T,) = original row of each grouped row, offsets (K + 1,). Throws
// std::invalid_argument for an id outside [0, K).
void grouped_adapter_group_rows_cpu(const int64_t* expert_ids, int64_t T, int64_t K, int64_t* perm, int64_t* offsets);
// Throws std::invalid_argument unless offsets (K + 1,) partition [0, T).
void grouped_adapter_check_offsets_cpu(const int64_t* offsets, int64_t K, int64_t T);
// dst[i] = src[perm[i]] and dst[perm[i]] = src[i], rows of row_bytes bytes.
void gather_rows_cpu(const void* src, const int64_t* perm, void* dst, int64_t rows, int64_t row_bytes, int threads);
void scatter_rows_cpu(const void* src, const int64_t* perm, void* dst, int64_t rows, int64_t row_bytes, int threads);
// y[t] = (residual[t] +) scale[e]·gate[t]·(us[i] + b_up[e]) and hidden[t] = hs[i], t = perm[i] (i without perm).
void grouped_adapter_epilogue_cpu(DType dtype, const int64_t* perm, const int64_t* offsets, const void* scale,
                                  const void* gate, const void* residual, const void* us, const void* b_up,
                                  const void* hs, void* y, void* hidden, int64_t T, int64_t D, int64_t R, int64_t K,
                                  int threads);
// From gs = [dy @ w_upᵀ | <dy, b_up>] (T, R + 1) and hs (T, R), grouped: hc = [c·h | c] (T, R + 1), dz (T, R),
// ss (T,), grad_gate (T,) (null without a gate) and grad_scale (K,).
void grouped_adapter_backward_rows_cpu(DType dtype, const int64_t* perm, const int64_t* offsets, const void* scale,
                                       const void* gate, const void* gs, const void* hs, void* hc, void* dz, void* ss,
                                       void* grad_gate, void* grad_scale, int64_t T, int64_t R, int64_t K,
                                       int threads);

#ifdef MOME_WITH_CUTLASS
// CUDA (float16, bfloat16, float32; CUTLASS grouped GEMMs). Exactly one of expert_ids / expert_offsets is non-null.
// Every input pointer is 16-byte aligned. Scratch: *_workspace_cuda bytes at `workspace` (16-byte aligned).
struct AdapterSizes {
  int64_t T, D, R, K;
};
std::size_t grouped_adapter_forward_workspace_cuda(DType dtype, const AdapterSizes& n, bool sorted);
void grouped_adapter_forward_cuda(DType dtype, const int64_t* expert_ids, const int64_t* expert_offsets, const void* x,
                                  const void* w_down, const void* b_down, const void* w_up, const void* b_up,
                                  const void* scale, const void* gate, const void* residual, void* y, void* hidden,
                                  void* workspace, std::size_t workspace_bytes, const AdapterSizes& n, int device,
                                  std::uintptr_t stream);
std::size_t grouped_adapter_backward_workspace_cuda(DType dtype, const AdapterSizes& n, bool sorted);
void grouped_adapter_backward_cuda(DType dtype, const int64_t* expert_ids, const int64_t* expert_offsets,
                                   const void* grad_output, const void* x, const void* hidden, const void* w_down,
                                   const void* w_up, const void* b_up, const void* scale, const void* gate,
                                   void* grad_x, void* grad_w_down, void* grad_b_down, void* grad_w_up,
                                   void* grad_b_up, void* grad_scale, void* grad_gate, void* workspace,
                                   std::size_t workspace_bytes, const AdapterSizes& n, int device,
                                   std::uintptr_t stream);
#endif

}  // namespace mome
