// `dsv4`: one command with subcommands for people and for acceptance checks.
#include <fmt/format.h>

#include <cstring>
#include <exception>

#include "commands.hpp"
#include "dsv4/error.hpp"

namespace {
struct Command {
  const char* name;
  int (*fn)(const dsv4::cli::Args&);
  const char* help;
};
constexpr Command kCommands[] = {
    {"inspect", dsv4::cli::cmd_inspect, "inspect <model-dir>: config, layer schedule, tensor census, validation"},
    {"make-model", dsv4::cli::cmd_make_model, "make-model --preset tiny|flash [--layers N] [--experts N] [--experts-per-token K] [--seed S] --out DIR"},
    {"tokenize", dsv4::cli::cmd_tokenize, "tokenize --tokenizer F (--text T | --jsonl F | --decode 1,2,3 | --decode-jsonl F) [--add-special] [--skip-special]"},
    {"chat-template", dsv4::cli::cmd_chat_template, "chat-template --request FILE.json: print the prompt string"},
    {"parse-completion", dsv4::cli::cmd_parse_completion, "parse-completion --thinking-mode chat|thinking [--lenient] < completion.txt"},
    {"eval-logits", dsv4::cli::cmd_eval_logits, "eval-logits --model DIR --input REF.safetensors --out OUT.safetensors [--chunks 37,1] [--experts-per-token K] [--backend cpu|cuda] [--backend-params k=v,...] [--device N | --devices 0,1] [--numerics reference|official] [--threads N] [--indexer-ties torch-cpu|lowest] [--ep-ranks N] [--ep-combine partial|exact]"},
    {"generate", dsv4::cli::cmd_generate, "generate --model DIR (--prompt T | --prompt-ids 0,5,9) [--max-new-tokens N] [--temperature T] [--top-p P] [--top-k K] [--min-p P] [--repetition-penalty R] [--frequency-penalty F] [--presence-penalty P] [--stop S] [--seed S] [--ids-only] [--experts-per-token K] [--prefill-chunk N] [--ignore-eos] [--indexer-ties lowest|torch-cpu] [--threads N] [--backend cpu|cuda] [--backend-params k=v,...] [--device N | --devices 0,1] [--numerics reference|official]"},
    {"calibrate", dsv4::cli::cmd_calibrate, "calibrate --model DIR (--text FILE | --ids-file FILE) --out usage.json [--max-tokens N] [--chunk N] [--threads N] [--experts-per-token K] [--plan placement.json --expert-memory GB]: router statistics (and the expert placement they imply) for the single-GPU offload"},
    {"serve", dsv4::cli::cmd_serve, "serve MODEL_DIR [--host H] [--port P] [--served-model-name N] [--backend cpu|cuda|null] [--api-key K] [--max-num-seqs N] [--max-model-len N] ... (OpenAI-compatible HTTP server; serve --help)"},
};

int usage(std::FILE* out) {
  fmt::print(out, "usage: dsv4 <command> [args]\n\ncommands:\n");
  for (const auto& c : kCommands) fmt::print(out, "  {}\n", c.help);
  return out == stdout ? 0 : 2;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage(stderr);
  if (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help"))
    return usage(stdout);
  dsv4::cli::Args args(argv + 2, argv + argc);
  for (const auto& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    try {
      return c.fn(args);
    } catch (const dsv4::Error& e) {
      fmt::print(stderr, "dsv4 {}: error: {}\n", c.name, e.what());
      return 1;
    } catch (const std::exception& e) {
      fmt::print(stderr, "dsv4 {}: internal error: {}\n", c.name, e.what());
      return 1;
    }
  }
  fmt::print(stderr, "dsv4: unknown command '{}'\n", argv[1]);
  return usage(stderr);
}
