/// @file
/// The basic class's content header: the 14 message properties, their presence flags (bit 15
/// downwards) and the header frame payload `class-id, weight, body-size, flags, properties`.
#pragma once

#include <kincir/config.hpp>

#include <kincir/rabbitmq/amqp/detail/wire.hpp>  // WireReader, WireWriter
#include <kincir/rabbitmq/amqp/error.hpp>        // errc
#include <kincir/rabbitmq/amqp/field_table.hpp>  // FieldTable headers

#include <cstdint>       // property types
#include <optional>      // absent properties
#include <span>          // payload views
#include <string>        // string properties
#include <system_error>  // std::error_code

namespace kincir::rabbitmq::amqp {

/// Presence flags of the basic properties, in wire order (bit 0 would announce a further flag
/// word; the basic class never needs one).
namespace property_flag {
inline constexpr std::uint16_t kContentType = 0x8000;
inline constexpr std::uint16_t kContentEncoding = 0x4000;
inline constexpr std::uint16_t kHeaders = 0x2000;
inline constexpr std::uint16_t kDeliveryMode = 0x1000;
inline constexpr std::uint16_t kPriority = 0x0800;
inline constexpr std::uint16_t kCorrelationId = 0x0400;
inline constexpr std::uint16_t kReplyTo = 0x0200;
inline constexpr std::uint16_t kExpiration = 0x0100;
inline constexpr std::uint16_t kMessageId = 0x0080;
inline constexpr std::uint16_t kTimestamp = 0x0040;
inline constexpr std::uint16_t kType = 0x0020;
inline constexpr std::uint16_t kUserId = 0x0010;
inline constexpr std::uint16_t kAppId = 0x0008;
inline constexpr std::uint16_t kClusterId = 0x0004;
/// Every flag the basic class defines.
inline constexpr std::uint16_t kAll = 0xFFFC;
}  // namespace property_flag

/// The basic class's message properties; only the ones set are sent.
struct BasicProperties {
  std::optional<std::string> content_type;
  std::optional<std::string> content_encoding;
  std::optional<FieldTable> headers;
  /// 1 transient, 2 persistent.
  std::optional<std::uint8_t> delivery_mode;
  std::optional<std::uint8_t> priority;
  std::optional<std::string> correlation_id;
  std::optional<std::string> reply_to;
  /// Per-message TTL in milliseconds, as a decimal string.
  std::optional<std::string> expiration;
  std::optional<std::string> message_id;
  /// Seconds since the POSIX epoch.
  std::optional<std::uint64_t> timestamp;
  std::optional<std::string> type;
  /// Validated by RabbitMQ against the connection's user.
  std::optional<std::string> user_id;
  std::optional<std::string> app_id;
  /// Reserved ("cluster-id" in the spec).
  std::optional<std::string> cluster_id;

  /// The presence flags of the properties that are set.
  [[nodiscard]] std::uint16_t flags() const noexcept {
    using namespace property_flag;
    std::uint16_t f = 0;
    if (content_type) f |= kContentType;
    if (content_encoding) f |= kContentEncoding;
    if (headers) f |= kHeaders;
    if (delivery_mode) f |= kDeliveryMode;
    if (priority) f |= kPriority;
    if (correlation_id) f |= kCorrelationId;
    if (reply_to) f |= kReplyTo;
    if (expiration) f |= kExpiration;
    if (message_id) f |= kMessageId;
    if (timestamp) f |= kTimestamp;
    if (type) f |= kType;
    if (user_id) f |= kUserId;
    if (app_id) f |= kAppId;
    if (cluster_id) f |= kClusterId;
    return f;
  }

  friend bool operator==(const BasicProperties&, const BasicProperties&) = default;
};

/// The class id of the basic class, the only content class RabbitMQ uses.
inline constexpr std::uint16_t kBasicClassId = 60;

/// A decoded content header frame.
struct ContentHeader {
  std::uint16_t class_id = kBasicClassId;
  std::uint64_t body_size = 0;
  BasicProperties properties;
};

namespace detail {

/// Appends flags then the properties that are set, in flag order.
KINCIR_DECL void encode_properties(WireWriter& w, const BasicProperties& p) {
  w.u16(p.flags());
  if (p.content_type) w.shortstr(*p.content_type);
  if (p.content_encoding) w.shortstr(*p.content_encoding);
  if (p.headers) encode_table(w, *p.headers);
  if (p.delivery_mode) w.u8(*p.delivery_mode);
  if (p.priority) w.u8(*p.priority);
  if (p.correlation_id) w.shortstr(*p.correlation_id);
  if (p.reply_to) w.shortstr(*p.reply_to);
  if (p.expiration) w.shortstr(*p.expiration);
  if (p.message_id) w.shortstr(*p.message_id);
  if (p.timestamp) w.u64(*p.timestamp);
  if (p.type) w.shortstr(*p.type);
  if (p.user_id) w.shortstr(*p.user_id);
  if (p.app_id) w.shortstr(*p.app_id);
  if (p.cluster_id) w.shortstr(*p.cluster_id);
}

/// Reads flags then the properties they announce into `p`, every property of `p` replaced: the
/// absent ones reset, the present ones assigned in place, so a `p` reused from one header to the
/// next keeps its strings' storage (no allocation per message once they are long enough). An
/// unknown flag (bits 1 and 0: another flag word) is `errc::malformed_content_header`.
KINCIR_DECL void decode_properties(WireReader& r, BasicProperties& p, const FieldLimits& limits) {
  using namespace property_flag;
  const std::uint16_t f = r.u16();
  if ((f & ~kAll) != 0) {
    r.fail(errc::malformed_content_header);
    return;
  }
  const auto str = [&r, f](std::uint16_t flag, std::optional<std::string>& s) {
    if ((f & flag) == 0) {
      s.reset();
    } else if (s) {
      s->assign(r.shortstr());
    } else {
      s.emplace(r.shortstr());
    }
  };
  const auto u8 = [&r, f](std::uint16_t flag, std::optional<std::uint8_t>& v) {
    v = (f & flag) != 0 ? std::optional<std::uint8_t>(r.u8()) : std::nullopt;
  };
  str(kContentType, p.content_type);
  str(kContentEncoding, p.content_encoding);
  if ((f & kHeaders) == 0) {
    p.headers.reset();
  } else {
    if (p.headers) {
      p.headers->entries().clear();
    } else {
      p.headers.emplace();
    }
    decode_table(r, *p.headers, limits);
  }
  u8(kDeliveryMode, p.delivery_mode);
  u8(kPriority, p.priority);
  str(kCorrelationId, p.correlation_id);
  str(kReplyTo, p.reply_to);
  str(kExpiration, p.expiration);
  str(kMessageId, p.message_id);
  p.timestamp = (f & kTimestamp) != 0 ? std::optional<std::uint64_t>(r.u64()) : std::nullopt;
  str(kType, p.type);
  str(kUserId, p.user_id);
  str(kAppId, p.app_id);
  str(kClusterId, p.cluster_id);
}

}  // namespace detail

namespace detail {

/// A content header frame's payload into `class_id`, `body_size` and `p` (see below).
KINCIR_DECL void decode_content_header_to(std::span<const std::uint8_t> payload, std::uint16_t& class_id,
                                          std::uint64_t& body_size, BasicProperties& p, std::error_code& ec,
                                          const FieldLimits& limits) {
  WireReader r(payload, errc::malformed_content_header);
  class_id = r.u16();
  const std::uint16_t weight = r.u16();
  body_size = r.u64();
  if (r.ok() && (class_id != kBasicClassId || weight != 0)) r.fail(errc::malformed_content_header);
  decode_properties(r, p, limits);
  if (r.ok() && !r.at_end()) r.fail(errc::malformed_content_header);
  ec = r.error();
}

}  // namespace detail

/// Decodes a content header frame's payload into `header`, replacing all of it (its property
/// strings keep their storage: a header reused for every message allocates nothing once they
/// are long enough). The class must be basic (60) and the weight 0; otherwise, or on any
/// malformed property, `errc::malformed_content_header`.
KINCIR_DECL void decode_content_header(std::span<const std::uint8_t> payload, ContentHeader& header,
                                       std::error_code& ec, const FieldLimits& limits = {}) {
  detail::decode_content_header_to(payload, header.class_id, header.body_size, header.properties, ec, limits);
}

/// Decodes a content header frame's payload into a new `ContentHeader` (see above).
KINCIR_DECL ContentHeader decode_content_header(std::span<const std::uint8_t> payload, std::error_code& ec,
                                                const FieldLimits& limits = {}) {
  ContentHeader header;
  decode_content_header(payload, header, ec, limits);
  return header;
}

/// Appends a content header payload (class 60, weight 0, body size, properties).
KINCIR_DECL void encode_content_header(detail::WireWriter& w, std::uint64_t body_size, const BasicProperties& p) {
  w.u16(kBasicClassId);
  w.u16(0);
  w.u64(body_size);
  detail::encode_properties(w, p);
}

}  // namespace kincir::rabbitmq::amqp
