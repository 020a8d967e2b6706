// Fixed worker pool (contract in include/dsv4/cpu/threadpool.hpp). Work is handed out as
// contiguous pieces through a shared counter; the caller thread works too, so a pool of size 1
// spawns nothing and runs inline.
#include "dsv4/cpu/threadpool.hpp"

#include <algorithm>

#include "dsv4/error.hpp"

namespace dsv4::cpu {

ThreadPool::ThreadPool(int threads) {
  if (threads > kMaxThreads)
    fail(Status::invalid_argument, "thread pool: {} threads requested, at most {} supported", threads, kMaxThreads);
  const int extra = std::max(0, threads - 1);
  try {
    workers_.reserve(static_cast<size_t>(extra));
    for (int i = 0; i < extra; ++i) workers_.emplace_back([this] { worker_loop(); });
  } catch (const std::exception& e) {
    // Thread creation failed part-way (EAGAIN under a thread or memory limit) or the reserve did:
    // the destructor will not run, so the threads already started are stopped and joined here
    // (destroying a joinable std::thread would terminate the process).
    const size_t started = workers_.size();
    stop_and_join();
    fail(Status::out_of_memory, "thread pool: could not start thread {} of {}: {}", started + 2, threads, e.what());
  }
}

void ThreadPool::stop_and_join() noexcept {
  {
    std::lock_guard<std::mutex> lk(m_);
    stop_ = true;
  }
  cv_work_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
  workers_.clear();
}

ThreadPool::~ThreadPool() { stop_and_join(); }

void ThreadPool::run_pieces() {
  for (;;) {
    int64_t b;
    {
      std::lock_guard<std::mutex> lk(m_);
      if (next_ >= n_) return;
      b = next_;
      next_ = std::min(n_, next_ + piece_);
    }
    const int64_t e = std::min(n_, b + piece_);
    try {
      (*fn_)(b, e);
    } catch (...) {
      std::lock_guard<std::mutex> lk(m_);
      if (!error_) error_ = std::current_exception();
    }
    std::lock_guard<std::mutex> lk(m_);
    if (--pieces_left_ == 0) cv_done_.notify_all();
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(m_);
      cv_work_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    run_pieces();
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (workers_.empty() || n <= grain) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> job(job_mutex_);
  // Several pieces per thread balance uneven rows (e.g. attention over growing key sets).
  const int64_t want = static_cast<int64_t>(size()) * 4;
  const int64_t piece = std::max(grain, (n + want - 1) / want);
  {
    std::lock_guard<std::mutex> lk(m_);
    fn_ = &fn;
    n_ = n;
    piece_ = piece;
    next_ = 0;
    pieces_left_ = (n + piece - 1) / piece;
    error_ = nullptr;
    ++generation_;
  }
  cv_work_.notify_all();
  run_pieces();
  std::exception_ptr err;
  {
    std::unique_lock<std::mutex> lk(m_);
    cv_done_.wait(lk, [&] { return pieces_left_ == 0; });
    fn_ = nullptr;
    err = error_;
    error_ = nullptr;
  }
  if (err) std::rethrow_exception(err);
}

}  // namespace dsv4::cpu
