// `dsv4 generate`: prefill a prompt (text through the model's tokenizer, BOS prepended, or raw ids)
// and stream the continuation to stdout; `--ids-only` prints the new ids comma-separated on one
// line instead. Progress and timings go to stderr through the Logger.
#include <fmt/format.h>

#include <cstdio>

#include "args.hpp"
#include "commands.hpp"
#include "dsv4/engine.hpp"
#include "dsv4/error.hpp"
#include "dsv4/generate.hpp"
#include "dsv4/tokenizer.hpp"

namespace dsv4::cli {
int cmd_generate(const Args& args) {
  Flags f(args,
          {"model", "prompt", "prompt-ids", "max-new-tokens", "temperature", "top-p", "top-k", "min-p", "seed",
           "experts-per-token", "backend", "backend-params", "threads", "indexer-ties", "repetition-penalty", "frequency-penalty", "presence-penalty",
           "stop", "prefill-chunk", "numerics", "device", "devices"},
          {"ids-only", "ignore-eos"});
  if (f.has("prompt") == f.has("prompt-ids")) fail(Status::invalid_argument, "give exactly one of --prompt or --prompt-ids");
  const Logger log = Logger::from_env();
  LoadOptions opt;
  opt.backend = f.get("backend", "cpu");
  opt.experts_per_token = static_cast<int>(f.get_int("experts-per-token", 0));
  opt.numerics = parse_numerics(f.get("numerics", "reference"));
  opt.device_ids = f.get_devices();
  // CPU-only settings go to the backend as key/value settings (it checks them).
  if (f.has("threads")) opt.backend_params.emplace_back("threads", f.get("threads"));
  if (f.has("indexer-ties")) opt.backend_params.emplace_back("indexer_ties", f.get("indexer-ties"));
  if (f.has("backend-params")) add_backend_params(f.get("backend-params"), opt.backend_params);
  opt.load_tokenizer = true;
  auto model = Model::load(f.require("model"), opt, log);
  const Tokenizer* tok = model->tokenizer();

  std::vector<int32_t> prompt;
  if (f.has("prompt")) {
    if (!tok) fail(Status::invalid_argument, "--prompt needs a tokenizer.json in the model folder (use --prompt-ids)");
    prompt.push_back(model->config().bos_token_id);
    const auto ids = tok->encode(f.get("prompt"));
    prompt.insert(prompt.end(), ids.begin(), ids.end());
  } else {
    prompt = f.get_id_list("prompt-ids");
  }

  GenerateParams gp;
  gp.max_new_tokens = static_cast<int>(f.get_int("max-new-tokens", 64));
  gp.sampler.temperature = static_cast<float>(f.get_double("temperature", 1.0));
  gp.sampler.top_p = static_cast<float>(f.get_double("top-p", 1.0));
  gp.sampler.top_k = static_cast<int>(f.get_int("top-k", 0));
  gp.sampler.min_p = static_cast<float>(f.get_double("min-p", 0.0));
  gp.sampler.repetition_penalty = static_cast<float>(f.get_double("repetition-penalty", 1.0));
  gp.sampler.frequency_penalty = static_cast<float>(f.get_double("frequency-penalty", 0.0));
  gp.sampler.presence_penalty = static_cast<float>(f.get_double("presence-penalty", 0.0));
  gp.sampler.seed = static_cast<uint64_t>(f.get_int("seed", 0));
  gp.stop_on_eos = !f.has("ignore-eos");
  gp.eos_id = tok ? tok->eos_id() : model->config().eos_token_id;
  gp.prefill_chunk = static_cast<int>(f.get_int("prefill-chunk", 0));
  if (f.has("stop")) gp.stop_strings.push_back(f.get("stop"));
  const bool ids_only = f.has("ids-only") || !tok;

  auto session = model->create_session();
  log.info("prefill: {} prompt tokens", prompt.size());
  const GenerateResult r = generate(*session, tok, prompt, gp, [&](int32_t, std::string_view piece) {
    if (!ids_only && !piece.empty()) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    return true;
  });
  if (ids_only) {
    std::string line;
    for (size_t i = 0; i < r.tokens.size(); ++i) line += (i ? "," : "") + std::to_string(r.tokens[i]);
    fmt::print("{}\n", line);
  } else {
    fmt::print("\n");
  }
  const size_t decoded = r.tokens.size() - (r.tokens.empty() ? 0 : 1);  // the first comes from the prefill
  log.info("prefill {} tokens in {:.3f} s ({:.1f} tokens/s); decode {} tokens in {:.3f} s ({:.2f} tokens/s); stop: {}",
           r.prompt_tokens, r.prefill_seconds, r.prompt_tokens / std::max(1e-9, r.prefill_seconds), decoded,
           r.decode_seconds, decoded / std::max(1e-9, r.decode_seconds), stop_reason_name(r.reason));
  return 0;
}

}  // namespace dsv4::cli
