// Helpers shared by the fuzz targets: invariant checks that abort (so libFuzzer records the input
// as a crash) and an in-memory file for parsers that take a path.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "dsv4/error.hpp"

#define FUZZ_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "FUZZ_CHECK failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

namespace dsv4_fuzz {

// Outcome counts of the inputs run, printed at exit (the figures in docs/testing.md).
struct Tally {
  const char* name = "fuzz";
  uint64_t inputs = 0, accepted = 0, errors[16] = {};
  void ok() { ++inputs, ++accepted; }
  void error(dsv4::Status s) { ++inputs, ++errors[static_cast<int>(s) & 15]; }
  ~Tally() {
    uint64_t rejected = 0;
    for (uint64_t e : errors) rejected += e;
    std::fprintf(stderr, "dsv4-fuzz outcomes (%s): %llu inputs, %llu accepted, %llu clean errors (io %llu, format %llu, "
                 "invalid_argument %llu, unsupported %llu, other %llu)\n", name, (unsigned long long)inputs,
                 (unsigned long long)accepted, (unsigned long long)rejected, (unsigned long long)errors[2],
                 (unsigned long long)errors[3], (unsigned long long)errors[1], (unsigned long long)errors[4],
                 (unsigned long long)(rejected - errors[1] - errors[2] - errors[3] - errors[4]));
  }
};
inline Tally& tally(const char* name) {
  static Tally t;
  t.name = name;
  return t;
}

// A memfd holding `bytes`, reachable by path (/proc/self/fd/N) for open()/mmap(); reused per call.
inline std::string memfd_with(const void* bytes, size_t n) {
  static int fd = [] {
    int f = memfd_create("dsv4-fuzz", 0);
    if (f < 0) std::abort();
    return f;
  }();
  if (ftruncate(fd, 0) != 0 || ftruncate(fd, static_cast<off_t>(n)) != 0) std::abort();
  if (n && pwrite(fd, bytes, n, 0) != static_cast<ssize_t>(n)) std::abort();
  return "/proc/self/fd/" + std::to_string(fd);
}

}  // namespace dsv4_fuzz
