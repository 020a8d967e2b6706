// `dsv4 chat-template --request FILE.json` prints the DeepSeek-V4 prompt for a request, byte for
// byte with no added newline; `dsv4 parse-completion --thinking-mode chat|thinking [--lenient]`
// reads a completion on stdin and prints the parsed assistant message as JSON. Bad input throws
// dsv4::Error (main.cpp prints it and exits 1).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>

#include "args.hpp"
#include "commands.hpp"
#include "dsv4/chat_format.hpp"
#include "dsv4/error.hpp"

namespace dsv4::cli {
namespace {

std::string read_all(std::istream& in) {
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_exact(const std::string& s) {
  if (std::fwrite(s.data(), 1, s.size(), stdout) != s.size() || std::fflush(stdout) != 0)
    fail(Status::io, "could not write to stdout");
}

}  // namespace

int cmd_chat_template(const Args& args) {
  Flags flags(args, {"request"});
  if (!flags.positional().empty()) fail(Status::invalid_argument, "unexpected argument '{}'", flags.positional()[0]);
  const std::string path = flags.require("request");
  std::string text;
  if (path == "-") {
    text = read_all(std::cin);
  } else {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail(Status::io, "cannot open request file {}", path);
    text = read_all(f);
  }
  const chat::Json request = chat::parse_json_limited(text, path.c_str());
  write_exact(chat::encode_request(request));
  return 0;
}

int cmd_parse_completion(const Args& args) {
  Flags flags(args, {"thinking-mode"}, {"lenient"});
  if (!flags.positional().empty()) fail(Status::invalid_argument, "unexpected argument '{}'", flags.positional()[0]);
  const chat::ThinkingMode mode = chat::parse_thinking_mode(flags.require("thinking-mode"));
  const chat::ParseMode parse_mode = flags.has("lenient") ? chat::ParseMode::lenient : chat::ParseMode::strict;
  std::ios::sync_with_stdio(false);
  const std::string text = read_all(std::cin);
  const chat::ParsedMessage msg = chat::parse_message_from_completion_text(text, mode, parse_mode);
  // Invalid UTF-8 (a completion cut inside a character) is replaced rather than failing the dump.
  write_exact(msg.to_json().dump(2, ' ', false, chat::Json::error_handler_t::replace) + "\n");
  return 0;
}

}  // namespace dsv4::cli
