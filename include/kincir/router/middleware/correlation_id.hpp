/// @file
/// `kincir::middleware::CorrelationId`: carries a correlation id from each input message to every
/// message its handler publishes, setting one on inputs that have none.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/message.hpp>
#include <kincir/core/uuid.hpp>
#include <kincir/router/handler.hpp>

#include <array>        // a new id's text
#include <optional>     // lookups
#include <string_view>  // keys, ids
#include <utility>      // std::move

namespace kincir::middleware {

/// The metadata key that holds a message's correlation id.
inline constexpr std::string_view kCorrelationIdKey = "correlation_id";

/// The correlation id of `m`, if it has one.
inline std::optional<std::string_view> correlation_id(const Message& m) noexcept {
  return m.metadata.get(kCorrelationIdKey);
}
/// Sets the correlation id of `m`.
inline void set_correlation_id(Message& m, std::string_view id) { m.metadata.set(kCorrelationIdKey, id); }

/// Before the handler: an input without `correlation_id` gets a new one (a random UUID), so the
/// handler and the middleware inside see it. After a success: every output gets the input's id
/// (replacing one it may carry).
class CorrelationId {
 public:
  HandlerFunc operator()(HandlerFunc next) const {
    return [next = std::move(next)](Message& message, const HandlerContext& ctx) {
      if (!message.metadata.contains(kCorrelationIdKey)) {
        // Formatted on the stack: the metadata's copy is the only allocation.
        std::array<char, Uuid::kStringLength> text{};
        Uuid::new_v4().format_to(text.data());
        set_correlation_id(message, std::string_view(text.data(), text.size()));
      }
      HandlerResult result = next(message, ctx);
      if (result.ok() && !result.messages().empty()) {
        // The input's own copy: the outputs are other messages, so it stays valid meanwhile.
        if (const auto id = message.metadata.get(kCorrelationIdKey)) {
          for (auto& out : result.messages()) set_correlation_id(out, *id);
        }
      }
      return result;
    };
  }
};

}  // namespace kincir::middleware
