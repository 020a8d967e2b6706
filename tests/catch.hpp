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
#include <string>

namespace dsv4_test {
// Shared test data (../shared beside the checkout). Tests that need it skip themselves when absent.
inline std::string shared_dir() {
  if (const char* env = std::getenv("DSV4_SHARED_DIR")) return env;
  return DSV4_SHARED_DIR;
}
inline std::string source_dir() { return DSV4_SOURCE_DIR; }
}  // namespace dsv4_test
