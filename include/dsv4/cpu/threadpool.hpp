// A small fixed pool of worker threads for the CPU backend's data-parallel loops. The pool is owned
// by one backend (RAII: threads join in the destructor); parallel_for runs one job at a time (calls
// from different threads are serialised) and returns when every range is done, rethrowing the
// first exception a worker raised. No global state; never call parallel_for from inside a job.
// Construction never leaves threads behind: it succeeds with every thread running or throws
// dsv4::Error with none.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dsv4::cpu {

class ThreadPool {
 public:
  static constexpr int kMaxThreads = 1024;
  // `threads`: total threads including the caller; ≤ 1 = run inline. More than kMaxThreads is
  // Error(invalid_argument); a thread that cannot be created (std::system_error, e.g. under a
  // memory or process limit) is Error(out_of_memory) after the threads already started have been
  // stopped and joined.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // Calls fn(begin, end) over [0, n) split into contiguous pieces of at least `grain` items.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop();
  void run_pieces();
  void stop_and_join() noexcept;

  std::vector<std::thread> workers_;
  std::mutex job_mutex_;  // one parallel_for at a time
  std::mutex m_;
  std::condition_variable cv_work_, cv_done_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, piece_ = 1, next_ = 0, pieces_left_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace dsv4::cpu
