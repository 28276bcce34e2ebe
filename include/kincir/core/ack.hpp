/// @file
/// `kincir::BasicAckHandle`: what a subscriber hands out with each delivery that must be
/// acknowledged, and hands back to `ack`/`nack`.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/uuid.hpp>

#include <chrono>       // delivery timestamp
#include <cstdint>      // std::uint32_t, std::uint64_t
#include <string>       // topic
#include <string_view>  // topic accessor

namespace kincir {

/// A delivery awaiting acknowledgement: which message, from which topic, how many times it has
/// been delivered, when. Backends may add state through `tag()` (a delivery tag they assign).
/// Satisfies the `kincir::AckHandle` concept.
class BasicAckHandle {
 public:
  using clock = std::chrono::system_clock;

  BasicAckHandle() = default;
  BasicAckHandle(std::string topic, Uuid message_id, std::uint32_t delivery_count, clock::time_point timestamp,
                 std::uint64_t tag) noexcept
      : topic_(std::move(topic)),
        message_id_(message_id),
        delivery_count_(delivery_count),
        timestamp_(timestamp),
        tag_(tag) {}

  [[nodiscard]] std::string_view topic() const noexcept { return topic_; }
  [[nodiscard]] const Uuid& message_id() const noexcept { return message_id_; }
  /// 1 on first delivery, raised by each redelivery.
  [[nodiscard]] std::uint32_t delivery_count() const noexcept { return delivery_count_; }
  [[nodiscard]] bool is_retry() const noexcept { return delivery_count_ > 1; }
  /// When this delivery was handed to the subscriber.
  [[nodiscard]] clock::time_point timestamp() const noexcept { return timestamp_; }
  /// The backend's delivery tag (unique per subscriber).
  [[nodiscard]] std::uint64_t tag() const noexcept { return tag_; }

 private:
  std::string topic_;
  Uuid message_id_;
  std::uint32_t delivery_count_ = 0;
  clock::time_point timestamp_{};
  std::uint64_t tag_ = 0;
};

}  // namespace kincir
