/// @file
/// The vocabulary of router handlers: `HandlerResult` (messages to publish, or a failure),
/// `HandlerContext` (what a handler and its middleware know about the delivery), `HandlerFunc`
/// and `Middleware`, and `make_handler` (adapts a plain function to a `HandlerFunc`).
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/message.hpp>
#include <kincir/log.hpp>
#include <kincir/router/error.hpp>

#include <chrono>              // deadlines
#include <concepts>            // std::invocable
#include <condition_variable>  // interruptible sleeps
#include <cstdint>             // delivery counts
#include <exception>           // std::exception_ptr
#include <functional>          // std::function
#include <mutex>               // interruptible sleeps
#include <optional>            // handlers returning at most one message
#include <stop_token>          // the router's stop request
#include <string>              // failure reasons
#include <string_view>         // names, topics
#include <system_error>        // std::error_code
#include <type_traits>         // handler return types
#include <utility>             // std::move, std::exchange
#include <vector>              // output messages

namespace kincir {

namespace detail::router {
/// An emptied output vector kept per thread, so that the next result of one message reuses its
/// capacity instead of allocating (the router hands each result's vector back here once its
/// messages are published).
inline thread_local std::vector<Message> tls_spare_outputs;

inline std::vector<Message> take_spare_outputs() noexcept { return std::exchange(tls_spare_outputs, {}); }

/// Keeps `v`'s capacity for the thread's next result (a small one only; its messages are destroyed).
inline void recycle_outputs(std::vector<Message>& v) noexcept {
  v.clear();
  if (v.capacity() != 0 && v.capacity() <= 16 && tls_spare_outputs.capacity() == 0) tls_spare_outputs.swap(v);
}
}  // namespace detail::router

/// What a handler produced: the messages to publish (success, possibly none) or a failure (an
/// error code, a human-readable reason, and the exception if one was thrown).
class HandlerResult {
 public:
  /// Success with nothing to publish.
  HandlerResult() noexcept = default;
  /// Success: publish `messages` (implicit, so a handler may `return messages;`).
  HandlerResult(std::vector<Message> messages) noexcept  // NOLINT(google-explicit-constructor)
      : messages_(std::move(messages)) {}
  /// Success: publish one message.
  HandlerResult(Message message)  // NOLINT(google-explicit-constructor)
      : messages_(detail::router::take_spare_outputs()) {
    messages_.push_back(std::move(message));
  }

  /// A failure: `error` must hold an error; `reason` says what went wrong (defaults to the error's message).
  [[nodiscard]] static HandlerResult failure(std::error_code error, std::string reason = {}) {
    HandlerResult r;
    r.error_ = error ? error : make_error_code(handler_errc::failed);
    r.reason_ = reason.empty() ? r.error_.message() : std::move(reason);
    return r;
  }
  /// A failure from an exception: `handler_errc::exception` with the exception's `what()` as
  /// reason, or its code when it is a `std::system_error`.
  [[nodiscard]] static HandlerResult from_exception(std::exception_ptr e) {
    HandlerResult r;
    r.error_ = make_error_code(handler_errc::exception);
    try {
      std::rethrow_exception(e);
    } catch (const std::system_error& x) {
      r.error_ = x.code() ? x.code() : r.error_;
      r.reason_ = x.what();
    } catch (const std::exception& x) {
      r.reason_ = x.what();
    } catch (...) {
      r.reason_ = "unknown exception";
    }
    r.exception_ = std::move(e);
    return r;
  }

  [[nodiscard]] bool ok() const noexcept { return !error_; }
  explicit operator bool() const noexcept { return ok(); }
  /// Empty on success.
  [[nodiscard]] const std::error_code& error() const noexcept { return error_; }
  /// Why it failed; empty on success.
  [[nodiscard]] const std::string& reason() const noexcept { return reason_; }
  /// What the handler threw, if it failed by throwing.
  [[nodiscard]] const std::exception_ptr& exception() const noexcept { return exception_; }
  /// The messages to publish (on success).
  [[nodiscard]] std::vector<Message>& messages() noexcept { return messages_; }
  [[nodiscard]] const std::vector<Message>& messages() const noexcept { return messages_; }

 private:
  std::vector<Message> messages_;
  std::error_code error_;
  std::string reason_;
  std::exception_ptr exception_;
};

namespace detail::router {
/// Lets middleware settle the delivery before the handler returns (instant ack).
class EarlySettle {
 public:
  /// Acks now; later settlement is skipped. Returns false if the delivery could not be acked.
  virtual bool ack_now() noexcept = 0;

 protected:
  ~EarlySettle() = default;
};
}  // namespace detail::router

/// What a handler and its middleware know about the delivery being handled. Passed by const
/// reference; a middleware that changes it (a tighter deadline) passes a copy down.
struct HandlerContext {
  using clock = std::chrono::steady_clock;

  std::string_view handler_name;
  std::string_view subscribe_topic;
  /// Empty for consumer handlers.
  std::string_view publish_topic;
  /// 1 on first delivery; raised by each redelivery where the subscriber reports it.
  std::uint32_t delivery_count = 1;
  /// Requested when the router closes: long-running work should give up and fail.
  std::stop_token stop;
  /// When the work should be given up (set by the timeout middleware); `max()` when unlimited.
  clock::time_point deadline = clock::time_point::max();
  /// Where to report; never null.
  Logger* logger = &null_logger();
  detail::router::EarlySettle* early_settle = nullptr;

  /// The router is closing, or the deadline has passed.
  [[nodiscard]] bool cancelled() const noexcept { return stop.stop_requested() || clock::now() >= deadline; }

  /// Waits `d`, waking early when cancelled. Returns true if the whole wait elapsed.
  template <class Rep, class Period>
  bool sleep_for(std::chrono::duration<Rep, Period> d) const {
    // Waits are capped at a year: a time point near max() overflows inside the condition variable.
    constexpr auto kLongest = std::chrono::hours(24 * 365);
    const auto now = clock::now();
    const auto capped = d > kLongest ? kLongest : std::chrono::duration_cast<clock::duration>(d);
    auto until = now + capped;
    const bool past_deadline = until > deadline;
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    cv.wait_until(lock, stop, past_deadline ? deadline : until, [] { return false; });
    return !stop.stop_requested() && !past_deadline;
  }

  /// Acks the delivery now, before the handler finishes (see `middleware::instant_ack`).
  /// Returns false when there is nothing to ack (no ack-capable subscriber) or the ack failed.
  bool ack_now() const noexcept { return early_settle != nullptr && early_settle->ack_now(); }
};

/// A handler after adaptation: takes the delivered message, returns what to publish or a failure.
/// It may also throw; the router turns that into a failure.
using HandlerFunc = std::function<HandlerResult(Message&, const HandlerContext&)>;

/// Wraps a handler in behaviour (retry, timeout ...): takes the next handler, returns a new one.
using Middleware = std::function<HandlerFunc(HandlerFunc)>;

/// Calls `fn`, turning an exception into a failed result (`HandlerResult::from_exception`).
inline HandlerResult call_guarded(const HandlerFunc& fn, Message& message, const HandlerContext& ctx) noexcept {
  try {
    return fn(message, ctx);
  } catch (...) {
    try {
      return HandlerResult::from_exception(std::current_exception());
    } catch (...) {
      return HandlerResult::failure(make_error_code(handler_errc::exception), "exception while reporting an exception");
    }
  }
}

namespace detail::router {

template <class F>
decltype(auto) invoke_user(F& fn, Message& message, const HandlerContext& ctx) {
  if constexpr (std::invocable<F&, Message&, const HandlerContext&>) {
    return fn(message, ctx);
  } else {
    static_assert(
        std::invocable<F&, Message&>,
        "a router handler is callable as f(Message&), f(const Message&) or f(Message&, const HandlerContext&)");
    return fn(message);
  }
}

template <class R>
HandlerResult to_result(R&& r) {
  using T = std::remove_cvref_t<R>;
  if constexpr (std::is_same_v<T, HandlerResult>) {
    return std::forward<R>(r);
  } else if constexpr (std::is_same_v<T, std::vector<Message>> || std::is_same_v<T, Message>) {
    return HandlerResult(std::forward<R>(r));
  } else if constexpr (std::is_same_v<T, std::optional<Message>>) {
    if (!r) return {};
    return HandlerResult(std::move(*r));
  } else if constexpr (std::is_same_v<T, std::error_code>) {
    if (r) return HandlerResult::failure(r);
    return {};
  } else {
    static_assert(std::is_same_v<T, void>,
                  "a router handler returns void, HandlerResult, std::vector<Message>, Message, "
                  "std::optional<Message> or std::error_code");
    return {};
  }
}

}  // namespace detail::router

/// Adapts a plain callable to a `HandlerFunc`. The callable takes `Message&` (or
/// `const Message&`), optionally followed by `const HandlerContext&`, and returns `void`,
/// `HandlerResult`, `std::vector<Message>`, `Message`, `std::optional<Message>` (empty: nothing to
/// publish) or `std::error_code` (non-empty: failure). It fails by throwing or returning a failure.
template <class F>
HandlerFunc make_handler(F fn) {
  if constexpr (std::is_same_v<F, HandlerFunc>) {
    return fn;
  } else {
    return [fn = std::move(fn)](Message& message, const HandlerContext& ctx) mutable -> HandlerResult {
      using R = decltype(detail::router::invoke_user(fn, message, ctx));
      if constexpr (std::is_void_v<R>) {
        detail::router::invoke_user(fn, message, ctx);
        return {};
      } else {
        return detail::router::to_result(detail::router::invoke_user(fn, message, ctx));
      }
    };
  }
}

}  // namespace kincir
