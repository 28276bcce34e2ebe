/// @file
/// `kincir::middleware::PoisonQueue`: after the last failure, publishes the message to a poison
/// topic (with the reason, the source topic and the handler's name in its metadata) and lets the
/// router ack it.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/concepts.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>
#include <kincir/log.hpp>
#include <kincir/router/error.hpp>
#include <kincir/router/handler.hpp>

#include <functional>    // predicate
#include <memory>        // owned publishers
#include <string>        // topic
#include <string_view>   // metadata keys
#include <system_error>  // std::error_code
#include <type_traits>   // std::remove_cvref_t
#include <utility>       // std::move, std::forward

namespace kincir::middleware {

/// Metadata a poisoned message carries.
inline constexpr std::string_view kPoisonReasonKey = "x-poison-reason";
inline constexpr std::string_view kPoisonTopicKey = "x-poison-topic";
inline constexpr std::string_view kPoisonHandlerKey = "x-poison-handler";

/// Publishes a message its handler failed on to `topic` — a copy of the input (same id, payload
/// and metadata) plus `x-poison-reason`, `x-poison-topic` (where it came from) and
/// `x-poison-handler` — and returns success without outputs, so the router acks it.
///
/// Not poisoned (passed through, so the router nacks and the message is redelivered):
/// failures the predicate rejects, `handler_errc::cancelled` (the router is closing) and
/// `handler_errc::circuit_open` (not the message's fault). If publishing to the poison topic
/// fails, the original failure is returned (and logged): the message is nacked, never lost.
///
/// Put it outside `Retry`, so it sees the failure that remains after the retries. The
/// publisher, given as an lvalue, must outlive the router; an rvalue is moved in and owned.
class PoisonQueue {
 public:
  using Predicate = std::function<bool(const HandlerResult&, const Message&)>;

  template <class P>
  PoisonQueue(P&& publisher, std::string topic, Predicate should_poison = {})
      : publish_(make_publish(std::forward<P>(publisher))),
        topic_(std::move(topic)),
        should_poison_(std::move(should_poison)) {
    static_assert(Publisher<std::remove_cvref_t<P>>, "PoisonQueue needs a kincir::Publisher");
    if (topic_.empty()) throw_error(make_error_code(errc::invalid_argument), "PoisonQueue: empty topic");
  }

  [[nodiscard]] const std::string& topic() const noexcept { return topic_; }

  HandlerFunc operator()(HandlerFunc next) const {
    return [publish = publish_, topic = topic_, should_poison = should_poison_, next = std::move(next)](
               Message& message, const HandlerContext& ctx) {
      HandlerResult result = call_guarded(next, message, ctx);
      if (result.ok() || result.error() == handler_errc::cancelled || result.error() == handler_errc::circuit_open) {
        return result;
      }
      if (should_poison && !should_poison(result, message)) return result;
      Message poisoned = message;
      poisoned.metadata.set(kPoisonReasonKey, result.reason());
      poisoned.metadata.set(kPoisonTopicKey, ctx.subscribe_topic);
      poisoned.metadata.set(kPoisonHandlerKey, ctx.handler_name);
      std::error_code ec;
      try {
        publish(topic, std::move(poisoned), ec);
      } catch (const std::system_error& e) {
        ec = e.code();
      }
      if (ec) {
        ctx.logger->log(LogLevel::error, "publishing to the poison topic failed; message nacked",
                        {{"handler", ctx.handler_name}, {"poison_topic", topic}, {"error", ec.message()}});
        return result;
      }
      ctx.logger->log(LogLevel::warn, "message poisoned",
                      {{"handler", ctx.handler_name},
                       {"topic", ctx.subscribe_topic},
                       {"poison_topic", topic},
                       {"message_id", message.uuid.to_string()},
                       {"reason", result.reason()}});
      return HandlerResult();
    };
  }

 private:
  using PublishFn = std::function<void(const std::string&, Message&&, std::error_code&)>;

  template <class P>
  static PublishFn make_publish(P&& publisher) {
    if constexpr (std::is_lvalue_reference_v<P>) {
      return
          [p = &publisher](const std::string& t, Message&& m, std::error_code& ec) { p->publish(t, std::move(m), ec); };
    } else {
      auto owned = std::make_shared<std::remove_cvref_t<P>>(std::forward<P>(publisher));
      return [owned](const std::string& t, Message&& m, std::error_code& ec) { owned->publish(t, std::move(m), ec); };
    }
  }

  PublishFn publish_;
  std::string topic_;
  Predicate should_poison_;
};

}  // namespace kincir::middleware
