/// @file
/// AMQP frames: the protocol header, frame constants, the frame reader (complete frame or "need
/// more", frame-end and `frame_max` checked before anyone allocates) and frame writers.
///
/// Frame layout: `type:u8 | channel:u16 | size:u32 | payload[size] | 0xCE`, big-endian.
#pragma once

#include <kincir/config.hpp>

#include <kincir/rabbitmq/amqp/byte_buffer.hpp>  // ByteBuffer, what frames are written to
#include <kincir/rabbitmq/amqp/detail/wire.hpp>  // load_u16/load_u32, store_u16/store_u32
#include <kincir/rabbitmq/amqp/error.hpp>        // errc

#include <array>         // kProtocolHeader
#include <cstdint>       // std::uint8_t ... std::uint32_t
#include <span>          // std::span input and payload views
#include <system_error>  // std::error_code

namespace kincir::rabbitmq::amqp {

/// What a client sends first: "AMQP" 0 0 9 1.
inline constexpr std::array<std::uint8_t, 8> kProtocolHeader = {'A', 'M', 'Q', 'P', 0, 0, 9, 1};

/// Frame types (spec constants FRAME-METHOD, FRAME-HEADER, FRAME-BODY, FRAME-HEARTBEAT).
enum class FrameType : std::uint8_t { method = 1, header = 2, body = 3, heartbeat = 8 };

/// The octet that ends every frame (FRAME-END).
inline constexpr std::uint8_t kFrameEnd = 0xCE;
/// type + channel + size.
inline constexpr std::size_t kFrameHeaderSize = 7;
/// Header and frame-end: a frame is its payload plus this.
inline constexpr std::size_t kFrameOverhead = 8;
/// The smallest `frame_max` a peer may negotiate, and the limit before tuning (FRAME-MIN-SIZE).
inline constexpr std::uint32_t kFrameMinSize = 4096;
/// RabbitMQ's default `frame_max`.
inline constexpr std::uint32_t kDefaultFrameMax = 131072;

/// A complete frame, its payload viewing the reader's input.
struct Frame {
  FrameType type = FrameType::heartbeat;
  std::uint16_t channel = 0;
  std::span<const std::uint8_t> payload;

  /// Bytes the frame takes on the wire.
  [[nodiscard]] std::size_t wire_size() const noexcept { return payload.size() + kFrameOverhead; }
};

/// What `FrameReader::parse` found at the start of its input.
enum class ParseStatus : std::uint8_t {
  /// `frame` is complete; `size` bytes were used.
  complete,
  /// The input holds only part of a frame; `size` is how many bytes the whole frame needs
  /// (already checked against `frame_max`, so a caller may size its buffer with it).
  need_more,
  /// The input is not a valid frame; `ec` says why. The connection must be closed.
  error,
};

struct ParseResult {
  ParseStatus status = ParseStatus::need_more;
  Frame frame;
  std::size_t size = 0;
};

/// Splits a byte stream into frames without copying or allocating. Checks the frame type,
/// the negotiated `frame_max` (as soon as the 7-byte header is there, before the payload is
/// waited for) and the frame-end octet. Stateless apart from the limit, so one reader can be
/// called with whatever the socket delivered so far.
class FrameReader {
 public:
  /// Until connection.tune, frames are limited to the protocol minimum (4096 bytes).
  explicit FrameReader(std::uint32_t frame_max = kFrameMinSize) noexcept : frame_max_(frame_max) {}

  /// The largest frame accepted, header and frame-end included; 0 means no limit.
  void set_frame_max(std::uint32_t frame_max) noexcept { frame_max_ = frame_max; }
  [[nodiscard]] std::uint32_t frame_max() const noexcept { return frame_max_; }

  /// Parses the frame at the start of `in`. Errors: `errc::unknown_frame_type`,
  /// `errc::protocol_version_mismatch` (the server sent its own protocol header),
  /// `errc::frame_too_large`, `errc::bad_frame_end`.
  [[nodiscard]] ParseResult parse(std::span<const std::uint8_t> in, std::error_code& ec) const noexcept {
    ec.clear();
    ParseResult result;
    if (in.empty()) {
      result.size = kFrameHeaderSize;
      return result;
    }
    switch (in[0]) {
      case 1:
      case 2:
      case 3:
      case 8: break;
      case 'A': return fail(result, ec, errc::protocol_version_mismatch);
      default: return fail(result, ec, errc::unknown_frame_type);
    }
    if (in.size() < kFrameHeaderSize) {
      result.size = kFrameHeaderSize;
      return result;
    }
    const std::uint64_t payload_size = detail::load_u32(in.data() + 3);
    const std::uint64_t total = payload_size + kFrameOverhead;
    if (frame_max_ != 0 && total > frame_max_) return fail(result, ec, errc::frame_too_large);
    if (in.size() < total) {
      result.size = static_cast<std::size_t>(total);
      return result;
    }
    if (in[static_cast<std::size_t>(total) - 1] != kFrameEnd) return fail(result, ec, errc::bad_frame_end);
    result.status = ParseStatus::complete;
    result.size = static_cast<std::size_t>(total);
    result.frame.type = static_cast<FrameType>(in[0]);
    result.frame.channel = detail::load_u16(in.data() + 1);
    result.frame.payload = in.subspan(kFrameHeaderSize, static_cast<std::size_t>(payload_size));
    return result;
  }

 private:
  static ParseResult fail(ParseResult& result, std::error_code& ec, errc e) noexcept {
    ec = e;
    result.status = ParseStatus::error;
    result.size = 0;
    return result;
  }

  std::uint32_t frame_max_;
};

/// Starts a frame in `out` and returns where its payload starts; `end_frame` patches the size.
inline std::size_t begin_frame(ByteBuffer& out, FrameType type, std::uint16_t channel) {
  std::uint8_t* p = out.extend(kFrameHeaderSize);
  p[0] = static_cast<std::uint8_t>(type);
  detail::store_u16(p + 1, channel);
  return out.size();
}

/// Ends the frame started at `payload_start`: patches its size and appends the frame-end octet.
inline void end_frame(ByteBuffer& out, std::size_t payload_start) {
  detail::store_u32(out.data() + payload_start - 4, static_cast<std::uint32_t>(out.size() - payload_start));
  *out.extend(1) = kFrameEnd;
}

/// Appends a heartbeat frame (type 8, channel 0, empty).
inline void encode_heartbeat(ByteBuffer& out) {
  static constexpr std::uint8_t kHeartbeat[] = {8, 0, 0, 0, 0, 0, 0, kFrameEnd};
  out.append(kHeartbeat, sizeof kHeartbeat);
}

}  // namespace kincir::rabbitmq::amqp
