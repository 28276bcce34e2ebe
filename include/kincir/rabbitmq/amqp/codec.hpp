/// @file
/// Frame-level encoders: a method frame, a content (header frame then body frames split at
/// `frame_max - 8` bytes, the body borrowed, never copied) and a whole `basic.publish`.
#pragma once

#include <kincir/config.hpp>

#include <kincir/rabbitmq/amqp/detail/wire.hpp>    // WireWriter
#include <kincir/rabbitmq/amqp/error.hpp>          // errc
#include <kincir/rabbitmq/amqp/frame.hpp>          // begin_frame, end_frame, FrameType
#include <kincir/rabbitmq/amqp/methods.hpp>        // encode_method, BasicPublish
#include <kincir/rabbitmq/amqp/output_buffer.hpp>  // OutputBuffer
#include <kincir/rabbitmq/amqp/properties.hpp>     // BasicProperties, encode_content_header

#include <cstdint>       // std::uint16_t, std::uint32_t
#include <span>          // body views
#include <system_error>  // std::error_code

namespace kincir::rabbitmq::amqp {

/// Appends one method frame for `m` on `channel`. An argument that cannot be encoded (a short
/// string over 255 bytes) sets `ec` and leaves `out` as it was.
template <class M>
void encode_method_frame(ByteBuffer& out, std::uint16_t channel, const M& m, std::error_code& ec) {
  const std::size_t size = out.size();
  const std::size_t start = begin_frame(out, FrameType::method, channel);
  detail::WireWriter w(out);
  encode_method(w, m);
  end_frame(out, start);
  ec = w.error();
  if (ec) out.resize_down(size);
}

/// The most body bytes one body frame carries under `frame_max` (0: no limit).
constexpr std::size_t max_body_chunk(std::uint32_t frame_max) noexcept {
  return frame_max == 0 ? static_cast<std::size_t>(-1) : frame_max - kFrameOverhead;
}

/// Appends a content: the header frame, then `body` in body frames of at most `frame_max - 8`
/// bytes each (none for an empty body). The body is borrowed (`out` only points at it) unless it
/// is small enough to be copied (`OutputBuffer::copies_body`): either way it must stay alive
/// until written.
/// `frame_max` must be at least `kFrameMinSize` (or 0 for no limit). A header frame (the
/// properties) larger than `frame_max` is `errc::frame_too_large`, and `out` is left unchanged.
KINCIR_DECL void encode_content(OutputBuffer& out, std::uint16_t channel, const BasicProperties& properties,
                                std::span<const std::uint8_t> body, std::uint32_t frame_max, std::error_code& ec) {
  ByteBuffer& bytes = out.bytes();
  const std::size_t size = bytes.size();
  const std::size_t start = begin_frame(bytes, FrameType::header, channel);
  detail::WireWriter w(bytes);
  encode_content_header(w, body.size(), properties);
  end_frame(bytes, start);
  ec = w.error();
  // The header frame cannot be split: properties (headers) past frame_max would make the peer
  // close the whole connection.
  if (!ec && frame_max != 0 && bytes.size() - size > frame_max) ec = errc::frame_too_large;
  if (ec) {
    bytes.resize_down(size);
    return;
  }
  const std::size_t chunk = max_body_chunk(frame_max);
  const bool copy = out.copies_body(body.size());  // small bodies: cheaper than a scatter entry
  while (!body.empty()) {
    const std::size_t n = body.size() < chunk ? body.size() : chunk;
    std::uint8_t* header = bytes.extend(kFrameHeaderSize);
    header[0] = static_cast<std::uint8_t>(FrameType::body);
    detail::store_u16(header + 1, channel);
    detail::store_u32(header + 3, static_cast<std::uint32_t>(n));
    if (copy)
      bytes.append(body.data(), n);
    else
      out.append_borrowed(body.first(n));
    *bytes.extend(1) = kFrameEnd;
    body = body.subspan(n);
  }
}

/// Appends a whole publish: `basic.publish`, its content header and its body frames.
KINCIR_DECL void encode_publish(OutputBuffer& out, std::uint16_t channel, const BasicPublish& publish,
                                const BasicProperties& properties, std::span<const std::uint8_t> body,
                                std::uint32_t frame_max, std::error_code& ec) {
  const std::size_t size = out.bytes().size();
  encode_method_frame(out.bytes(), channel, publish, ec);
  if (!ec) encode_content(out, channel, properties, body, frame_max, ec);
  if (ec) out.bytes().resize_down(size);
}

}  // namespace kincir::rabbitmq::amqp
