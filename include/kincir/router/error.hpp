/// @file
/// `kincir::handler_errc`: why a router handler failed, with its own error category
/// ("kincir.handler"); `kincir::receive_condition`: what a subscriber's receive error means to the
/// router (the subscription ended, or receiving may succeed again).
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>

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

/// What an error returned (or thrown) by a subscriber's receive means, as an error condition:
/// compare the code with `==` (`ec == kincir::receive_condition::ended`).
///
/// The rule, the same for every backend: a subscriber waits through what it can recover from (the
/// in-memory broker has nothing to recover; the RabbitMQ subscriber waits while its connection
/// is recovered), so an error it reports means its subscription is over — unless the error says
/// "try again". `retry` holds for `kincir::errc::timeout` (nothing arrived yet),
/// `std::errc::resource_unavailable_try_again`, `std::errc::interrupted` and
/// `handler_errc::exception` (the receive threw something that is not a `std::system_error`:
/// nothing says the subscription is over); a backend whose receive returns other transient errors
/// maps them to `retry` in its category (`std::error_category::equivalent(int, const
/// std::error_condition&)`). `ended` holds for every other error: `kincir::errc::broker_shutdown`,
/// `closed`, `not_subscribed`, and a RabbitMQ subscriber's final error (its connection closed by
/// the program, recovery disabled or given up — then the last error, a reply code or a socket
/// error such as `ETIMEDOUT` —, the consumer cancelled, the channel closed for good), whatever its
/// category.
enum class receive_condition {
  /// Receiving may succeed again without subscribing again: the router pauses
  /// (`RouterConfig::receive_error_backoff`) and receives again.
  retry = 1,
  /// The subscription delivers nothing more: the router's handler ends.
  ended,
};

}  // namespace kincir

template <>
struct std::is_error_code_enum<kincir::handler_errc> : std::true_type {};
template <>
struct std::is_error_condition_enum<kincir::receive_condition> : std::true_type {};

namespace kincir {

namespace detail::router {
inline bool is_retryable_receive_error(const std::error_code& ec) noexcept {
  return ec == errc::timeout || ec == std::errc::resource_unavailable_try_again || ec == std::errc::interrupted ||
         ec == handler_errc::exception;
}
}  // namespace detail::router

/// The category of `kincir::receive_condition`; its name is "kincir.receive".
class receive_condition_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "kincir.receive"; }
  std::string message(int value) const override {
    switch (static_cast<receive_condition>(value)) {
      case receive_condition::retry: return "receiving may succeed again";
      case receive_condition::ended: return "subscription ended";
    }
    return "unknown receive condition";
  }
  bool equivalent(const std::error_code& code, int condition) const noexcept override;
};

inline const std::error_category& receive_condition_category() noexcept {
  static const receive_condition_category_impl instance;
  return instance;
}

/// Makes `receive_condition` values usable as `std::error_condition` (found by ADL).
inline std::error_condition make_error_condition(receive_condition c) noexcept {
  return {static_cast<int>(c), receive_condition_category()};
}

inline bool receive_condition_category_impl::equivalent(const std::error_code& code, int condition) const noexcept {
  switch (static_cast<receive_condition>(condition)) {
    case receive_condition::retry: return detail::router::is_retryable_receive_error(code);
    // A backend's own mapping to `retry` (its category's equivalent) counts too.
    case receive_condition::ended: return code && code != receive_condition::retry;
  }
  return false;
}

}  // namespace kincir
