// The CPU thread pool behind mome::parallel_for (core.h). Its workers poll briefly before sleeping, as libgomp's do:
// measured on the 2-core VM at B=2 Q=256 H=8 D=32 P=4, deform_attn forward 1.06 ms with polling, 1.20 ms without,
// 1.01 ms for the OpenMP build of 3178211 (medians of 3 alternating runs; the machine is noisy).
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "common/core.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MOME_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define MOME_CPU_RELAX() asm volatile("yield")
#else
#define MOME_CPU_RELAX() ((void)0)
#endif

namespace mome {
namespace {

thread_local bool inside_pool_task = false;

// Before blocking on a condition variable a thread polls for a while (20000 pauses: 0.1-1 ms by CPU), as libgomp
// does: on a busy machine waking a sleeping thread can take longer than a small kernel. Polling only delays the
// blocking wait, whose predicate (read under the mutex) decides.
constexpr int kSpins = 20000;

template <typename Ready>
void spin_until(const Ready& ready) {
  for (int i = 0; i < kSpins && !ready(); ++i) MOME_CPU_RELAX();
}

// One job: its chunks are handed out by `next`; it lives on the stack of the thread that posted it, which returns only
// once every worker that picked the job up has left it.
struct Job {
  void (*task)(void*, int64_t);
  void* context;
  int64_t chunks;
  std::atomic<int64_t> next{0};
};

class Pool {
 public:
  // Runs the job if the pool is free; false when it is busy (the caller then runs every chunk itself).
  bool run(int64_t chunks, int threads, void (*task)(void*, int64_t), void* context) {
    std::unique_lock<std::mutex> busy(job_mutex_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    grow(threads - 1);
    Job job{task, context, chunks};
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      pending_ = chunks;
      ++generation_;
      published_.store(generation_, std::memory_order_release);
      idle_.store(false, std::memory_order_relaxed);
    }
    wake_.notify_all();
    const int64_t finished = work(job);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      pending_ -= finished;
      if (pending_ == 0 && active_ == 0) idle_.store(true, std::memory_order_release);
    }
    spin_until([&] { return idle_.load(std::memory_order_acquire); });
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0 && active_ == 0; });
    job_ = nullptr;
    return true;
  }

 private:
  void grow(int workers) {
    while (int(workers_.size()) < workers) {
      workers_.emplace_back([this] {
        inside_pool_task = true;
        uint64_t seen = 0;
        for (;;) {
          Job* job;
          spin_until([&] { return published_.load(std::memory_order_acquire) != seen; });
          {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [&] { return generation_ != seen && job_ != nullptr; });
            seen = generation_;
            job = job_;
            ++active_;
          }
          const int64_t finished = work(*job);
          std::lock_guard<std::mutex> lock(mutex_);
          pending_ -= finished;
          --active_;
          if (pending_ == 0 && active_ == 0) {
            idle_.store(true, std::memory_order_release);
            done_.notify_all();
          }
        }
      });
      workers_.back().detach();  // the pool lives as long as the process
    }
  }

  static int64_t work(Job& job) {
    int64_t finished = 0;
    for (int64_t c; (c = job.next.fetch_add(1)) < job.chunks; ++finished) {
      const bool outer = inside_pool_task;
      inside_pool_task = true;  // a nested parallel_for runs inline
      job.task(job.context, c);
      inside_pool_task = outer;
    }
    return finished;
  }

  std::mutex job_mutex_;  // one job at a time
  std::mutex mutex_;      // guards everything below
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  uint64_t generation_ = 0;
  std::atomic<uint64_t> published_{0};  // generation_, readable without the mutex (polling only)
  std::atomic<bool> idle_{true};        // pending_ == 0 && active_ == 0, readable without the mutex (polling only)
  Job* job_ = nullptr;
  int64_t pending_ = 0;
  int active_ = 0;
};

Pool& pool() {
  // A forked child inherits the pool's memory but not its threads: it makes a new pool (the old one is leaked).
  static pid_t owner = 0;
  static Pool* instance = nullptr;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (!instance || owner != getpid()) {
    instance = new Pool();
    owner = getpid();
  }
  return *instance;
}

}  // namespace

void run_chunks(int64_t chunks, int threads, void (*task)(void*, int64_t), void* context) {
  if (chunks <= 0) return;
  if (chunks == 1 || threads <= 1 || inside_pool_task || !pool().run(chunks, threads, task, context)) {
    for (int64_t c = 0; c < chunks; ++c) task(context, c);
  }
}

}  // namespace mome
