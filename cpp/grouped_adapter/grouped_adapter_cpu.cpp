// CPU launchers of mome::grouped_adapter (see grouped_adapter.h): the pieces of the CPU path that are not GEMMs.
//
// The CPU path (python/mome/ops/grouped_adapter.py) groups the rows by expert once (a stable counting sort, O(T)),
// gathers them into contiguous per-expert blocks, and runs each expert's block through torch's BLAS (addmm/mm into
// preallocated slices: the GEMMs stay in torch, which owns the BLAS; this core links none). b_down + ReLU ride on
// addmm; b_up, scale, gate (and the residual) are applied while scattering the rows back (the epilogue below).
// Backward regroups with the same sort and uses
//   g[t] = dy[t] @ w_up[e]ᵀ,  s[t] = <g[t], h[t]> + <dy[t], b_up[e]>  (= <dy[t], u[t]> without recomputing u;
//   both from one GEMM with w_up extended by the column b_up)
//   dgate[t] = scale[e]·s[t],  dscale[e] = Σ_t gate[t]·s[t],  dz[t] = c[t]·g[t]·[h[t] > 0],  c[t] = gate[t]·scale[e]
//   dW_up[e] = Σ_t c[t]·h[t]ᵀ dy[t],  db_up[e] = Σ_t c[t]·dy[t]  (one GEMM: [c·h | c]ᵀ dy),
//   dW_down[e] = Σ_t x[t]ᵀ dz[t],  db_down[e] = Σ_t dz[t],  dx[t] = dz[t] @ w_downᵀ[e]
// The row pass between the GEMMs (backward_rows below) computes s, dgate, dscale, dz and [c·h | c]. Every reduction
// runs in a fixed order, so results do not depend on the thread count.
#include <algorithm>
#include <cstring>
#include <vector>

#include "grouped_adapter/grouped_adapter.h"

namespace mome {
namespace {

// expert_of[i]: the expert of grouped row i.
std::vector<int64_t> experts_of_rows(const int64_t* offsets, int64_t K, int64_t T) {
  std::vector<int64_t> expert_of(T);
  for (int64_t e = 0; e < K; ++e)
    for (int64_t i = offsets[e]; i < offsets[e + 1]; ++i) expert_of[i] = e;
  return expert_of;
}

template <typename scalar_t>
void epilogue(const int64_t* pp, const int64_t* offsets, const scalar_t* scp, const scalar_t* gp, const scalar_t* rp,
              const scalar_t* usp, const scalar_t* bup, const scalar_t* hsp, scalar_t* yp, scalar_t* hp, int64_t T,
              int64_t D, int64_t R, int64_t K, int threads) {
  const std::vector<int64_t> expert_of = experts_of_rows(offsets, K, T);
  parallel_for(0, T, std::max<int64_t>(1, 32768 / std::max<int64_t>(D, 1)), threads, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t = pp ? pp[i] : i;
      const int64_t e = expert_of[i];
      const scalar_t c = scp[e] * (gp ? gp[t] : scalar_t(1));
      const scalar_t* __restrict__ u = usp + i * D;
      const scalar_t* __restrict__ b = bup + e * D;
      scalar_t* __restrict__ yr = yp + t * D;
      if (rp) {
        const scalar_t* __restrict__ rr = rp + t * D;
        for (int64_t d = 0; d < D; ++d) yr[d] = rr[d] + c * (u[d] + b[d]);
      } else {
        for (int64_t d = 0; d < D; ++d) yr[d] = c * (u[d] + b[d]);
      }
      for (int64_t r = 0; r < R; ++r) hp[t * R + r] = hsp[i * R + r];
    }
  });
}

template <typename scalar_t>
void backward_rows(const int64_t* pp, const int64_t* offsets, const scalar_t* scp, const scalar_t* gp,
                   const scalar_t* gsp, const scalar_t* hsp, scalar_t* hcp, scalar_t* dzp, scalar_t* ssp,
                   scalar_t* dgp, scalar_t* dscp, int64_t T, int64_t R, int64_t K, int threads) {
  const std::vector<int64_t> expert_of = experts_of_rows(offsets, K, T);
  const int64_t R1 = R + 1;
  parallel_for(0, T, std::max<int64_t>(1, 16384 / std::max<int64_t>(R, 1)), threads, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t = pp ? pp[i] : i, e = expert_of[i];
      const scalar_t gate_t = gp ? gp[t] : scalar_t(1);
      const scalar_t c = scp[e] * gate_t;
      const scalar_t* gr = gsp + i * R1;
      double s = double(gr[R]);
      for (int64_t r = 0; r < R; ++r) {
        const scalar_t h = hsp[i * R + r];
        s += double(gr[r]) * double(h);
        hcp[i * R1 + r] = c * h;
        dzp[i * R + r] = h > scalar_t(0) ? c * gr[r] : scalar_t(0);
      }
      hcp[i * R1 + R] = c;
      ssp[i] = scalar_t(s);
      if (dgp) dgp[t] = scalar_t(double(scp[e]) * s);
    }
  });
  // dscale[e] = Σ gate·s over the expert's rows, in row order.
  for (int64_t e = 0; e < K; ++e) {
    double acc = 0;
    for (int64_t i = offsets[e]; i < offsets[e + 1]; ++i) acc += double(gp ? gp[pp ? pp[i] : i] : scalar_t(1)) * ssp[i];
    dscp[e] = scalar_t(acc);
  }
}

}  // namespace

void grouped_adapter_group_rows_cpu(const int64_t* expert_ids, int64_t T, int64_t K, int64_t* perm,
                                    int64_t* offsets) {
  std::vector<int64_t> counts(K, 0);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t e = expert_ids[t];
    if (!(e >= 0 && e < K))
      value_error("expert_ids[", t, "] = ", e, " is out of range [0, ", K, ") (K = w_down.size(0))");
    ++counts[e];
  }
  offsets[0] = 0;
  for (int64_t e = 0; e < K; ++e) offsets[e + 1] = offsets[e] + counts[e];
  std::vector<int64_t> cursor(offsets, offsets + K);
  for (int64_t t = 0; t < T; ++t) perm[cursor[expert_ids[t]]++] = t;
}

void grouped_adapter_check_offsets_cpu(const int64_t* op, int64_t K, int64_t T) {
  if (op[0] != 0) value_error("expert_offsets[0] must be 0, got ", op[0]);
  for (int64_t e = 0; e < K; ++e)
    if (op[e + 1] < op[e])
      value_error("expert_offsets must be non-decreasing, got expert_offsets[", e + 1, "] = ", op[e + 1],
                  " < expert_offsets[", e, "] = ", op[e]);
  if (op[K] != T) value_error("expert_offsets[K] must equal the number of rows x.size(0) (", T, "), got ", op[K]);
}

void gather_rows_cpu(const void* src, const int64_t* perm, void* dst, int64_t rows, int64_t row_bytes, int threads) {
  const char* sp = static_cast<const char*>(src);
  char* op = static_cast<char*>(dst);
  const size_t bytes = size_t(row_bytes);
  parallel_for(0, rows, std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(row_bytes, 1)), threads,
               [&](int64_t b, int64_t e) {
                 for (int64_t i = b; i < e; ++i) std::memcpy(op + i * bytes, sp + perm[i] * bytes, bytes);
               });
}

void scatter_rows_cpu(const void* src, const int64_t* perm, void* dst, int64_t rows, int64_t row_bytes, int threads) {
  const char* sp = static_cast<const char*>(src);
  char* op = static_cast<char*>(dst);
  const size_t bytes = size_t(row_bytes);
  parallel_for(0, rows, std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(row_bytes, 1)), threads,
               [&](int64_t b, int64_t e) {
                 for (int64_t i = b; i < e; ++i) std::memcpy(op + perm[i] * bytes, sp + i * bytes, bytes);
               });
}

void grouped_adapter_epilogue_cpu(DType dtype, const int64_t* perm, const int64_t* offsets, const void* scale,
                                  const void* gate, const void* residual, const void* us, const void* b_up,
                                  const void* hs, void* y, void* hidden, int64_t T, int64_t D, int64_t R, int64_t K,
                                  int threads) {
  auto run = [&](auto tag) {
    using S = decltype(tag);
    epilogue<S>(perm, offsets, static_cast<const S*>(scale), static_cast<const S*>(gate),
                static_cast<const S*>(residual), static_cast<const S*>(us), static_cast<const S*>(b_up),
                static_cast<const S*>(hs), static_cast<S*>(y), static_cast<S*>(hidden), T, D, R, K, threads);
  };
  dtype == DType::kFloat64 ? run(double{}) : run(float{});
}

void grouped_adapter_backward_rows_cpu(DType dtype, const int64_t* perm, const int64_t* offsets, const void* scale,
                                       const void* gate, const void* gs, const void* hs, void* hc, void* dz, void* ss,
                                       void* grad_gate, void* grad_scale, int64_t T, int64_t R, int64_t K,
                                       int threads) {
  auto run = [&](auto tag) {
    using S = decltype(tag);
    backward_rows<S>(perm, offsets, static_cast<const S*>(scale), static_cast<const S*>(gate),
                     static_cast<const S*>(gs), static_cast<const S*>(hs), static_cast<S*>(hc), static_cast<S*>(dz),
                     static_cast<S*>(ss), static_cast<S*>(grad_gate), static_cast<S*>(grad_scale), T, R, K, threads);
  };
  dtype == DType::kFloat64 ? run(double{}) : run(float{});
}

}  // namespace mome
