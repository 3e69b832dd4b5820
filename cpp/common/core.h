// What every launcher of the torch-free core shares: the dtype tag, error messages, and a CPU parallel_for.
//
// Launchers take raw pointers to contiguous memory, sizes, a dtype tag and (CPU) a thread count or (CUDA) a stream,
// and return nothing: a bad argument throws std::invalid_argument (ValueError in Python), anything else
// std::runtime_error (RuntimeError). Shapes, dtypes and devices are checked in Python (python/mome/ops) before a
// launcher is called; the launchers check what only they can see (index values read on the host, launch limits).
#pragma once
#include <algorithm>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace mome {

// The element type of the floating-point tensors; python/mome/ops/_library.py keeps the same numbering.
enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}

template <typename... Args>
[[noreturn]] void value_error(const Args&... args) {
  throw std::invalid_argument(str(args...));
}

// Runs task(0), ..., task(chunks - 1), on the calling thread and up to chunks - 1 persistent worker threads (created
// on first use, kept waiting on a condition variable: waking them costs microseconds where starting threads costs
// tens). One job at a time: a call made while the pool is busy (another Python thread, or a task that calls
// parallel_for itself) runs its chunks on the calling thread, which gives the same results. A forked child process
// (DataLoader workers) starts a pool of its own. Defined in cpp/common/parallel.cpp.
void run_chunks(int64_t chunks, int threads, void (*task)(void* context, int64_t chunk), void* context);

// Calls f(begin, end) on [begin, end) split into at most `threads` contiguous chunks of at least `grain` indices
// (at::parallel_for's contract; one chunk, on the calling thread, when the range is below the grain). Every kernel
// gives each index its own outputs, so the split never changes a result. `threads` is torch.get_num_threads() of
// the caller; no OpenMP runtime enters the process besides torch's own.
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, int threads, const F& f) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  const int64_t chunks = std::min<int64_t>(std::max(threads, 1), (n + grain - 1) / std::max<int64_t>(grain, 1));
  if (chunks <= 1) {
    f(begin, end);
    return;
  }
  struct Context {
    const F& f;
    int64_t begin, end, step;
  } context{f, begin, end, (n + chunks - 1) / chunks};
  run_chunks(chunks, static_cast<int>(chunks), [](void* c, int64_t chunk) {
    const auto& ctx = *static_cast<const Context*>(c);
    const int64_t b = ctx.begin + chunk * ctx.step;
    if (b < ctx.end) ctx.f(b, std::min(ctx.end, b + ctx.step));
  }, &context);
}

}  // namespace mome
