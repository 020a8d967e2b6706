// `dsv4 eval-logits`: every `prompt{i}.input_ids` (I32 [T]) of the input file through the model in
// the given chunk schedule (the last size repeats; default one full chunk), writing
// `prompt{i}.logits` (F32 [T, vocab]) — the acceptance check against reference logits.
// `--indexer-ties` defaults to torch-cpu here: the reference files come from transformers on the
// CPU, whose topk tie rule this reproduces exactly for a full forward (see LoadOptions).
#include <fmt/format.h>

#include <chrono>
#include <map>
#include <regex>

#include "args.hpp"
#include "commands.hpp"
#include "dsv4/backend.hpp"
#include "dsv4/cpu/cpu_backend.hpp"
#include "dsv4/engine.hpp"
#include "dsv4/error.hpp"
#include "dsv4/quant.hpp"
#include "dsv4/safetensors.hpp"

namespace dsv4::cli {

int cmd_eval_logits(const Args& args) {
  Flags f(args, {"model", "input", "out", "chunks", "experts-per-token", "backend", "backend-params", "threads", "indexer-ties", "numerics", "device", "devices", "ep-ranks", "ep-combine"});
  const Logger log = Logger::from_env();
  LoadOptions opt;
  opt.backend = f.get("backend", "cpu");
  opt.experts_per_token = static_cast<int>(f.get_int("experts-per-token", 0));
  opt.numerics = parse_numerics(f.get("numerics", "reference"));
  opt.device_ids = f.get_devices();
  // torch-cpu ties reproduce the float64 fixtures (reference numerics); official numerics take the
  // official lowest-index rule.
  const std::string ties = f.get("indexer-ties", opt.numerics == Numerics::official ? "lowest" : "torch-cpu");
  if (ties != "lowest" && ties != "torch-cpu")
    fail(Status::invalid_argument, "--indexer-ties: '{}' (expected lowest or torch-cpu)", ties);
  if (opt.backend == "cpu") {  // CPU-only settings
    opt.backend_params.emplace_back("threads", std::to_string(f.get_int("threads", 0)));
    opt.backend_params.emplace_back("indexer_ties", ties);
    // Expert parallelism emulated over N ranks (docs/expert-parallel.md).
    if (f.has("ep-ranks")) opt.backend_params.emplace_back("ep_ranks", std::to_string(f.get_int("ep-ranks", 1)));
    if (f.has("ep-combine")) opt.backend_params.emplace_back("ep_combine", f.get("ep-combine"));
  } else if (opt.backend == "cuda") {
    // Expert parallelism over the --devices (NCCL), or N ranks sharing them (host copies); the CUDA
    // ranks combine their partial sums in rank order (the exact combine is the CPU emulation's).
    if (f.has("ep-ranks")) opt.backend_params.emplace_back("ep_ranks", std::to_string(f.get_int("ep-ranks", 1)));
    if (f.has("ep-combine") && f.get("ep-combine") != "partial")
      fail(Status::unsupported, "--ep-combine {}: the CUDA backend combines partial sums (partial); the exact "
                                "combine runs on --backend cpu", f.get("ep-combine"));
  } else if (f.has("ep-ranks") || f.has("ep-combine")) {
    fail(Status::unsupported, "--ep-ranks / --ep-combine: expert parallelism runs on --backend cpu (emulated) or cuda");
  }
  if (f.has("backend-params")) add_backend_params(f.get("backend-params"), opt.backend_params);
  opt.load_tokenizer = false;
  std::vector<int64_t> chunks;
  if (f.has("chunks"))
    for (long long c : f.get_int_list("chunks", 1, LLONG_MAX)) chunks.push_back(c);
  const std::string out_path = f.require("out");
  SafetensorsFile input(f.require("input"));
  auto model = Model::load(f.require("model"), opt, log);
  const int64_t V = model->config().vocab_size;

  std::map<int, const TensorView*> prompts;
  const std::regex re(R"(prompt(\d+)\.input_ids)");
  for (const TensorView& t : input.tensors()) {
    std::smatch m;
    if (std::regex_match(t.name, m, re)) prompts[std::stoi(m[1].str())] = &t;
  }
  if (prompts.empty()) fail(Status::format, "'{}' holds no prompt{{i}}.input_ids tensor", input.path());

  SafetensorsWriter out;
  for (const auto& [i, t] : prompts) {
    const std::vector<int32_t> ids = to_i32(*t);
    const int64_t T = static_cast<int64_t>(ids.size());
    if (T == 0) fail(Status::format, "tensor '{}' is empty", t->name);
    // On the CPU backend the chunks go through forward_oracle with oracle_length = T: with
    // torch-cpu ties every chunk then selects what the reference's full forward selected.
    auto session = model->create_session(T);
    std::vector<float> logits(static_cast<size_t>(T * V)), rows;
    const auto t0 = std::chrono::steady_clock::now();
    int64_t pos = 0;
    size_t ci = 0;
    while (pos < T) {
      const int64_t n = std::min(T - pos, chunks.empty() ? T : chunks[std::min(ci, chunks.size() - 1)]);
      ++ci;
      ForwardChunk c;
      c.seq = session->handle();
      c.tokens = std::span<const int32_t>(ids).subspan(static_cast<size_t>(pos), static_cast<size_t>(n));
      c.logits = LogitsMode::all;
      c.logits_out = &rows;
      try {
        StepResult r;
        if (auto* cpu_be = dynamic_cast<cpu::CpuBackend*>(&model->backend())) {
          const cpu::OracleChunk extra{T, nullptr};
          r = cpu_be->forward_oracle({&c, 1}, {&extra, 1});
        } else {
          r = model->backend().forward({&c, 1});
        }
        if (r.chunks.at(0).status != ChunkStatus::ok) fail(r.chunks[0].error_status, "{}", r.chunks[0].error);
      } catch (const Error& e) {
        fail(e.status(), "tensor '{}': {}", t->name, e.what());
      }
      std::copy(rows.begin(), rows.end(), logits.begin() + pos * V);
      pos += n;
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log.info("prompt{}: {} tokens in {} chunks, {:.3f} s ({:.1f} tokens/s)", i, T, ci, secs, T / secs);
    out.add_values(fmt::format("prompt{}.logits", i), DType::F32, {T, V}, logits);
  }
  out.write(out_path);
  return 0;
}

}  // namespace dsv4::cli
