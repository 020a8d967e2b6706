// Catch2 v2/v3 compatibility: test files include "catch.hpp" and use the common macro subset
// (TEST_CASE, SECTION, REQUIRE, CHECK, REQUIRE_THROWS_WITH, Approx via dsv4_test::approx, INFO).
#pragma once
#if __has_include(<catch2/catch_test_macros.hpp>)
#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
using Catch::Approx;
#define DSV4_CATCH_V3 1
#else
#include <catch2/catch.hpp>
#endif
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace dsv4_test {
// Shared test data (../shared beside the checkout). Tests that need it skip themselves when absent.
inline std::string shared_dir() {
  if (const char* env = std::getenv("DSV4_SHARED_DIR")) return env;
  return DSV4_SHARED_DIR;
}
inline std::string source_dir() { return DSV4_SOURCE_DIR; }
// The whole file as bytes; fails the test (REQUIRE) when it cannot be opened.
inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  INFO("reading " << path);
  REQUIRE(f.good());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
}  // namespace dsv4_test
