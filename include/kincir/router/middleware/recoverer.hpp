/// @file
/// `kincir::middleware::Recoverer`: turns an exception thrown by the handler into a failure whose
/// reason is what was thrown.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/message.hpp>
#include <kincir/log.hpp>
#include <kincir/router/handler.hpp>

#include <utility>  // std::move

namespace kincir::middleware {

/// Calls the handler and turns an exception into a failure (`handler_errc::exception`, or the
/// code of a `std::system_error`) with `what()` as its reason, logged at `error`. The router does
/// this for any exception that reaches it anyway; put `Recoverer` innermost so the middleware
/// outside it (retry, poison queue) and the log see the reason. Never throws.
class Recoverer {
 public:
  HandlerFunc operator()(HandlerFunc next) const {
    return [next = std::move(next)](Message& message, const HandlerContext& ctx) {
      HandlerResult result = call_guarded(next, message, ctx);
      if (result.exception()) {
        ctx.logger->log(
            LogLevel::error, "handler threw",
            {{"handler", ctx.handler_name}, {"message_id", message.uuid.to_string()}, {"what", result.reason()}});
      }
      return result;
    };
  }
};

}  // namespace kincir::middleware
