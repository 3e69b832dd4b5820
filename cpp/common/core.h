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
#include <thread>
#include <vector>

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

// Calls f(begin, end) on [begin, end) split into at most `threads` contiguous chunks of at least `grain` indices
// (at::parallel_for's contract; one chunk, on the calling thread, when the range is below the grain). Every kernel
// gives each index its own outputs, so the split never changes a result. Threads are started per call: torch's
// thread count comes in as `threads`, and no second OpenMP runtime enters the process.
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, int threads, const F& f) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  const int64_t chunks = std::min<int64_t>(std::max(threads, 1), (n + grain - 1) / std::max<int64_t>(grain, 1));
  if (chunks <= 1) {
    f(begin, end);
    return;
  }
  const int64_t step = (n + chunks - 1) / chunks;
  std::vector<std::thread> workers;
  workers.reserve(chunks - 1);
  for (int64_t b = begin + step; b < end; b += step) {
    const int64_t e = std::min(end, b + step);
    workers.emplace_back([&f, b, e] { f(b, e); });
  }
  f(begin, std::min(end, begin + step));
  for (auto& w : workers) w.join();
}

}  // namespace mome
