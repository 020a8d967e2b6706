// End-to-end check from messages to token ids: each encode vector's prompt is rebuilt with
// encode_messages and tokenized (no special tokens added: the BOS is already in the string) with
// the reconstructed V4 tokenizer; ids must equal chat-token-cases.jsonl. Parse completions are
// tokenized too. Skips when ../shared/data/tokenizer-v4-reconstructed.json is absent.
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "catch.hpp"
#include "dsv4/chat_format.hpp"
#include "dsv4/tokenizer.hpp"

using dsv4::chat::Json;
namespace chat = dsv4::chat;

namespace {
using dsv4_test::read_file;
}  // namespace

TEST_CASE("chat tokens: prompts built by encode_messages tokenize to the reference ids", "[chat][tokenizer]") {
  const std::string tok_path = dsv4_test::shared_dir() + "/data/tokenizer-v4-reconstructed.json";
  if (!std::filesystem::exists(tok_path)) {
    INFO("tokenizer-v4-reconstructed.json not found, skipping");
    return;
  }
  const auto tok = dsv4::Tokenizer::from_file(tok_path);
  const std::string dir = dsv4_test::source_dir() + "/tests/data/chat-vectors/";
  const Json index = Json::parse(read_file(dir + "index.json"));
  std::map<std::string, Json> entries;
  for (const auto& e : index["vectors"]) entries[e["id"].get<std::string>()] = e;

  std::istringstream lines(read_file(dir + "chat-token-cases.jsonl"));
  std::string line;
  size_t encode_cases = 0, parse_cases = 0;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    const Json c = Json::parse(line);
    const std::string id = c["vector"].get<std::string>();
    INFO(id);
    REQUIRE(entries.count(id) == 1);
    const Json v = Json::parse(read_file(dir + entries[id]["file"].get<std::string>()));
    std::string text;
    if (c["kind"] == "encode") {
      const Json& p = v["params"];
      chat::EncodeOptions o;
      o.drop_thinking = p.value("drop_thinking", true);
      if (!p["reasoning_effort"].is_null()) o.reasoning_effort = p["reasoning_effort"].get<std::string>();
      o.revision = chat::parse_revision(entries[id]["encoder_revision"].get<std::string>());
      text = chat::encode_messages(v["messages"], p["thinking_mode"].get<std::string>(), o);
      ++encode_cases;
    } else {
      text = v["completion"].get<std::string>();
      ++parse_cases;
    }
    CHECK(text == c["text"].get<std::string>());
    const std::vector<int32_t> ids = tok.encode(text, /*add_special=*/false);
    CHECK(ids == c["ids"].get<std::vector<int32_t>>());
    if (c["kind"] == "encode") CHECK(ids.front() == 0);  // exactly one BOS, from the string
  }
  CHECK(encode_cases >= 30);
  CHECK(parse_cases >= 20);
}
