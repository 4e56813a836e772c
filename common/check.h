// CHECK for invariants whose breach means a bug in moeserve itself ("cannot happen"): it
// prints where and why, then aborts, rather than letting the serving loop go on with broken
// state. (Debian's Abseil, 20220623, has no absl/log/check.h.) Not for bad input: that gets an
// absl::Status.
#ifndef MOESERVE_COMMON_CHECK_H_
#define MOESERVE_COMMON_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <string>

namespace moeserve::internal {

[[noreturn]] inline void CheckFailed(const char* condition, const std::string& message, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: CHECK failed: %s: %s\n", file, line, condition, message.c_str());
  std::abort();
}

}  // namespace moeserve::internal

// MOESERVE_CHECK(cond, message): `message` is a std::string expression, evaluated only on failure.
#define MOESERVE_CHECK(condition, message)                                                \
  do {                                                                                    \
    if (!(condition)) ::moeserve::internal::CheckFailed(#condition, (message), __FILE__, __LINE__); \
  } while (0)

#endif  // MOESERVE_COMMON_CHECK_H_
