// `dsv4 calibrate`: router statistics for the single-GPU offload (dsv4/placement.hpp). Runs text
// (through the model's tokenizer, or raw ids) through the CPU backend in chunks and counts how often
// each (layer, routed expert) is chosen — hash-routed layers included, their experts following from
// the token ids — then writes the usage file and, given an expert budget, the placement it implies
// (the most used records resident, the rest in host memory).
//   dsv4 calibrate --model DIR (--text FILE | --ids-file FILE) --out usage.json
//                  [--max-tokens N] [--chunk N] [--threads N] [--experts-per-token K]
//                  [--plan placement.json --expert-memory GB]
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

#include "args.hpp"
#include "commands.hpp"
#include "dsv4/backend.hpp"
#include "dsv4/cpu/cpu_backend.hpp"
#include "dsv4/engine.hpp"
#include "dsv4/error.hpp"
#include "dsv4/json_limits.hpp"
#include "dsv4/placement.hpp"
#include "dsv4/safetensors.hpp"
#include "dsv4/tokenizer.hpp"

namespace dsv4::cli {
namespace {

constexpr uint64_t kMaxInputBytes = 1ull << 30;

// Token ids separated by commas and/or white space.
std::vector<int32_t> read_ids(const std::string& path, int64_t vocab) {
  const std::string text = read_file_bounded(path, kMaxInputBytes);
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    if (std::isspace(static_cast<unsigned char>(text[i])) || text[i] == ',') {
      ++i;
      continue;
    }
    size_t j = i;
    int64_t v = 0;
    while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j])) && j - i < 12) v = v * 10 + (text[j++] - '0');
    if (j == i || (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j])) && text[j] != ','))
      fail(Status::format, "'{}': byte {}: expected a token id (digits separated by commas or spaces)", path, i);
    if (v >= vocab) fail(Status::format, "'{}': token id {} is outside the vocabulary [0, {})", path, v, vocab);
    ids.push_back(static_cast<int32_t>(v));
    i = j;
  }
  return ids;
}

// Bytes of one routed-expert record (w1, w2, w3 and their scales) of layer 0, expert 0.
int64_t record_bytes(const Checkpoint& ck) {
  int64_t b = 0;
  for (const std::string& n : ck.names())
    if (n.rfind("layers.0.ffn.experts.0.", 0) == 0) b += static_cast<int64_t>(ck.get(n).nbytes);
  if (b == 0) fail(Status::format, "checkpoint '{}' holds no tensor of layers.0.ffn.experts.0", ck.dir());
  return b;
}

}  // namespace

int cmd_calibrate(const Args& args) {
  Flags f(args, {"model", "text", "ids-file", "out", "max-tokens", "chunk", "threads", "experts-per-token", "plan",
                 "expert-memory"});
  const Logger log = Logger::from_env();
  if (f.has("text") == f.has("ids-file")) fail(Status::invalid_argument, "give --text FILE or --ids-file FILE");
  if (f.has("plan") != f.has("expert-memory"))
    fail(Status::invalid_argument, "--plan FILE and --expert-memory GB go together");
  const std::string model_dir = f.require("model"), out = f.require("out");
  const int64_t max_tokens = f.get_int("max-tokens", 65536), chunk = f.get_int("chunk", 512);
  if (max_tokens < 1 || chunk < 1) fail(Status::invalid_argument, "--max-tokens and --chunk must be ≥ 1");
  LoadOptions opt;
  opt.backend = "cpu";
  opt.experts_per_token = static_cast<int>(f.get_int("experts-per-token", 0));
  if (f.has("threads")) opt.backend_params.emplace_back("threads", f.get("threads"));
  opt.load_tokenizer = f.has("text");
  auto model = Model::load(model_dir, opt, log);
  const ModelConfig& cfg = model->config();

  std::vector<int32_t> ids;
  if (f.has("text")) {
    const Tokenizer* tok = model->tokenizer();
    if (!tok) fail(Status::invalid_argument, "--text needs a tokenizer.json in the model folder (use --ids-file)");
    ids = tok->encode(read_file_bounded(f.get("text"), kMaxInputBytes));
  } else {
    ids = read_ids(f.get("ids-file"), cfg.vocab_size);
  }
  if (ids.empty()) fail(Status::invalid_argument, "calibrate: the input holds no tokens");
  if (static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(static_cast<size_t>(max_tokens));

  ExpertUsage usage = empty_usage(cfg);
  auto& cpu = dynamic_cast<cpu::CpuBackend&>(model->backend());
  cpu.set_expert_usage(&usage);
  // Sequences of at most max_context tokens (a fresh one each), run in chunks of `chunk`.
  const int64_t per_seq = std::max<int64_t>(1, std::min<int64_t>(cfg.max_position_embeddings, 16384));
  for (size_t s0 = 0; s0 < ids.size(); s0 += static_cast<size_t>(per_seq)) {
    const size_t s1 = std::min(ids.size(), s0 + static_cast<size_t>(per_seq));
    const SeqHandle h = cpu.create_sequence(static_cast<int64_t>(s1 - s0));
    for (size_t p = s0; p < s1; p += static_cast<size_t>(chunk)) {
      ForwardChunk c;
      c.seq = h;
      c.tokens = std::span<const int32_t>(ids).subspan(p, std::min(s1 - p, static_cast<size_t>(chunk)));
      c.logits = LogitsMode::none;
      const StepResult r = cpu.forward({&c, 1});
      if (!r.ok()) fail(Status::internal, "calibrate: forward failed: {}", r.chunks.empty() ? "" : r.chunks[0].error);
      log.info("calibrate: {} / {} tokens", p + c.tokens.size(), ids.size());
    }
    cpu.release_sequence(h);
  }
  cpu.set_expert_usage(nullptr);
  write_usage(out, usage);
  log.info("calibrate: {} tokens, {} MoE layers × {} experts → '{}'", usage.tokens, usage.layers, usage.experts, out);

  if (f.has("plan")) {
    const double gb = std::stod(f.get("expert-memory"));
    if (!(gb >= 0) || gb > 1e6) fail(Status::invalid_argument, "--expert-memory: '{}' GB (expected ≥ 0)", f.get("expert-memory"));
    const Checkpoint ck(model_dir);
    const ExpertPlacement p = plan_placement(cfg, &usage, record_bytes(ck), static_cast<int64_t>(gb * 1e9));
    write_placement(f.get("plan"), p);
    log.info("calibrate: {} of {} expert records resident ({} B each, budget {:.3f} GB), {} in host memory → '{}'",
             p.resident(), p.layers * p.experts, p.record_bytes, gb, p.offloaded_count(), f.get("plan"));
  }
  return 0;
}

}  // namespace dsv4::cli
