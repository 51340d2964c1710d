// status_macros.h: the two error-propagation macros farswap uses.
//
// Abseil 20220623 (Debian 12) ships absl::Status/StatusOr but none of the
// RETURN_IF_ERROR / ASSIGN_OR_RETURN macros that later versions added, so the
// project defines them once, here.
//
//   FARSWAP_RETURN_IF_ERROR(pool->Write(h, buf, len));
//   FARSWAP_ASSIGN_OR_RETURN(ZsHandle h, pool->Malloc(len));
#ifndef FARSWAP_COMMON_STATUS_MACROS_H_
#define FARSWAP_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// FARSWAP_RETURN_IF_ERROR evaluates `expr` (an absl::Status) once and returns
// it from the enclosing function when it is not OK.
#define FARSWAP_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::absl::Status farswap_status_ = (expr);           \
    if (!farswap_status_.ok()) return farswap_status_; \
  } while (0)

#define FARSWAP_STATUS_CONCAT_INNER_(a, b) a##b
#define FARSWAP_STATUS_CONCAT_(a, b) FARSWAP_STATUS_CONCAT_INNER_(a, b)

// FARSWAP_ASSIGN_OR_RETURN(lhs, expr) evaluates `expr` (an absl::StatusOr<T>)
// once; on error returns its status, otherwise move-assigns the value to
// `lhs`, which may be a declaration.
#define FARSWAP_ASSIGN_OR_RETURN(lhs, expr) \
  FARSWAP_ASSIGN_OR_RETURN_IMPL_(FARSWAP_STATUS_CONCAT_(farswap_statusor_, __LINE__), lhs, expr)
#define FARSWAP_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = std::move(statusor).value()

#endif  // FARSWAP_COMMON_STATUS_MACROS_H_
