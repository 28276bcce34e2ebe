/// @file
/// Incoming content: reassembly of a content-bearing method's header and body frames into a
/// message (`Delivery` for basic.deliver and basic.get-ok, `ReturnedMessage` for basic.return).
/// A body that arrives in one frame is a zero-copy slice of the read buffer when the caller
/// passes that buffer as a `Bytes`.
#pragma once

#include <kincir/config.hpp>

#include <kincir/core/bytes.hpp>                 // Bytes bodies
#include <kincir/rabbitmq/amqp/error.hpp>        // errc
#include <kincir/rabbitmq/amqp/field_table.hpp>  // FieldLimits
#include <kincir/rabbitmq/amqp/frame.hpp>        // Frame, FrameType
#include <kincir/rabbitmq/amqp/properties.hpp>   // BasicProperties, decode_content_header

#include <cstdint>       // std::uint64_t
#include <string>        // method fields
#include <system_error>  // std::error_code
#include <utility>       // std::move
#include <vector>        // reassembly buffer

namespace kincir::rabbitmq::amqp {

/// A message from the broker: `basic.deliver` to a consumer, or `basic.get-ok`.
struct Delivery {
  /// The consumer it was delivered to; empty for basic.get.
  std::string consumer_tag;
  /// Per channel; what basic.ack / nack / reject name.
  std::uint64_t delivery_tag = 0;
  bool redelivered = false;
  std::string exchange;
  std::string routing_key;
  /// Messages left in the queue (basic.get-ok only).
  std::uint32_t message_count = 0;
  BasicProperties properties;
  Bytes body;
};

/// A mandatory message the broker could not route, sent back by `basic.return`.
struct ReturnedMessage {
  std::uint16_t reply_code = 0;
  std::string reply_text;
  std::string exchange;
  std::string routing_key;
  BasicProperties properties;
  Bytes body;
};

/// Limits on incoming content.
struct ContentLimits {
  /// Larger bodies are `errc::body_too_large` (RabbitMQ's default max_message_size is 128 MiB).
  std::uint64_t max_body_size = std::uint64_t{128} << 20;
  /// Limits for the headers table.
  FieldLimits fields;
};

/// Reassembles one content: a header frame, then body frames until `body_size` bytes arrived.
/// Memory grows with the bytes actually received, never with the announced size alone.
class ContentAssembler {
 public:
  /// Starts a content (after a content-bearing method): the next frame must be its header.
  /// `properties()` keeps its storage until the header replaces every property.
  void begin() noexcept {
    state_ = State::header;
    body_size_ = 0;
    received_ = 0;
    body_ = Bytes();
    chunks_.clear();
  }

  /// True between `begin` and the completing frame.
  [[nodiscard]] bool in_progress() const noexcept { return state_ != State::idle; }

  /// Feeds a header or body frame. Returns true when the content is complete (then
  /// `properties()` and `take_body()` hold it). `source`, if given, is the buffer the frame's
  /// payload points into: a body in a single frame is then sliced from it instead of copied.
  /// Errors: `errc::unexpected_frame` (wrong frame type, body longer than announced),
  /// `errc::malformed_content_header`, `errc::body_too_large`.
  bool feed(const Frame& frame, const Bytes* source, std::error_code& ec, const ContentLimits& limits = {}) {
    return feed(frame, source, ec, limits, properties_);
  }

  /// The same, with the header's properties decoded into `into` instead of `properties()`: every
  /// property replaced in place, its strings keeping their storage, so a message decoded into the
  /// same place each time allocates nothing for its properties.
  bool feed(const Frame& frame, const Bytes* source, std::error_code& ec, const ContentLimits& limits,
            BasicProperties& into) {
    ec.clear();
    if (state_ == State::header) {
      if (frame.type != FrameType::header) return fail(ec, errc::unexpected_frame);
      std::uint16_t class_id = 0;
      detail::decode_content_header_to(frame.payload, class_id, body_size_, into, ec, limits.fields);
      if (ec) return fail(ec, ec);
      if (body_size_ > limits.max_body_size) return fail(ec, errc::body_too_large);
      if (body_size_ == 0) {
        state_ = State::idle;
        return true;
      }
      state_ = State::body;
      return false;
    }
    if (state_ != State::body || frame.type != FrameType::body) return fail(ec, errc::unexpected_frame);
    const auto payload = frame.payload;
    if (payload.size() > body_size_ - received_) return fail(ec, errc::unexpected_frame);
    if (received_ == 0 && payload.size() == body_size_) {
      body_ = slice_or_copy(payload, source);
      received_ = body_size_;
      state_ = State::idle;
      return true;
    }
    if (chunks_.empty())
      chunks_.reserve(static_cast<std::size_t>(body_size_ < kInitialReserve ? body_size_ : kInitialReserve));
    chunks_.insert(chunks_.end(), payload.begin(), payload.end());
    received_ += payload.size();
    if (received_ < body_size_) return false;
    body_ = Bytes(std::move(chunks_));
    chunks_ = std::vector<std::uint8_t>();
    state_ = State::idle;
    return true;
  }

  /// Abandons a content in progress.
  void reset() noexcept {
    begin();
    state_ = State::idle;
  }

  [[nodiscard]] BasicProperties& properties() noexcept { return properties_; }
  [[nodiscard]] Bytes take_body() noexcept { return std::move(body_); }
  [[nodiscard]] std::uint64_t body_size() const noexcept { return body_size_; }

 private:
  enum class State : std::uint8_t { idle, header, body };
  static constexpr std::uint64_t kInitialReserve = std::uint64_t{1} << 20;

  static Bytes slice_or_copy(std::span<const std::uint8_t> payload, const Bytes* source) {
    if (source != nullptr && payload.data() >= source->data() &&
        payload.data() + payload.size() <= source->data() + source->size())
      return source->slice(static_cast<std::size_t>(payload.data() - source->data()), payload.size());
    return Bytes::copy_from(payload);
  }

  bool fail(std::error_code& ec, std::error_code e) noexcept {
    ec = e;
    state_ = State::idle;
    return false;
  }

  State state_ = State::idle;
  std::uint64_t body_size_ = 0;
  std::uint64_t received_ = 0;
  BasicProperties properties_;  // where the 4-argument feed decodes, reused for the next header
  Bytes body_;
  std::vector<std::uint8_t> chunks_;
};

}  // namespace kincir::rabbitmq::amqp
