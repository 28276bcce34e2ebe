/// @file
/// `kincir::middleware::Retry`: calls the handler again after a failure, with exponential
/// backoff and jitter, up to a number of retries or a total time.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>
#include <kincir/log.hpp>
#include <kincir/router/error.hpp>
#include <kincir/router/handler.hpp>

#include <algorithm>   // std::min
#include <chrono>      // intervals
#include <cstddef>     // std::size_t
#include <cstdint>     // seeds
#include <functional>  // predicates, hooks
#include <random>      // jitter
#include <string>      // reasons
#include <thread>      // per-thread random engine id
#include <utility>     // std::move

namespace kincir::middleware {

/// How `Retry` retries.
struct RetryOptions {
  /// Calls after the first one; 0 disables retrying.
  std::size_t max_retries = 3;
  /// Wait before the first retry (at least 0).
  std::chrono::milliseconds initial_interval = std::chrono::milliseconds(100);
  /// Each wait is the previous one times this (at least 1).
  double multiplier = 2.0;
  /// Longest single wait (before jitter); 0: no cap.
  std::chrono::milliseconds max_interval = std::chrono::seconds(10);
  /// Give up once the next retry would start more than this long after the first call; 0: no
  /// limit.
  std::chrono::milliseconds max_elapsed = std::chrono::milliseconds(0);
  /// Randomisation factor in [0, 1]: each wait is drawn uniformly from
  /// [wait × (1 − jitter), wait × (1 + jitter)], so failing consumers do not retry in lock step.
  double jitter = 0.0;
  /// Which failures are retried; empty: every failure (except `handler_errc::cancelled`, never
  /// retried: the router is closing).
  std::function<bool(const HandlerResult&, const Message&)> should_retry;
  /// Called before each wait with the retry's number (1 for the first) and the failure.
  std::function<void(std::size_t, const HandlerResult&)> on_retry;
};

namespace detail {
inline double jitter_factor(double jitter) {
  if (jitter <= 0.0) return 1.0;
  thread_local std::minstd_rand engine(static_cast<std::uint32_t>(std::random_device{}()));
  std::uniform_real_distribution<double> d(1.0 - jitter, 1.0 + jitter);
  return d(engine);
}
}  // namespace detail

/// Retries a failed handler call (a returned failure or an exception) as `RetryOptions` say.
/// Waits end early when the router closes (the message then fails with `handler_errc::cancelled`
/// and is nacked for redelivery) or the context's deadline passes (the last failure is
/// returned). Each retry is logged at `warn`, giving up at `error`. Construction checks the
/// options (`kincir::Error`, `errc::invalid_argument`, naming the field).
class Retry {
 public:
  explicit Retry(RetryOptions options = {}) : options_(std::move(options)) {
    const auto zero = std::chrono::milliseconds::zero();
    if (options_.initial_interval < zero) invalid("Retry: initial_interval must not be negative");
    if (!(options_.multiplier >= 1.0)) invalid("Retry: multiplier must be at least 1");
    if (options_.max_interval < zero) invalid("Retry: max_interval must not be negative");
    if (options_.max_elapsed < zero) invalid("Retry: max_elapsed must not be negative");
    if (!(options_.jitter >= 0.0 && options_.jitter <= 1.0)) invalid("Retry: jitter must be in [0, 1]");
  }

  [[nodiscard]] const RetryOptions& options() const noexcept { return options_; }

  HandlerFunc operator()(HandlerFunc next) const {
    return [options = options_, next = std::move(next)](Message& message, const HandlerContext& ctx) {
      using clock = std::chrono::steady_clock;
      const auto first = clock::now();
      double wait_ms = static_cast<double>(options.initial_interval.count());
      HandlerResult result = call_guarded(next, message, ctx);
      for (std::size_t retry = 1; !result.ok(); ++retry) {
        if (result.error() == handler_errc::cancelled) return result;
        if (options.should_retry && !options.should_retry(result, message)) return result;
        if (retry > options.max_retries) {
          if (options.max_retries != 0) {
            ctx.logger->log(
                LogLevel::error, "retries exhausted",
                {{"handler", ctx.handler_name}, {"retries", options.max_retries}, {"reason", result.reason()}});
          }
          return result;
        }
        double capped = wait_ms;
        if (options.max_interval.count() != 0)
          capped = std::min(capped, static_cast<double>(options.max_interval.count()));
        const auto wait =
            std::chrono::milliseconds(static_cast<std::int64_t>(capped * detail::jitter_factor(options.jitter)));
        if (options.max_elapsed.count() != 0 && clock::now() + wait - first > options.max_elapsed) {
          ctx.logger->log(LogLevel::error, "retry time exhausted",
                          {{"handler", ctx.handler_name}, {"retries", retry - 1}, {"reason", result.reason()}});
          return result;
        }
        ctx.logger->log(LogLevel::warn, "retrying",
                        {{"handler", ctx.handler_name},
                         {"retry", retry},
                         {"wait_ms", wait.count()},
                         {"message_id", message.uuid.to_string()},
                         {"reason", result.reason()}});
        if (options.on_retry) options.on_retry(retry, result);
        if (!ctx.sleep_for(wait)) {
          if (ctx.stop.stop_requested()) {
            return HandlerResult::failure(handler_errc::cancelled,
                                          "retry interrupted by close after: " + result.reason());
          }
          return result;  // the deadline passed
        }
        wait_ms *= options.multiplier;
        result = call_guarded(next, message, ctx);
      }
      return result;
    };
  }

 private:
  KINCIR_COLD static void invalid(const char* what) { throw_error(make_error_code(errc::invalid_argument), what); }

  RetryOptions options_;
};

}  // namespace kincir::middleware
