// The server process (contract in server_main.hpp). Signals are taken synchronously: SIGINT and
// SIGTERM are blocked in every thread (the mask is set before any thread starts, and threads
// inherit it) and one watcher thread receives them with sigtimedwait — so the server needs no
// signal handler and no process-wide mutable state at all.
#include "server_main.hpp"

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "dsv4/error.hpp"
#include "engine_host.hpp"
#include "http_server.hpp"
#include "metrics.hpp"

namespace dsv4::server {

int serve(const ServerOptions& opt) {
  const Logger log(opt.log_level);
  sigset_t stop_signals, old_mask;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask);
  // A shell starts background jobs with SIGINT ignored, and an ignored signal is discarded instead
  // of becoming pending: restore the default disposition (harmless while the signals are blocked)
  // so that `kill -INT` reaches the watcher however the server was started.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGINT, &dfl, nullptr);
  sigaction(SIGTERM, &dfl, nullptr);
  struct RestoreMask {
    sigset_t m;
    ~RestoreMask() { pthread_sigmask(SIG_SETMASK, &m, nullptr); }
  } restore{old_mask};

  Metrics metrics;
  EngineHost engine(opt, log);
  HttpServer http(opt, engine, metrics, log);
  http.bind();  // fail before the (long) load when the port is taken
  log.info("serve: listening on http://{}:{} — loading {} (backend {})", opt.host, http.port(), opt.model_dir,
           opt.load.backend);

  std::thread http_thread([&] { http.run(); });
  engine.load_async();

  std::atomic<bool> quit{false};
  auto shutdown = [&] {
    engine.begin_shutdown();  // 503 for new requests; live ones cancelled → their streams end
    http.stop();
  };
  std::thread watcher([&] {
    int seen = 0;
    while (!quit.load()) {
      const timespec tick{0, 200 * 1000 * 1000};
      const int sig = sigtimedwait(&stop_signals, nullptr, &tick);
      if (sig != SIGINT && sig != SIGTERM) continue;
      if (++seen > 1 || engine.state() == EngineHost::State::loading) {
        // A second signal, or one while Model::load runs (it cannot be interrupted and holds
        // nothing the OS does not reclaim): leave now.
        log.warn("serve: signal {}: exiting now", sig);
        std::_Exit(128 + sig);
      }
      log.info("serve: signal {}: shutting down (cancelling live requests; again to exit at once)", sig);
      shutdown();
    }
  });

  int rc = 0;
  if (engine.wait_loaded() == EngineHost::State::failed) {
    log.error("serve: cannot load {}: {}", opt.model_dir, engine.error());
    rc = 1;
    shutdown();
  } else if (engine.state() == EngineHost::State::ready) {
    std::string names;
    for (const auto& n : opt.served_model_names) names += (names.empty() ? "" : ", ") + n;
    log.info("serve: ready on http://{}:{} (model name: {})", opt.host, http.port(), names.empty() ? "the folder's name" : names);
  }
  http_thread.join();
  quit.store(true);
  watcher.join();
  log.info("serve: stopped");
  return rc;
}

}  // namespace dsv4::server
