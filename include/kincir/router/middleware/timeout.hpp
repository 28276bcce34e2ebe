/// @file
/// `kincir::middleware::Timeout`: gives each handler call a deadline and fails calls that
/// overrun it.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>
#include <kincir/router/handler.hpp>

#include <algorithm>  // std::min
#include <chrono>     // the limit
#include <string>     // reasons
#include <utility>    // std::move

namespace kincir::middleware {

/// Sets `HandlerContext::deadline` to at most `limit` from now for the handler (and the
/// middleware inside), and fails a call that returns after the deadline with `errc::timeout`
/// (its outputs are dropped, the message is nacked). A thread cannot be preempted: a handler
/// that runs long is not interrupted but should look at `ctx.cancelled()`; waits in the
/// middleware inside (retry backoff, throttle) end at the deadline. `limit` must be positive
/// (`kincir::Error`, `errc::invalid_argument`).
class Timeout {
 public:
  template <class Rep, class Period>
  explicit Timeout(std::chrono::duration<Rep, Period> limit)
      : limit_(std::chrono::duration_cast<std::chrono::steady_clock::duration>(limit)) {
    if (limit_ <= std::chrono::steady_clock::duration::zero()) {
      throw_error(make_error_code(errc::invalid_argument), "Timeout: the limit must be positive");
    }
  }

  HandlerFunc operator()(HandlerFunc next) const {
    return [limit = limit_, next = std::move(next)](Message& message, const HandlerContext& ctx) {
      HandlerContext inner = ctx;
      inner.deadline = std::min(ctx.deadline, HandlerContext::clock::now() + limit);
      HandlerResult result = call_guarded(next, message, inner);
      if (HandlerContext::clock::now() > inner.deadline) {
        std::string reason = "handler exceeded its timeout of " +
                             std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(limit).count()) +
                             " ms";
        if (!result.ok()) reason += " (" + result.reason() + ")";
        return HandlerResult::failure(make_error_code(errc::timeout), std::move(reason));
      }
      return result;
    };
  }

 private:
  std::chrono::steady_clock::duration limit_;
};

}  // namespace kincir::middleware
