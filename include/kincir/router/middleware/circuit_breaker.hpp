/// @file
/// `kincir::middleware::CircuitBreaker`: stops calling a handler that keeps failing, and tries
/// again after a pause.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>
#include <kincir/log.hpp>
#include <kincir/router/error.hpp>
#include <kincir/router/handler.hpp>

#include <chrono>   // the open period
#include <cstddef>  // std::size_t
#include <memory>   // shared state
#include <mutex>    // the breaker's state
#include <utility>  // std::move

namespace kincir::middleware {

/// When a `CircuitBreaker` opens and closes.
struct CircuitBreakerOptions {
  /// Consecutive failures that open the circuit (at least 1).
  std::size_t failure_threshold = 5;
  /// How long the circuit stays open before one trial call is let through (positive).
  std::chrono::milliseconds open_duration = std::chrono::seconds(30);
  /// While open: false fails messages at once with `handler_errc::circuit_open` (nacked for
  /// redelivery: the subscriber's redelivery limit and dead-lettering then apply); true makes them
  /// wait for the trial instead (back-pressure: nothing is redelivered in a loop).
  bool wait_while_open = false;
};

/// The state of a circuit breaker.
enum class CircuitState { closed, open, half_open };

/// Counts consecutive failures of the handlers it wraps; at `failure_threshold` it opens: calls
/// fail with `handler_errc::circuit_open` without reaching the handler (or wait, see
/// `wait_while_open`). After `open_duration` one trial call goes through (half-open; others
/// are treated as while open): success closes the circuit, failure opens it again. State
/// changes are logged at `warn`. One breaker is shared by every handler this object (and its
/// copies) wraps — a breaker guards a dependency. A `handler_errc::cancelled` failure does not
/// count. Bad options: `kincir::Error`, `errc::invalid_argument`.
class CircuitBreaker {
 public:
  explicit CircuitBreaker(CircuitBreakerOptions options = {}) : state_(std::make_shared<State>()) {
    if (options.failure_threshold == 0 || options.open_duration <= std::chrono::milliseconds::zero()) {
      throw_error(make_error_code(errc::invalid_argument),
                  "CircuitBreaker: failure_threshold and open_duration must be positive");
    }
    state_->options = options;
  }

  [[nodiscard]] CircuitState state() const {
    const std::lock_guard lock(state_->mutex);
    return state_->state;
  }

  HandlerFunc operator()(HandlerFunc next) const {
    return [state = state_, next = std::move(next)](Message& message, const HandlerContext& ctx) {
      for (;;) {
        const auto wait = state->admit();
        if (wait == clock::duration::zero()) break;
        if (!state->options.wait_while_open) {
          return HandlerResult::failure(handler_errc::circuit_open, "circuit breaker open");
        }
        if (!ctx.sleep_for(wait)) {
          if (ctx.stop.stop_requested())
            return HandlerResult::failure(handler_errc::cancelled, "close while the circuit was open");
          return HandlerResult::failure(handler_errc::circuit_open, "deadline passed while the circuit was open");
        }
      }
      HandlerResult result = call_guarded(next, message, ctx);
      state->record(result, ctx);
      return result;
    };
  }

 private:
  using clock = std::chrono::steady_clock;

  struct State {
    CircuitBreakerOptions options;
    mutable std::mutex mutex;
    CircuitState state = CircuitState::closed;
    std::size_t failures = 0;
    clock::time_point opened_at{};
    bool trial_running = false;

    /// Zero: go ahead. Otherwise how long until a trial may be made.
    clock::duration admit() {
      const std::lock_guard lock(mutex);
      if (state == CircuitState::closed) return clock::duration::zero();
      const auto now = clock::now();
      const auto reopen = opened_at + options.open_duration;
      if (state == CircuitState::open && now >= reopen) {
        state = CircuitState::half_open;
        trial_running = false;
      }
      if (state == CircuitState::half_open && !trial_running) {
        trial_running = true;
        return clock::duration::zero();
      }
      // Open, or half-open with the trial under way: check back later.
      return state == CircuitState::open ? reopen - now
                                         : std::chrono::duration_cast<clock::duration>(options.open_duration);
    }

    void record(const HandlerResult& result, const HandlerContext& ctx) {
      const std::lock_guard lock(mutex);
      if (result.error() == handler_errc::cancelled) {  // says nothing about the dependency
        if (state == CircuitState::half_open) trial_running = false;
        return;
      }
      if (result.ok()) {
        failures = 0;
        if (state != CircuitState::closed) {
          state = CircuitState::closed;
          trial_running = false;
          ctx.logger->log(LogLevel::warn, "circuit breaker closed", {{"handler", ctx.handler_name}});
        }
        return;
      }
      ++failures;
      if (state == CircuitState::half_open ||
          (state == CircuitState::closed && failures >= options.failure_threshold)) {
        state = CircuitState::open;
        opened_at = clock::now();
        trial_running = false;
        ctx.logger->log(LogLevel::warn, "circuit breaker opened",
                        {{"handler", ctx.handler_name}, {"consecutive_failures", failures}});
      }
    }
  };

  std::shared_ptr<State> state_;
};

}  // namespace kincir::middleware
