/// @file
/// kincir's error model: `kincir::errc` with its `std::error_category`, and `kincir::Error`.
///
/// Every fallible synchronous call comes as a pair: one overload takes `std::error_code&` and
/// never throws; the other calls it and throws `kincir::Error` through the cold `throw_error`.
///
/// Asynchronous calls take an Asio completion token and complete with a `std::error_code`. One
/// code means cancelled, everywhere: `asio::error::operation_aborted`, as every Asio operation
/// reports it (compare with `ec == asio::error::operation_aborted`). A pending
/// `async_receive` completes with it when its cancellation slot fires, when the subscriber
/// unsubscribes, subscribes elsewhere or is destroyed, and a coroutine's `co_await` throws it.
#pragma once

#include <kincir/config.hpp>

#include <string>        // std::string for messages
#include <system_error>  // std::error_code, std::error_category, std::system_error
#include <type_traits>   // std::true_type

namespace kincir {

/// Errors raised by kincir itself (the RabbitMQ adapter has its own categories).
enum class errc {
  /// The queue of a topic is full and the overflow policy is `reject`; nothing was published.
  queue_full = 1,
  /// The broker has been shut down: publishing fails, receiving fails once drained.
  broker_shutdown,
  /// A topic name is empty, longer than 255 bytes, or contains a NUL byte.
  invalid_topic,
  /// Creating one more topic would exceed `BrokerConfig::max_topics`.
  too_many_topics,
  /// Subscribing would exceed `BrokerConfig::max_subscribers_per_topic`.
  too_many_subscribers,
  /// The subscriber has not subscribed to any topic.
  not_subscribed,
  /// A timed operation ran out of time before it could complete.
  timeout,
  /// A message is larger than the configured limit.
  message_too_large,
  /// An argument is out of its documented range (a configuration value, a size).
  invalid_argument,
  /// A string is not a valid UUID in its canonical 36-character form.
  invalid_uuid,
  /// The handle does not name an outstanding delivery of this subscriber (already acked,
  /// nacked, or from another subscriber).
  unknown_delivery,
  // 12 was `operation_aborted`: cancellation is `asio::error::operation_aborted` (see above).
  /// The channel or queue has been closed.
  closed = 13,
  /// A handler threw an exception that is not a `std::system_error` (the exception itself is kept
  /// where the call documents it).
  handler_exception = 14,
};

/// The category of `kincir::errc`; its name is "kincir".
class error_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "kincir"; }

  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::queue_full: return "queue full";
      case errc::broker_shutdown: return "broker shut down";
      case errc::invalid_topic: return "invalid topic name";
      case errc::too_many_topics: return "too many topics";
      case errc::too_many_subscribers: return "too many subscribers for this topic";
      case errc::not_subscribed: return "not subscribed to a topic";
      case errc::timeout: return "operation timed out";
      case errc::message_too_large: return "message too large";
      case errc::invalid_argument: return "invalid argument";
      case errc::invalid_uuid: return "invalid UUID string";
      case errc::unknown_delivery: return "unknown or already settled delivery";
      case errc::handler_exception: return "a handler threw an exception";
      case errc::closed: return "closed";
    }
    return "unknown kincir error";
  }
};

/// The one instance of kincir's error category.
inline const std::error_category& error_category() noexcept {
  static const error_category_impl instance;
  return instance;
}

/// Makes `errc` values usable as `std::error_code` (found by ADL).
inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

/// The exception thrown by the throwing overloads.
class Error : public std::system_error {
 public:
  using std::system_error::system_error;
};

/// Throws `kincir::Error(ec, what)`; kept out of line so callers' hot paths stay small.
KINCIR_COLD inline void throw_error(const std::error_code& ec, const char* what) { throw Error(ec, what); }

/// Throws `kincir::Error(ec, what)` if `ec` holds an error.
inline void throw_if(const std::error_code& ec, const char* what) {
  if (ec) [[unlikely]]
    throw_error(ec, what);
}

}  // namespace kincir

template <>
struct std::is_error_code_enum<kincir::errc> : std::true_type {};
