// The Python extension module `mome._C`: the launchers of the torch-free core, and what this build contains.
//
// Tensors cross as integers (data pointers from `tensor.data_ptr()`), sizes as int64, dtypes as DType tags, a CUDA
// stream as the integer of `torch.cuda.current_stream(device).cuda_stream`. No torch header, no C++ object shared
// with torch: this module works with whatever torch (and whatever pybind11 inside it) the process runs. The mome::
// ops themselves are defined in Python (python/mome/ops/_library.py). Every call releases the GIL.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "deform_attn/deform_attn.h"
#include "grouped_adapter/grouped_adapter.h"
#include "router_mix/router_mix.h"

#ifdef MOME_WITH_CUDA
#include <cuda_runtime_api.h>
#endif
#ifndef MOME_CUDA_ARCHS
#define MOME_CUDA_ARCHS ""
#endif
#ifndef MOME_CUTLASS_VERSION
#define MOME_CUTLASS_VERSION ""
#endif

namespace py = pybind11;
using ptr = std::uintptr_t;

namespace {

template <typename T = void>
T* p(ptr address) {
  return reinterpret_cast<T*>(address);
}

mome::DType dt(int tag) {
  if (tag < 0 || tag > 3) throw py::type_error("mome._C: unknown dtype tag " + std::to_string(tag));
  return static_cast<mome::DType>(tag);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mome's torch-free C++/CUDA core: kernel launchers on raw pointers (see cpp/*/*.h)";
  const auto nogil = py::call_guard<py::gil_scoped_release>();

  m.def("deform_attn_forward_cpu",
        [](int dtype, ptr value, ptr shapes, ptr starts, ptr loc, ptr attn, ptr out, int64_t B, int64_t S, int64_t H,
           int64_t D, int64_t Q, int64_t Lv, int64_t P, int threads) {
          mome::deform_attn_forward_cpu(dt(dtype), p(value), p<int64_t>(shapes), p<int64_t>(starts), p(loc), p(attn),
                                        p(out), {B, S, H, D, Q, Lv, P}, threads);
        },
        nogil);
  m.def("deform_attn_backward_cpu",
        [](int dtype, ptr go, ptr value, ptr shapes, ptr starts, ptr loc, ptr attn, ptr gv, ptr gl, ptr ga, int64_t B,
           int64_t S, int64_t H, int64_t D, int64_t Q, int64_t Lv, int64_t P, int threads) {
          mome::deform_attn_backward_cpu(dt(dtype), p(go), p(value), p<int64_t>(shapes), p<int64_t>(starts), p(loc),
                                         p(attn), p(gv), p(gl), p(ga), {B, S, H, D, Q, Lv, P}, threads);
        },
        nogil);
  m.def("router_mix_forward_cpu",
        [](int dtype, ptr f, ptr w, ptr out, int64_t N, int64_t B, int64_t LD, int threads) {
          mome::router_mix_forward_cpu(dt(dtype), p(f), p(w), p(out), N, B, LD, threads);
        },
        nogil);
  m.def("router_mix_backward_cpu",
        [](int dtype, ptr go, ptr f, ptr w, ptr gf, ptr gw, int64_t N, int64_t B, int64_t LD, int threads) {
          mome::router_mix_backward_cpu(dt(dtype), p(go), p(f), p(w), p(gf), p(gw), N, B, LD, threads);
        },
        nogil);
  m.def("grouped_adapter_group_rows_cpu",
        [](ptr ids, int64_t T, int64_t K, ptr perm, ptr offsets) {
          mome::grouped_adapter_group_rows_cpu(p<int64_t>(ids), T, K, p<int64_t>(perm), p<int64_t>(offsets));
        },
        nogil);
  m.def("grouped_adapter_check_offsets_cpu",
        [](ptr offsets, int64_t K, int64_t T) { mome::grouped_adapter_check_offsets_cpu(p<int64_t>(offsets), K, T); },
        nogil);
  m.def("gather_rows_cpu",
        [](ptr src, ptr perm, ptr dst, int64_t rows, int64_t row_bytes, int threads) {
          mome::gather_rows_cpu(p(src), p<int64_t>(perm), p(dst), rows, row_bytes, threads);
        },
        nogil);
  m.def("scatter_rows_cpu",
        [](ptr src, ptr perm, ptr dst, int64_t rows, int64_t row_bytes, int threads) {
          mome::scatter_rows_cpu(p(src), p<int64_t>(perm), p(dst), rows, row_bytes, threads);
        },
        nogil);
  m.def("grouped_adapter_epilogue_cpu",
        [](int dtype, ptr perm, ptr offsets, ptr scale, ptr gate, ptr residual, ptr us, ptr b_up, ptr hs, ptr y,
           ptr hidden, int64_t T, int64_t D, int64_t R, int64_t K, int threads) {
          mome::grouped_adapter_epilogue_cpu(dt(dtype), p<int64_t>(perm), p<int64_t>(offsets), p(scale), p(gate),
                                             p(residual), p(us), p(b_up), p(hs), p(y), p(hidden), T, D, R, K,
                                             threads);
        },
        nogil);
  m.def("grouped_adapter_backward_rows_cpu",
        [](int dtype, ptr perm, ptr offsets, ptr scale, ptr gate, ptr gs, ptr hs, ptr hc, ptr dz, ptr ss,
           ptr grad_gate, ptr grad_scale, int64_t T, int64_t R, int64_t K, int threads) {
          mome::grouped_adapter_backward_rows_cpu(dt(dtype), p<int64_t>(perm), p<int64_t>(offsets), p(scale),
                                                  p(gate), p(gs), p(hs), p(hc), p(dz), p(ss), p(grad_gate),
                                                  p(grad_scale), T, R, K, threads);
        },
        nogil);

#ifdef MOME_WITH_CUDA
  m.def("deform_attn_forward_cuda",
        [](int dtype, int loc_dtype, ptr value, ptr shapes, ptr starts, ptr loc, ptr attn, ptr out, int64_t B,
           int64_t S, int64_t H, int64_t D, int64_t Q, int64_t Lv, int64_t P, int device, ptr stream) {
          mome::deform_attn_forward_cuda(dt(dtype), dt(loc_dtype), p(value), p<int64_t>(shapes), p<int64_t>(starts),
                                         p(loc), p(attn), p(out), {B, S, H, D, Q, Lv, P}, device, stream);
        },
        nogil);
  m.def("deform_attn_backward_workspace_cuda",
        [](int dtype, int64_t B, int64_t S, int64_t H, int64_t D, int64_t Q, int64_t Lv, int64_t P, int device) {
          return mome::deform_attn_backward_workspace_cuda(dt(dtype), {B, S, H, D, Q, Lv, P}, device);
        });
  m.def("deform_attn_backward_cuda",
        [](int dtype, int loc_dtype, ptr go, ptr value, ptr shapes, ptr starts, ptr loc, ptr attn, ptr gv, ptr gl,
           ptr ga, ptr ws, size_t ws_bytes, int64_t B, int64_t S, int64_t H, int64_t D, int64_t Q, int64_t Lv,
           int64_t P, int device, ptr stream) {
          mome::deform_attn_backward_cuda(dt(dtype), dt(loc_dtype), p(go), p(value), p<int64_t>(shapes),
                                          p<int64_t>(starts), p(loc), p(attn), p(gv), p(gl), p(ga), p(ws), ws_bytes,
                                          {B, S, H, D, Q, Lv, P}, device, stream);
        },
        nogil);
  m.def("router_mix_forward_cuda",
        [](int dtype, ptr f, ptr w, ptr out, int64_t N, int64_t B, int64_t LD, int device, ptr stream) {
          mome::router_mix_forward_cuda(dt(dtype), p(f), p(w), p(out), N, B, LD, device, stream);
        },
        nogil);
  m.def("router_mix_backward_workspace_cuda", [](int dtype, int64_t N, int64_t B, int64_t LD) {
    return mome::router_mix_backward_workspace_cuda(dt(dtype), N, B, LD);
  });
  m.def("router_mix_backward_cuda",
        [](int dtype, ptr go, ptr f, ptr w, ptr gf, ptr gw, ptr ws, size_t ws_bytes, int64_t N, int64_t B, int64_t LD,
           int device, ptr stream) {
          mome::router_mix_backward_cuda(dt(dtype), p(go), p(f), p(w), p(gf), p(gw), p(ws), ws_bytes, N, B, LD, device,
                                         stream);
        },
        nogil);
#endif
#ifdef MOME_WITH_CUTLASS
  m.def("grouped_adapter_forward_workspace_cuda", [](int dtype, int64_t T, int64_t D, int64_t R, int64_t K,
                                                     bool sorted) {
    return mome::grouped_adapter_forward_workspace_cuda(dt(dtype), {T, D, R, K}, sorted);
  });
  m.def("grouped_adapter_forward_cuda",
        [](int dtype, ptr ids, ptr offsets, ptr x, ptr wd, ptr bd, ptr wu, ptr bu, ptr scale, ptr gate, ptr residual,
           ptr y, ptr hidden, ptr ws, size_t ws_bytes, int64_t T, int64_t D, int64_t R, int64_t K, int device,
           ptr stream) {
          mome::grouped_adapter_forward_cuda(dt(dtype), p<int64_t>(ids), p<int64_t>(offsets), p(x), p(wd), p(bd),
                                             p(wu), p(bu), p(scale), p(gate), p(residual), p(y), p(hidden), p(ws),
                                             ws_bytes, {T, D, R, K}, device, stream);
        },
        nogil);
  m.def("grouped_adapter_backward_workspace_cuda", [](int dtype, int64_t T, int64_t D, int64_t R, int64_t K,
                                                      bool sorted) {
    return mome::grouped_adapter_backward_workspace_cuda(dt(dtype), {T, D, R, K}, sorted);
  });
  m.def("grouped_adapter_backward_cuda",
        [](int dtype, ptr ids, ptr offsets, ptr go, ptr x, ptr hidden, ptr wd, ptr wu, ptr bu, ptr scale, ptr gate,
           ptr gx, ptr gwd, ptr gbd, ptr gwu, ptr gbu, ptr gscale, ptr ggate, ptr ws, size_t ws_bytes, int64_t T,
           int64_t D, int64_t R, int64_t K, int device, ptr stream) {
          mome::grouped_adapter_backward_cuda(dt(dtype), p<int64_t>(ids), p<int64_t>(offsets), p(go), p(x), p(hidden),
                                              p(wd), p(wu), p(bu), p(scale), p(gate), p(gx), p(gwd), p(gbd), p(gwu),
                                              p(gbu), p(gscale), p(ggate), p(ws), ws_bytes, {T, D, R, K}, device,
                                              stream);
        },
        nogil);
#endif

  m.def("build_info", [] {
    py::dict info;
#ifdef MOME_WITH_CUDA
    info["cuda"] = true;
    info["cuda_archs"] = MOME_CUDA_ARCHS;
    info["cuda_runtime"] = std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10);
#else
    info["cuda"] = false;
    info["cuda_archs"] = "";
    info["cuda_runtime"] = "";
#endif
    info["cutlass_version"] = MOME_CUTLASS_VERSION;
    info["compiler"] = __VERSION__;
    return info;
  });
}
