// Prometheus registry (contract in metrics.hpp). Bucket bounds follow vLLM's, extended downwards
// because a small model on a CPU answers in milliseconds.
#include "metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace dsv4::server {
namespace {

// Label values may hold any byte: escape backslash, double quote and newline (text format rules).
std::string escape_label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  return fmt::format("{}", v);
}

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void scalar(std::string& out, std::string_view name, std::string_view type, std::string_view help, double v) {
  header(out, name, type, help);
  out += fmt::format("{} {}\n", name, number(v));
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)), counts_(bounds_.size(), 0) {
  std::sort(bounds_.begin(), bounds_.end());
}

void Histogram::observe(double v) {
  if (std::isnan(v)) return;
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);  // first bound ≥ v
  if (it != bounds_.end()) ++counts_[static_cast<size_t>(it - bounds_.begin())];
  sum_ += v;
  ++count_;
}

void Histogram::render(std::string& out, std::string_view name, std::string_view help) const {
  header(out, name, "histogram", help);
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, number(bounds_[i]), cum);
  }
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, count_);
  out += fmt::format("{}_sum {}\n{}_count {}\n", name, number(sum_), name, count_);
}

Metrics::Metrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
             80.0, 160.0, 640.0, 2560.0}),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
            10.0, 20.0, 40.0, 80.0}),
      e2e_({0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
            240.0, 480.0, 960.0, 1920.0, 7680.0}),
      queue_({0.001, 0.005, 0.01, 0.05, 0.1, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0}) {}

void Metrics::count_http(std::string_view endpoint, int status) {
  std::lock_guard<std::mutex> lk(mu_);
  ++http_[{std::string(endpoint), status}];
}

void Metrics::observe_request(const RequestOutput& out) {
  std::lock_guard<std::mutex> lk(mu_);
  ++requests_;
  prompt_tokens_ += out.prompt.size();
  bool any_token = false;
  for (const SampleOutput& s : out.samples) {
    generation_tokens_ += s.tokens.size();
    any_token = any_token || !s.tokens.empty();
    ++finished_[finish_reason_name(s.reason)];
  }
  const RequestTimings& t = out.timings;
  if (any_token && !out.samples.empty() && !out.samples[0].tokens.empty()) ttft_.observe(t.ttft_seconds);
  for (double v : t.itl_seconds) itl_.observe(v);
  e2e_.observe(t.e2e_seconds);
  queue_.observe(t.queue_seconds);
}

std::string Metrics::render(const SchedulerStats* stats, bool ready) const {
  std::string out;
  std::lock_guard<std::mutex> lk(mu_);
  scalar(out, "dsv4_server_ready", "gauge", "1 once the model is loaded and requests are served", ready ? 1 : 0);

  header(out, "dsv4_http_requests_total", "counter", "HTTP responses by endpoint and status code");
  for (const auto& [k, v] : http_)
    out += fmt::format("dsv4_http_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", escape_label(k.first),
                       k.second, v);

  header(out, "dsv4_request_success_total", "counter", "Finished samples by finish reason (stop, length, abort, error)");
  for (const auto& [k, v] : finished_)
    out += fmt::format("dsv4_request_success_total{{finished_reason=\"{}\"}} {}\n", escape_label(k), v);

  scalar(out, "dsv4_requests_total", "counter", "Scheduler requests finished (one per prompt of an API request)",
         static_cast<double>(requests_));
  scalar(out, "dsv4_prompt_tokens_total", "counter", "Prompt tokens of finished requests", static_cast<double>(prompt_tokens_));
  scalar(out, "dsv4_generation_tokens_total", "counter", "Generated tokens of finished requests",
         static_cast<double>(generation_tokens_));

  const SchedulerStats z{};
  const SchedulerStats& s = stats ? *stats : z;
  scalar(out, "dsv4_num_requests_running", "gauge", "Sequences holding state in the backend", static_cast<double>(s.running));
  scalar(out, "dsv4_num_requests_waiting", "gauge", "Sequences queued (or preempted) waiting to run", static_cast<double>(s.waiting));
  scalar(out, "dsv4_state_memory_used_bytes", "gauge", "Sequence-state memory in use (KV and compressor state)",
         static_cast<double>(s.state_used));
  scalar(out, "dsv4_state_memory_budget_bytes", "gauge", "Sequence-state memory budget (0 = unlimited)",
         static_cast<double>(s.state_budget));
  scalar(out, "dsv4_scheduler_steps_total", "counter", "Engine steps run", static_cast<double>(s.steps));
  scalar(out, "dsv4_num_preemptions_total", "counter", "Sequences preempted for memory (recomputed later)",
         static_cast<double>(s.preemptions));
  scalar(out, "dsv4_scheduler_prompt_tokens_total", "counter", "Tokens prefilled by the scheduler (recomputation included)",
         static_cast<double>(s.prompt_tokens));

  ttft_.render(out, "dsv4_time_to_first_token_seconds", "Submit to first generated token (sample 0)");
  itl_.render(out, "dsv4_inter_token_latency_seconds", "Time between consecutive generated tokens (sample 0)");
  e2e_.render(out, "dsv4_e2e_request_latency_seconds", "Submit to the last sample finished");
  queue_.render(out, "dsv4_request_queue_time_seconds", "Submit to first scheduled");
  return out;
}

}  // namespace dsv4::server
