// Early-return helpers for absl::Status / absl::StatusOr (Abseil ships none publicly).
#ifndef MOESERVE_ENGINE_STATUS_MACROS_H_
#define MOESERVE_ENGINE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MOESERVE_CONCAT_INNER(a, b) a##b
#define MOESERVE_CONCAT(a, b) MOESERVE_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    absl::Status _status = (expr);             \
    if (!_status.ok()) return _status;         \
  } while (0)

#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr)  \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(*tmp)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(MOESERVE_CONCAT(_status_or_, __LINE__), lhs, expr)

#endif  // MOESERVE_ENGINE_STATUS_MACROS_H_
