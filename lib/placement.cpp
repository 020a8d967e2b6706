// Expert placement under an HBM budget, and its usage / placement files (dsv4/placement.hpp).
#include "dsv4/placement.hpp"

#include <algorithm>
#include <fstream>
#include <numeric>
#include <nlohmann/json.hpp>

#include "dsv4/error.hpp"
#include "dsv4/json_limits.hpp"

namespace dsv4 {
namespace {
using json = nlohmann::json;
constexpr uint64_t kMaxFileBytes = 64ull << 20;

int64_t moe_layers(const ModelConfig& cfg) { return int64_t{cfg.num_layers} + cfg.num_mtp_layers; }

const json& field(const json& j, const char* key, const std::string& path) {
  if (!j.is_object() || !j.contains(key)) fail(Status::format, "'{}': field '{}' is missing", path, key);
  return j.at(key);
}
int64_t int_field(const json& j, const char* key, const std::string& path, int64_t lo, int64_t hi) {
  const json& v = field(j, key, path);
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
    fail(Status::format, "'{}': field '{}' is {} (expected an integer in [{}, {}])", path, key, json_brief(v), lo, hi);
  return v.get<int64_t>();
}
void check_header(const json& j, const char* format, const std::string& path, const ModelConfig& cfg) {
  const json& f = field(j, "format", path);
  if (!f.is_string() || f.get<std::string>() != format)
    fail(Status::format, "'{}': field 'format' is {} (expected \"{}\")", path, json_brief(f), format);
  int_field(j, "version", path, 1, 1);
  const int64_t L = int_field(j, "layers", path, 0, 1 << 20), E = int_field(j, "experts", path, 0, 1 << 20);
  if (L != moe_layers(cfg) || E != cfg.n_routed_experts)
    fail(Status::format, "'{}': {} layers × {} experts, but the model has {} MoE layers × {} routed experts", path, L, E,
         moe_layers(cfg), cfg.n_routed_experts);
}
void write_json(const std::string& path, const json& j) {
  std::ofstream out(path);
  if (!out) fail(Status::io, "cannot write '{}'", path);
  out << j.dump(1) << "\n";
  if (!out) fail(Status::io, "error writing '{}'", path);
}

}  // namespace

ExpertUsage empty_usage(const ModelConfig& cfg) {
  ExpertUsage u;
  u.layers = moe_layers(cfg);
  u.experts = cfg.n_routed_experts;
  u.top_k = cfg.experts_per_token;
  u.counts.assign(static_cast<size_t>(u.layers * u.experts), 0);
  return u;
}

int64_t ExpertPlacement::resident() const {
  return static_cast<int64_t>(std::count(offloaded.begin(), offloaded.end(), uint8_t{0}));
}

ExpertPlacement plan_placement(const ModelConfig& cfg, const ExpertUsage* usage, int64_t record_bytes,
                               int64_t budget_bytes) {
  const int64_t L = moe_layers(cfg), E = cfg.n_routed_experts, n = L * E;
  if (record_bytes <= 0 || budget_bytes < 0)
    fail(Status::invalid_argument, "placement: record of {} B, budget {} B (expected > 0 and ≥ 0)", record_bytes,
         budget_bytes);
  if (usage && (usage->layers != L || usage->experts != E || static_cast<int64_t>(usage->counts.size()) != n))
    fail(Status::invalid_argument, "placement: usage statistics of {} layers × {} experts for a model of {} × {}",
         usage->layers, usage->experts, L, E);
  ExpertPlacement p;
  p.layers = L;
  p.experts = E;
  p.record_bytes = record_bytes;
  p.budget_bytes = budget_bytes;
  p.offloaded.assign(static_cast<size_t>(n), 1);
  const int64_t keep = std::min(n, budget_bytes / record_bytes);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  // Most used first; ties (and no statistics) in (layer, expert) order.
  if (usage)
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return usage->counts[static_cast<size_t>(a)] > usage->counts[static_cast<size_t>(b)];
    });
  for (int64_t i = 0; i < keep; ++i) p.offloaded[static_cast<size_t>(order[static_cast<size_t>(i)])] = 0;
  return p;
}

void write_usage(const std::string& path, const ExpertUsage& u) {
  json counts = json::array();
  for (int64_t l = 0; l < u.layers; ++l) {
    json row = json::array();
    for (int64_t e = 0; e < u.experts; ++e) row.push_back(u.at(l, e));
    counts.push_back(std::move(row));
  }
  write_json(path, {{"format", "dsv4-expert-usage"}, {"version", 1}, {"layers", u.layers}, {"experts", u.experts},
                    {"tokens", u.tokens}, {"top_k", u.top_k}, {"counts", std::move(counts)}});
}

ExpertUsage read_usage(const std::string& path, const ModelConfig& cfg) {
  const json j = parse_json_file(path, kMaxFileBytes);
  check_header(j, "dsv4-expert-usage", path, cfg);
  ExpertUsage u = empty_usage(cfg);
  u.tokens = int_field(j, "tokens", path, 0, int64_t{1} << 50);
  u.top_k = static_cast<int>(int_field(j, "top_k", path, 1, cfg.n_routed_experts));
  const json& c = field(j, "counts", path);
  if (!c.is_array() || static_cast<int64_t>(c.size()) != u.layers)
    fail(Status::format, "'{}': field 'counts' is {} (expected an array of {} rows)", path, json_brief(c), u.layers);
  for (int64_t l = 0; l < u.layers; ++l) {
    const json& row = c[static_cast<size_t>(l)];
    if (!row.is_array() || static_cast<int64_t>(row.size()) != u.experts)
      fail(Status::format, "'{}': counts[{}] is {} (expected an array of {} counts)", path, l, json_brief(row),
           u.experts);
    for (int64_t e = 0; e < u.experts; ++e) {
      const json& v = row[static_cast<size_t>(e)];
      if (!v.is_number_integer() || v.get<int64_t>() < 0)
        fail(Status::format, "'{}': counts[{}][{}] is {} (expected a count ≥ 0)", path, l, e, json_brief(v));
      u.at(l, e) = v.get<int64_t>();
    }
  }
  return u;
}

void write_placement(const std::string& path, const ExpertPlacement& p) {
  json off = json::array();
  for (int64_t l = 0; l < p.layers; ++l) {
    json row = json::array();
    for (int64_t e = 0; e < p.experts; ++e)
      if (p.is_offloaded(l, e)) row.push_back(e);
    off.push_back(std::move(row));
  }
  write_json(path, {{"format", "dsv4-expert-placement"}, {"version", 1}, {"layers", p.layers},
                    {"experts", p.experts}, {"record_bytes", p.record_bytes}, {"budget_bytes", p.budget_bytes},
                    {"resident", p.resident()}, {"offloaded", std::move(off)}});
}

ExpertPlacement read_placement(const std::string& path, const ModelConfig& cfg) {
  const json j = parse_json_file(path, kMaxFileBytes);
  check_header(j, "dsv4-expert-placement", path, cfg);
  ExpertPlacement p;
  p.layers = moe_layers(cfg);
  p.experts = cfg.n_routed_experts;
  p.record_bytes = int_field(j, "record_bytes", path, 1, int64_t{1} << 40);
  p.budget_bytes = int_field(j, "budget_bytes", path, 0, int64_t{1} << 50);
  p.offloaded.assign(static_cast<size_t>(p.layers * p.experts), 0);
  const json& off = field(j, "offloaded", path);
  if (!off.is_array() || static_cast<int64_t>(off.size()) != p.layers)
    fail(Status::format, "'{}': field 'offloaded' is {} (expected an array of {} rows)", path, json_brief(off),
         p.layers);
  for (int64_t l = 0; l < p.layers; ++l) {
    const json& row = off[static_cast<size_t>(l)];
    if (!row.is_array())
      fail(Status::format, "'{}': offloaded[{}] is {} (expected an array of expert ids)", path, l, json_brief(row));
    int64_t prev = -1;
    for (const json& v : row) {
      if (!v.is_number_integer() || v.get<int64_t>() <= prev || v.get<int64_t>() >= p.experts)
        fail(Status::format, "'{}': offloaded[{}] holds {} (expected ascending expert ids in [0, {}))", path, l,
             json_brief(v), p.experts);
      prev = v.get<int64_t>();
      p.offloaded[static_cast<size_t>(l * p.experts + prev)] = 1;
    }
  }
  const int64_t resident = int_field(j, "resident", path, 0, p.layers * p.experts);
  if (resident != p.resident())
    fail(Status::format, "'{}': field 'resident' is {} but 'offloaded' leaves {} records resident", path, resident,
         p.resident());
  return p;
}

}  // namespace dsv4
