/// @file
/// `kincir::middleware::InstantAck`: acks each message before its handler runs.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/message.hpp>
#include <kincir/router/handler.hpp>

#include <utility>  // std::move

namespace kincir::middleware {

/// Acks the delivery before calling the handler, so the subscriber can hand out the next one
/// sooner (an ack window frees up at once). The trade: at-most-once instead of at-least-once —
/// a failure afterwards is logged and counted but the message is not redelivered; outputs of a
/// success are still published. Without an ack-capable subscriber it does nothing.
class InstantAck {
 public:
  HandlerFunc operator()(HandlerFunc next) const {
    return [next = std::move(next)](Message& message, const HandlerContext& ctx) {
      ctx.ack_now();
      return next(message, ctx);
    };
  }
};

}  // namespace kincir::middleware
