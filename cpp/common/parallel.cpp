// The CPU thread pool behind mome::parallel_for (core.h).
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "common/core.h"

namespace mome {
namespace {

thread_local bool inside_pool_task = false;

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
    }
    wake_.notify_all();
    const int64_t finished = work(job);
    std::unique_lock<std::mutex> lock(mutex_);
    pending_ -= finished;
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
          if (pending_ == 0 && active_ == 0) done_.notify_all();
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
