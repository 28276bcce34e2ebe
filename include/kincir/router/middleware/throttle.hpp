/// @file
/// `kincir::middleware::Throttle`: lets at most `count` messages per `period` into the handlers it
/// wraps.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>
#include <kincir/router/error.hpp>
#include <kincir/router/handler.hpp>

#include <algorithm>  // std::max
#include <chrono>     // rates
#include <cstddef>    // std::size_t
#include <memory>     // shared state
#include <mutex>      // the next free slot
#include <utility>    // std::move

namespace kincir::middleware {

/// Spaces handler calls evenly, `period / count` apart: a message waits for its slot before the
/// handler runs (no burst beyond one). One budget is shared by every handler this object (and
/// its copies) wraps; use one `Throttle` per handler for separate budgets. A wait ends early
/// when the router closes (`handler_errc::cancelled`: nacked for redelivery) or the context's
/// deadline passes (`errc::timeout`). `count` and `period` must be positive (`kincir::Error`,
/// `errc::invalid_argument`).
class Throttle {
 public:
  template <class Rep, class Period>
  Throttle(std::size_t count, std::chrono::duration<Rep, Period> period) : state_(std::make_shared<State>()) {
    if (count == 0 || period <= std::chrono::duration<Rep, Period>::zero()) {
      throw_error(make_error_code(errc::invalid_argument), "Throttle: count and period must be positive");
    }
    state_->interval = std::chrono::duration_cast<clock::duration>(period) / static_cast<clock::rep>(count);
  }

  HandlerFunc operator()(HandlerFunc next) const {
    return [state = state_, next = std::move(next)](Message& message, const HandlerContext& ctx) {
      clock::time_point slot;
      {
        const std::lock_guard lock(state->mutex);
        slot = std::max(clock::now(), state->next);
        state->next = slot + state->interval;
      }
      const auto now = clock::now();
      if (slot > now && !ctx.sleep_for(slot - now)) {
        if (ctx.stop.stop_requested())
          return HandlerResult::failure(handler_errc::cancelled, "throttle wait interrupted by close");
        return HandlerResult::failure(make_error_code(errc::timeout), "deadline passed while throttled");
      }
      return next(message, ctx);
    };
  }

 private:
  using clock = std::chrono::steady_clock;
  struct State {
    std::mutex mutex;
    clock::duration interval{};
    clock::time_point next{};
  };
  std::shared_ptr<State> state_;
};

}  // namespace kincir::middleware
