/// @file
/// `kincir::handler_errc`: why a router handler failed, with its own error category ("kincir.handler").
#pragma once

#include <kincir/config.hpp>

#include <string>        // category messages
#include <system_error>  // std::error_category, std::error_code
#include <type_traits>   // std::true_type

namespace kincir {

/// Failures the router and its middleware report for a message (besides `kincir::errc::timeout`
/// and the publisher's own errors).
enum class handler_errc {
  /// The handler reported a failure without a more specific code.
  failed = 1,
  /// The handler threw; the failure's reason holds what was thrown.
  exception,
  /// The circuit breaker is open: the handler was not called.
  circuit_open,
  /// The router is closing: the message was not (fully) handled and goes back to the subscriber.
  cancelled,
};

/// The category of `kincir::handler_errc`; its name is "kincir.handler".
class handler_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "kincir.handler"; }
  std::string message(int value) const override {
    switch (static_cast<handler_errc>(value)) {
      case handler_errc::failed: return "handler failed";
      case handler_errc::exception: return "handler threw an exception";
      case handler_errc::circuit_open: return "circuit breaker open";
      case handler_errc::cancelled: return "router closing";
    }
    return "unknown handler error";
  }
};

inline const std::error_category& handler_category() noexcept {
  static const handler_category_impl instance;
  return instance;
}

/// Makes `handler_errc` values usable as `std::error_code` (found by ADL).
inline std::error_code make_error_code(handler_errc e) noexcept { return {static_cast<int>(e), handler_category()}; }

}  // namespace kincir

template <>
struct std::is_error_code_enum<kincir::handler_errc> : std::true_type {};
