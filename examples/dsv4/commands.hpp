// Subcommands of the `dsv4` tool. Each lives in its own cmd_<name>.cpp and returns the process
// exit code (0 success, 1 bad input / failure, 2 usage error). main.cpp dispatches by name.
#pragma once
#include <string>
#include <vector>

namespace dsv4::cli {
using Args = std::vector<std::string>;  // arguments after the subcommand name

int cmd_inspect(const Args& args);         // cmd_inspect.cpp      (issue: foundation)
int cmd_make_model(const Args& args);      // cmd_make_model.cpp   (issue: foundation)
int cmd_tokenize(const Args& args);        // cmd_tokenize.cpp     (issue: tokenizer)
int cmd_chat_template(const Args& args);   // cmd_chat_template.cpp (issue: chat format)
int cmd_parse_completion(const Args& args);// cmd_chat_template.cpp (issue: chat format)
int cmd_eval_logits(const Args& args);     // cmd_eval_logits.cpp  (issue: CPU forward)
int cmd_generate(const Args& args);        // cmd_generate.cpp     (issue: CPU forward)
int cmd_serve(const Args& args);           // cmd_serve.cpp        (issue: OpenAI server)
int cmd_calibrate(const Args& args);       // cmd_calibrate.cpp    (issue: single-H200 offload)
}  // namespace dsv4::cli
