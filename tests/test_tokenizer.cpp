// Tokenizer tests: the shared golden id files (exact ids, with and without special tokens, and
// decode round trips), StreamDecoder, BPE merge order on a hand-made vocabulary, added-token
// options, loader errors, invalid UTF-8, and concurrent encode.
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "dsv4/error.hpp"
#include "dsv4/tokenizer.hpp"

namespace {

std::string tok_dir() { return dsv4_test::source_dir() + "/data/tokenizer"; }

const dsv4::Tokenizer& v3() {
  static const dsv4::Tokenizer t = dsv4::Tokenizer::from_file(tok_dir() + "/tokenizer.json");
  return t;
}
const dsv4::Tokenizer& v4() {
  static const dsv4::Tokenizer t = dsv4::Tokenizer::from_file(tok_dir() + "/tokenizer-v4-reconstructed.json");
  return t;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

std::string stream_decode(const dsv4::Tokenizer& t, const std::vector<int32_t>& ids) {
  dsv4::StreamDecoder sd(t);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = sd.push(id);
    // Every piece is complete UTF-8 on its own: re-decoding it through the lossy path is a no-op
    // only if it contains no partial sequence, which we check by counting continuation bytes.
    if (!piece.empty()) {
      const auto lead = static_cast<unsigned char>(piece.back());
      const bool ends_mid = (lead & 0xC0) == 0xC0;  // a lead byte as the very last byte
      CHECK(!ends_mid);
    }
    out += piece;
  }
  return out + sd.flush();
}

// Minimal byte-level BPE with the given merges over the letters a..e (all printable, so the
// byte-level spelling is the letter itself).
std::string tiny_bpe_json(const std::vector<std::string>& merges, const std::string& extra_vocab,
                          const std::string& added = "[]", const std::string& post = "null") {
  std::string vocab = R"({"a":0,"b":1,"c":2,"d":3,"e":4)" + extra_vocab + "}";
  std::string m;
  for (size_t i = 0; i < merges.size(); ++i) m += (i ? ",\"" : "\"") + merges[i] + "\"";
  return R"({"version":"1.0","added_tokens":)" + added +
         R"(,"normalizer":null,"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true},)"
         R"("post_processor":)" + post + R"(,"decoder":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":)" + vocab +
         R"(,"merges":[)" + m + "]}}";
}

}  // namespace

TEST_CASE("tokenizer: golden ids of the shared data, both tokenizers") {
  const std::string shared = dsv4_test::shared_dir() + "/data";
  if (!std::ifstream(shared + "/tokenizer-cases.jsonl")) {
    WARN("../shared/data not found; skipping the golden id files");
    return;
  }
  struct File {
    const char* name;
    const dsv4::Tokenizer* tok;
  };
  const File files[] = {{"tokenizer-cases.jsonl", &v3()},
                        {"tokenizer-v4-cases.jsonl", &v4()},
                        {"chat-token-cases.jsonl", &v4()}};
  for (const File& f : files) {
    const auto rows = read_jsonl(shared + "/" + f.name);
    REQUIRE(rows.size() > 50);
    size_t exact = 0, exact_special = 0, round_trip = 0, streamed = 0;
    for (const auto& row : rows) {
      const std::string text = row.at("text").get<std::string>();
      const auto want = row.at("ids").get<std::vector<int32_t>>();
      const auto got = f.tok->encode(text);
      INFO(f.name << ": " << text);
      CHECK(got == want);
      exact += got == want;
      if (row.contains("ids_with_special")) {
        const auto got_sp = f.tok->encode(text, /*add_special=*/true);
        CHECK(got_sp == row.at("ids_with_special").get<std::vector<int32_t>>());
        exact_special += got_sp == row.at("ids_with_special").get<std::vector<int32_t>>();
      } else {
        ++exact_special;
      }
      const std::string dec = f.tok->decode(got);
      CHECK(dec == text);
      if (row.contains("decoded")) CHECK(dec == row.at("decoded").get<std::string>());
      round_trip += dec == text;
      const std::string st = stream_decode(*f.tok, got);
      CHECK(st == dec);
      streamed += st == dec;
    }
    CHECK(exact == rows.size());
    CHECK(exact_special == rows.size());
    CHECK(round_trip == rows.size());
    CHECK(streamed == rows.size());
  }
}

TEST_CASE("tokenizer: vocabulary facts and special tokens inside text") {
  const auto& t = v4();
  CHECK(t.vocab_size() == 129280);
  CHECK(v3().vocab_size() == 128815);
  CHECK(t.bos_id() == *t.token_to_id("<｜begin▁of▁sentence｜>"));
  CHECK(t.eos_id() == *t.token_to_id("<｜end▁of▁sentence｜>"));
  CHECK(t.token_to_id("<think>") == 128821);
  CHECK(t.token_to_id("</think>") == 128822);
  CHECK(t.token_to_id("｜DSML｜") == 128825);
  CHECK(!t.token_to_id("no such token").has_value());
  CHECK(t.id_to_token(*t.token_to_id("Ġthe")) == "Ġthe");
  CHECK(t.is_special(t.bos_id()));
  CHECK(!t.is_special(*t.token_to_id("<think>")));

  // Added tokens are cut out wherever they occur, and the text around them is encoded on its own.
  const std::string left = "Hi there", right = " and more";
  const auto ids = t.encode(left + "<think>" + right);
  std::vector<int32_t> want = t.encode(left);
  want.push_back(128821);
  const auto r = t.encode(right);
  want.insert(want.end(), r.begin(), r.end());
  CHECK(ids == want);

  // skip_special drops BOS/EOS but keeps non-special added tokens.
  const auto with_bos = t.encode("<｜begin▁of▁sentence｜>x<think>y<｜end▁of▁sentence｜>");
  CHECK(with_bos.front() == t.bos_id());
  CHECK(t.decode(with_bos, /*skip_special=*/true) == "x<think>y");
}

TEST_CASE("tokenizer: BPE applies merges by rank, leftmost first") {
  // "abc": rank 0 is b+c, so a+b (rank 1) never applies and a+bc (rank 2) finishes the word.
  auto t1 = dsv4::Tokenizer::from_json(tiny_bpe_json({"b c", "a b", "a bc"}, R"(,"ab":5,"bc":6,"abc":7)"), "t1");
  CHECK(t1.encode("abc") == std::vector<int32_t>{7});
  // With a+b first the word ends as ab + c (no merge "ab c").
  auto t2 = dsv4::Tokenizer::from_json(tiny_bpe_json({"a b", "b c", "a bc"}, R"(,"ab":5,"bc":6,"abc":7)"), "t2");
  CHECK(t2.encode("abc") == std::vector<int32_t>{5, 2});
  // Equal pairs: the leftmost merges first ("aaa" → aa + a).
  auto t3 = dsv4::Tokenizer::from_json(tiny_bpe_json({"a a"}, R"(,"aa":5)"), "t3");
  CHECK(t3.encode("aaa") == std::vector<int32_t>{5, 0});
  CHECK(t3.encode("aaaa") == std::vector<int32_t>{5, 5});
  // Long words go through the same heap path and agree with the pairwise expectation.
  CHECK(t3.encode(std::string(1001, 'a')).size() == 501);
  // The post-processor's template adds BOS / EOS only with add_special.
  const std::string post =
      R"({"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"e","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],)"
      R"("pair":[],"special_tokens":{"e":{"id":"e","ids":[4],"tokens":["e"]}}})";
  auto t4 = dsv4::Tokenizer::from_json(tiny_bpe_json({"a b"}, R"(,"ab":5)", "[]", post), "t4");
  CHECK(t4.encode("ab") == std::vector<int32_t>{5});
  CHECK(t4.encode("ab", true) == std::vector<int32_t>{4, 5});
  CHECK(t4.bos_id() == 4);
}

TEST_CASE("tokenizer: added token lstrip / rstrip / single_word") {
  const std::string added =
      R"([{"id":10,"content":"<L>","single_word":false,"lstrip":true,"rstrip":false,"normalized":false,"special":true},)"
      R"({"id":11,"content":"<R>","single_word":false,"lstrip":false,"rstrip":true,"normalized":false,"special":true},)"
      R"({"id":12,"content":"dd","single_word":true,"lstrip":false,"rstrip":false,"normalized":true,"special":false}])";
  auto t = dsv4::Tokenizer::from_json(tiny_bpe_json({}, R"(,"Ġ":8,"<":20,">":21,"L":22,"R":23)", added), "flags");
  const int32_t sp = *t.token_to_id("Ġ");
  CHECK(t.encode("a  <L>b") == std::vector<int32_t>{0, 10, 1});      // spaces before <L> are absorbed
  CHECK(t.encode("a<R>  b") == std::vector<int32_t>{0, 11, 1});      // spaces after <R> are absorbed
  CHECK(t.encode("a <R>") == std::vector<int32_t>{0, sp, 11});       // ... but not the ones before
  CHECK(t.encode("a dd b") == std::vector<int32_t>{0, sp, 12, sp, 1});  // a whole word: matched
  CHECK(t.encode("add") == std::vector<int32_t>{0, 3, 3});          // inside a word: not matched
}

TEST_CASE("tokenizer: StreamDecoder emits only complete UTF-8") {
  const auto& t = v3();
  const std::string text = "héllo ㉯ 世界 😀";  // ㉯ is three byte tokens
  const auto ids = t.encode(text);
  dsv4::StreamDecoder sd(t);
  std::string out;
  size_t empties = 0;
  for (int32_t id : ids) {
    const std::string piece = sd.push(id);
    empties += piece.empty();
    out += piece;
  }
  out += sd.flush();
  CHECK(out == text);
  // ㉯ is split over byte tokens, so some pushes must have been held back.
  CHECK(empties > 0);

  // A lone continuation byte decodes to U+FFFD, and so does a sequence cut short at flush().
  const int32_t b_80 = *t.token_to_id("Ģ");  // byte 0x80 in the byte-level alphabet
  const int32_t b_e4 = *t.token_to_id("ä");  // byte 0xE4, the lead byte of a 3-byte sequence
  CHECK(t.decode(std::vector<int32_t>{b_80}) == "\xEF\xBF\xBD");
  dsv4::StreamDecoder sd2(t);
  CHECK(sd2.push(b_e4).empty());
  CHECK(sd2.flush() == "\xEF\xBF\xBD");
  CHECK(t.decode(std::vector<int32_t>{b_e4, *t.token_to_id("a")}) == "\xEF\xBF\xBD" "a");
}

TEST_CASE("tokenizer: errors name the file, field or byte offset") {
  using dsv4::Status;
  auto status_of = [](auto&& fn) {
    try {
      fn();
    } catch (const dsv4::Error& e) {
      return e.status();
    }
    return Status::ok;
  };
  // The message of the dsv4::Error `fn` throws ("" if none), for substring checks that work with
  // both Catch2 v2 and v3 (whose string matchers differ).
  auto message_of = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const dsv4::Error& e) {
      return e.what();
    }
    return "";
  };
  auto has = [](const std::string& msg, const char* part) { return msg.find(part) != std::string::npos; };
  CHECK(status_of([] { dsv4::Tokenizer::from_file("/nonexistent/tokenizer.json"); }) == Status::io);
  CHECK(has(message_of([&] { dsv4::Tokenizer::from_file("/nonexistent/tokenizer.json"); }), "/nonexistent/tokenizer.json"));
  CHECK(status_of([] { dsv4::Tokenizer::from_json("{not json", "bad.json"); }) == Status::format);
  CHECK(has(message_of([&] { dsv4::Tokenizer::from_json(R"({"model":{"type":"BPE","merges":[]}})", "x.json"); }), "model.vocab"));
  CHECK(status_of([] { dsv4::Tokenizer::from_json(R"({"model":{"type":"WordPiece","vocab":{}}})", "wp.json"); }) ==
        Status::unsupported);
  {
    // A pre-tokenizer type we do not implement.
    std::string j = tiny_bpe_json({}, "");
    const std::string from = R"({"type":"ByteLevel","add_prefix_space":false,"use_regex":true})";
    j.replace(j.find(from), from.size(), R"({"type":"Whitespace"})");
    CHECK(status_of([&] { dsv4::Tokenizer::from_json(j, "ws.json"); }) == Status::unsupported);
    CHECK(has(message_of([&] { dsv4::Tokenizer::from_json(j, "ws.json"); }), "Whitespace"));
  }
  CHECK(status_of([] { dsv4::Tokenizer::from_json(tiny_bpe_json({"a z"}, ""), "m.json"); }) == Status::format);

  const auto& t = v3();
  CHECK(status_of([&] { t.encode("abc\xFF"); }) == Status::invalid_argument);
  CHECK(has(message_of([&] { t.encode("abc\xFF"); }), "byte offset 3"));
  CHECK(has(message_of([&] { t.encode("ok \xE4\xB8"); }), "byte offset 3"));  // truncated
  CHECK(has(message_of([&] { t.encode("\xED\xA0\x80"); }), "byte offset 0"));  // surrogate
  CHECK(status_of([&] { t.decode(std::vector<int32_t>{-1}); }) == Status::invalid_argument);
  CHECK(status_of([&] { t.decode(std::vector<int32_t>{static_cast<int32_t>(t.vocab_size())}); }) ==
        Status::invalid_argument);
}

TEST_CASE("tokenizer: concurrent encode gives the single-thread result") {
  const auto& t = v4();
  std::vector<std::string> texts;
  for (int i = 0; i < 64; ++i)
    texts.push_back("Thread text " + std::to_string(i * 7919) + " 世界 <｜User｜>héllo  \n\t" + std::string(i % 9, 'x') +
                    " 😀 ｜DSML｜ 12345678");
  std::vector<std::vector<int32_t>> want;
  for (const auto& s : texts) want.push_back(t.encode(s));
  std::vector<int> bad(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 50; ++rep)
        for (size_t i = 0; i < texts.size(); ++i) bad[k] += t.encode(texts[i]) != want[i];
    });
  for (auto& th : threads) th.join();
  for (int k = 0; k < 4; ++k) CHECK(bad[k] == 0);
}
