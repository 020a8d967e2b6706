// The server's Prometheus registry: counters and histograms updated by the HTTP threads as
// requests end, gauges read from the scheduler at scrape time; render() writes the Prometheus
// text exposition format (version 0.0.4). Names are prefixed dsv4_ the way vLLM's are vllm:
// (docs/server.md lists them). One mutex guards everything: updates are a few additions per
// request, far from any hot path (the engine thread never touches the registry).
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dsv4/scheduler.hpp"

namespace dsv4::server {

// Cumulative-bucket histogram (Prometheus semantics: bucket i counts observations ≤ bound i; the
// +Inf bucket is the count). Not synchronised: the registry's mutex guards it.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);
  void render(std::string& out, std::string_view name, std::string_view help) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative; summed when rendered)
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();

  // One HTTP response: `endpoint` is the route's path ("other" for unknown paths, so that the
  // label set stays bounded), `status` the HTTP status sent.
  void count_http(std::string_view endpoint, int status);
  // One finished scheduler request (as Scheduler::take returns it): prompt and generated token
  // counters, finish reasons per sample, time to first token, inter-token latencies, end-to-end
  // and queue time.
  void observe_request(const RequestOutput& out);

  // The whole exposition. `stats` null while the model is loading (gauges then read 0).
  std::string render(const SchedulerStats* stats, bool ready) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> http_;  // (endpoint, status) → count
  std::map<std::string, uint64_t> finished_;              // finish_reason → samples
  uint64_t prompt_tokens_ = 0, generation_tokens_ = 0, requests_ = 0;
  Histogram ttft_, itl_, e2e_, queue_;
};

}  // namespace dsv4::server
