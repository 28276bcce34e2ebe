/// @file
/// The channel-level protocol, sans I/O: open and close, a FIFO of pending synchronous calls,
/// soft errors that close only the channel, publishing with confirms, and consuming (deliveries
/// reassembled from their frames, acks, server-side cancel).
///
/// Operations (`open_channel`, `send_method`, `publish`, `ack` ...) append frames to the
/// state's `out`; `resume(ChannelState&, Event)` takes every frame the server sends on the
/// channel and says what happened. Nothing here blocks or waits: the driver writes `out`
/// whenever it is not empty and keeps, next to `pending`, whatever continuation each call has.
#pragma once

#include <kincir/config.hpp>

#include <kincir/rabbitmq/amqp/action.hpp>         // Event, Action
#include <kincir/rabbitmq/amqp/codec.hpp>          // encode_method_frame, encode_publish
#include <kincir/rabbitmq/amqp/confirms.hpp>       // ConfirmTracker, TagRange
#include <kincir/rabbitmq/amqp/content.hpp>        // ContentAssembler, Delivery, ReturnedMessage
#include <kincir/rabbitmq/amqp/error.hpp>          // errc, Diagnostics, reply_error
#include <kincir/rabbitmq/amqp/frame.hpp>          // Frame, FrameType
#include <kincir/rabbitmq/amqp/methods.hpp>        // channel.*, basic.*, confirm.* methods
#include <kincir/rabbitmq/amqp/output_buffer.hpp>  // OutputBuffer
#include <kincir/rabbitmq/amqp/properties.hpp>     // BasicProperties

#include <cstdint>       // ids, tags
#include <deque>         // pending calls
#include <span>          // bodies
#include <string>        // consumer tags, reply text
#include <string_view>   // close text
#include <system_error>  // std::error_code
#include <type_traits>   // std::is_same_v
#include <utility>       // std::move
#include <variant>       // std::get_if on Method
#include <vector>        // settled ranges

namespace kincir::rabbitmq::amqp {

/// Where a channel is in its life.
enum class ChannelPhase : std::uint8_t {
  /// Not open (never opened, or closed: `error` says why).
  closed,
  /// channel.open sent, open-ok not yet received.
  opening,
  open,
  /// channel.close sent: everything but close-ok and close is discarded. The server's own
  /// close crossing ours is answered with close-ok and remembered; the channel stays `closing`
  /// until the close-ok for ours arrives. The id is not free before then: `open_channel`
  /// refuses a closing channel, and a driver that allocates ids frees one only when its phase
  /// is `closed` (after the `channel_closed` action).
  closing,
};

/// One channel's protocol state.
struct ChannelState {
  explicit ChannelState(std::uint16_t channel_id = 1, std::uint32_t negotiated_frame_max = kDefaultFrameMax)
      : id(channel_id), frame_max(negotiated_frame_max) {}

  std::uint16_t id;
  /// Bodies are split into frames of at most `frame_max - 8` bytes.
  std::uint32_t frame_max;
  ChannelPhase phase = ChannelPhase::closed;
  /// Frames to write.
  OutputBuffer out;
  /// Synchronous calls sent and not yet answered, oldest first; the server answers in order.
  std::deque<MethodId> pending;
  /// The answer reported by the latest `Action::Kind::reply`.
  Method reply;
  /// confirm.select was sent: publishes get delivery tags.
  bool confirm_mode = false;
  ConfirmTracker confirms;
  /// Tags settled by the latest `confirm` or `channel_closed` action.
  std::vector<TagRange> settled;
  /// The message of the latest `delivery` action (and of a basic.get-ok `reply`).
  Delivery delivery;
  /// Scratch for decoding basic.deliver: its strings trade storage with `delivery`'s, so a
  /// stream of deliveries decodes without allocating.
  BasicDeliver deliver_decoded;
  /// The message of the latest `returned` action.
  ReturnedMessage returned;
  /// The consumer of the latest `consumer_cancelled` action.
  std::string cancelled_consumer;
  /// The server's text when it closed the channel (also when its close crossed ours).
  Diagnostics diagnostics;
  /// Why the channel closed. While `closing`, the reply code of a crossing server close.
  std::error_code error;
  /// While `closing`: the server's own channel.close arrived (and was answered with close-ok).
  bool server_close_received = false;
  ContentLimits limits;

  // Content reassembly.
  enum class Content : std::uint8_t { none, deliver, returned, get_ok, discarded };
  Content content_kind = Content::none;
  ContentAssembler content;
};

namespace detail {

inline std::error_code not_open(const ChannelState& st) noexcept {
  switch (st.phase) {
    case ChannelPhase::open: return {};
    case ChannelPhase::opening: return errc::invalid_state;
    default: return errc::channel_closed;
  }
}

/// Marks the channel closed: pending calls are dropped and every outstanding confirm is
/// reported in `settled`.
inline Action close_channel_state(ChannelState& st, std::error_code ec) {
  st.phase = ChannelPhase::closed;
  st.error = ec ? ec : std::error_code(errc::channel_closed);
  st.server_close_received = false;
  st.pending.clear();
  st.confirms.fail_all(st.settled);
  st.confirm_mode = false;
  st.content.reset();
  st.content_kind = ChannelState::Content::none;
  return Action{Action::Kind::channel_closed, ec};
}

inline Action channel_protocol_error(ChannelState& st, std::error_code ec) {
  st.error = ec;
  return Action{Action::Kind::protocol_error, ec};
}

}  // namespace detail

/// Sends channel.open. Error: `errc::invalid_state` unless the channel is closed; in
/// particular a channel still `closing` (waiting for the close-ok of its channel.close) cannot
/// be reopened.
KINCIR_DECL void open_channel(ChannelState& st, std::error_code& ec) {
  if (st.phase != ChannelPhase::closed) {
    ec = errc::invalid_state;
    return;
  }
  encode_method_frame(st.out.bytes(), st.id, ChannelOpen{}, ec);
  if (ec) return;
  st.phase = ChannelPhase::opening;
  st.error.clear();
  st.server_close_received = false;
  st.diagnostics.clear();
  st.confirms.reset();
  st.pending.push_back(MethodId::channel_open);
}

/// Sends a method without content (qos, consume, declare, bind, ack ...). If the method
/// expects a reply it joins `pending`; confirm.select switches publishes to confirm mode at
/// once (the broker numbers the publishes that follow it). Errors: `errc::invalid_state`
/// before open-ok, `errc::channel_closed`, `errc::string_too_long`.
template <class M>
void send_method(ChannelState& st, const M& m, std::error_code& ec) {
  static_assert(!M::kHasContent, "content-bearing methods go through publish()");
  static_assert(!std::is_same_v<M, ChannelOpen> && !std::is_same_v<M, ChannelClose>,
                "use open_channel() and close_channel()");
  ec = detail::not_open(st);
  if (ec) return;
  encode_method_frame(st.out.bytes(), st.id, m, ec);
  if (ec) return;
  if (m.expects_reply()) st.pending.push_back(M::kId);
  if constexpr (std::is_same_v<M, ConfirmSelect>) {
    if (!st.confirm_mode) st.confirms.reset();
    st.confirm_mode = true;
  }
}

/// Throwing overload of `send_method`.
template <class M>
void send_method(ChannelState& st, const M& m) {
  std::error_code ec;
  send_method(st, m, ec);
  throw_if(ec, "send_method");
}

/// Sends basic.publish, its content header and its body (borrowed, see `OutputBuffer`).
/// Returns the delivery tag in confirm mode, 0 otherwise.
KINCIR_DECL std::uint64_t publish(ChannelState& st, const BasicPublish& method, const BasicProperties& properties,
                                  std::span<const std::uint8_t> body, std::error_code& ec) {
  ec = detail::not_open(st);
  if (ec) return 0;
  encode_publish(st.out, st.id, method, properties, body, st.frame_max, ec);
  if (ec) return 0;
  return st.confirm_mode ? st.confirms.next() : 0;
}

/// Acknowledges delivery `tag` (and every earlier one with `multiple`).
KINCIR_DECL void ack(ChannelState& st, std::uint64_t tag, bool multiple, std::error_code& ec) {
  BasicAck m;
  m.delivery_tag = tag;
  m.multiple = multiple;
  send_method(st, m, ec);
}

/// Rejects delivery `tag` (and every earlier one with `multiple`), requeueing it if asked.
KINCIR_DECL void nack(ChannelState& st, std::uint64_t tag, bool multiple, bool requeue, std::error_code& ec) {
  BasicNack m;
  m.delivery_tag = tag;
  m.multiple = multiple;
  m.requeue = requeue;
  send_method(st, m, ec);
}

/// Rejects one delivery, requeueing it if asked.
KINCIR_DECL void reject(ChannelState& st, std::uint64_t tag, bool requeue, std::error_code& ec) {
  BasicReject m;
  m.delivery_tag = tag;
  m.requeue = requeue;
  send_method(st, m, ec);
}

/// Sends channel.close; the channel then discards everything until close-ok, which reports
/// `channel_closed`: with no error, or with the reply code of the server's own channel.close if
/// one crossed ours (it is answered with close-ok at once, its text goes to `diagnostics`, and
/// the channel stays `closing` until our close-ok). Error: `errc::channel_closed` if not open
/// or opening.
KINCIR_DECL void close_channel(ChannelState& st, std::error_code& ec, std::uint16_t code = 200,
                               std::string_view text = "", std::uint16_t class_id = 0, std::uint16_t method_id = 0) {
  if (st.phase != ChannelPhase::open && st.phase != ChannelPhase::opening) {
    ec = errc::channel_closed;
    return;
  }
  ChannelClose close;
  close.reply_code = code;
  close.reply_text = text;
  close.class_id = class_id;
  close.method_id = method_id;
  encode_method_frame(st.out.bytes(), st.id, close, ec);
  if (!ec) st.phase = ChannelPhase::closing;
}

/// The connection is gone: the channel closes with `ec`, its calls and confirms fail.
KINCIR_DECL Action abandon(ChannelState& st, std::error_code ec) {
  st.settled.clear();
  st.out.clear();
  return detail::close_channel_state(st, ec);
}

namespace detail {

KINCIR_DECL Action on_channel_content(ChannelState& st, const Event& ev) {
  using Content = ChannelState::Content;
  if (st.content_kind == Content::none) return channel_protocol_error(st, errc::unexpected_frame);
  // The header's properties are decoded straight into the message they belong to, in place: its
  // strings keep their storage from one message to the next (no allocation per message).
  BasicProperties& properties = st.content_kind == Content::returned    ? st.returned.properties
                                : st.content_kind == Content::discarded ? st.content.properties()
                                                                        : st.delivery.properties;
  std::error_code ec;
  if (!st.content.feed(ev.frame, ev.source, ec, st.limits, properties)) {
    if (ec) return channel_protocol_error(st, ec);
    return Action::none();
  }
  const Content kind = st.content_kind;
  st.content_kind = Content::none;
  switch (kind) {
    case Content::deliver: st.delivery.body = st.content.take_body(); return Action{Action::Kind::delivery, {}};
    case Content::returned: st.returned.body = st.content.take_body(); return Action{Action::Kind::returned, {}};
    case Content::get_ok:
      st.delivery.body = st.content.take_body();
      st.pending.pop_front();
      return Action{Action::Kind::reply, {}};
    default: return Action::none();
  }
}

/// Methods while closing (spec: after sending close, discard everything but close and
/// close-ok; answer a close with close-ok). Close-ok ends the close and reports the crossing
/// close's code if there was one. The server's crossing close is answered with close-ok and
/// remembered, but the channel stays `closing`: the close-ok for ours is still to come, and the
/// id must not be reused before it. A second close is a protocol error. Content methods have
/// their frames discarded; the rest is dropped.
KINCIR_DECL Action on_closing_method(ChannelState& st, Method& m) {
  using Content = ChannelState::Content;
  if (std::holds_alternative<ChannelCloseOk>(m))
    return close_channel_state(st, st.server_close_received ? st.error : std::error_code());
  if (auto* close = std::get_if<ChannelClose>(&m)) {
    if (st.server_close_received) return channel_protocol_error(st, errc::unexpected_frame);
    st.server_close_received = true;
    st.diagnostics.assign(close->reply_text, close->class_id, close->method_id);
    st.error = reply_error(close->reply_code);
    std::error_code ec;
    encode_method_frame(st.out.bytes(), st.id, ChannelCloseOk{}, ec);
    return Action::none();
  }
  if (std::holds_alternative<BasicDeliver>(m) || std::holds_alternative<BasicReturn>(m) ||
      std::holds_alternative<BasicGetOk>(m)) {
    st.content_kind = Content::discarded;
    st.content.begin();
  }
  return Action::none();
}

/// basic.deliver, the method of every message consumed: decoded into `st.delivery` through a
/// scratch whose strings trade storage with it, without a `Method` (no allocation per delivery).
KINCIR_DECL Action on_basic_deliver(ChannelState& st, const Event& ev) {
  std::error_code ec;
  BasicDeliver& d = st.deliver_decoded;
  decode_method_as(ev.frame.payload, d, ec, st.limits.fields);
  if (ec) return channel_protocol_error(st, ec);
  st.delivery.consumer_tag.swap(d.consumer_tag);
  st.delivery.delivery_tag = d.delivery_tag;
  st.delivery.redelivered = d.redelivered;
  st.delivery.exchange.swap(d.exchange);
  st.delivery.routing_key.swap(d.routing_key);
  st.delivery.message_count = 0;
  st.content_kind = ChannelState::Content::deliver;
  st.content.begin();
  return Action::none();
}

/// Whether a method frame's payload starts with class `class_id`, method `method_id`.
KINCIR_DECL bool is_method(std::span<const std::uint8_t> payload, std::uint16_t class_id,
                           std::uint16_t method_id) noexcept {
  return payload.size() >= 4 && payload[0] == (class_id >> 8) && payload[1] == (class_id & 0xFF) &&
         payload[2] == (method_id >> 8) && payload[3] == (method_id & 0xFF);
}

KINCIR_DECL Action on_channel_method(ChannelState& st, const Event& ev) {
  using Content = ChannelState::Content;
  if (st.content_kind != Content::none) return channel_protocol_error(st, errc::unexpected_frame);
  if (st.phase != ChannelPhase::closing && is_method(ev.frame.payload, BasicDeliver::kClassId, BasicDeliver::kMethodId))
    return on_basic_deliver(st, ev);
  Method m;
  std::error_code ec;
  const MethodId id = decode_method(ev.frame.payload, m, ec, st.limits.fields);
  if (ec) return channel_protocol_error(st, ec);
  if (st.phase == ChannelPhase::closing) return on_closing_method(st, m);

  switch (id) {
    case MethodId::channel_close: {
      auto& close = std::get<ChannelClose>(m);
      st.diagnostics.assign(close.reply_text, close.class_id, close.method_id);
      encode_method_frame(st.out.bytes(), st.id, ChannelCloseOk{}, ec);
      return close_channel_state(st, reply_error(close.reply_code));
    }
    case MethodId::basic_deliver: return on_basic_deliver(st, ev);  // not reached: taken above
    case MethodId::basic_return: {
      auto& ret = std::get<BasicReturn>(m);
      st.returned.reply_code = ret.reply_code;
      st.returned.reply_text = std::move(ret.reply_text);
      st.returned.exchange = std::move(ret.exchange);
      st.returned.routing_key = std::move(ret.routing_key);
      st.content_kind = Content::returned;
      st.content.begin();
      return Action::none();
    }
    case MethodId::basic_get_ok: {
      if (st.pending.empty() || st.pending.front() != MethodId::basic_get)
        return channel_protocol_error(st, errc::unexpected_frame);
      auto& get = std::get<BasicGetOk>(m);
      st.delivery.consumer_tag.clear();
      st.delivery.delivery_tag = get.delivery_tag;
      st.delivery.redelivered = get.redelivered;
      st.delivery.exchange = get.exchange;
      st.delivery.routing_key = get.routing_key;
      st.delivery.message_count = get.message_count;
      st.reply = std::move(m);
      st.content_kind = Content::get_ok;
      st.content.begin();
      return Action::none();
    }
    case MethodId::basic_ack:
    case MethodId::basic_nack: {
      if (!st.confirm_mode) return channel_protocol_error(st, errc::unexpected_frame);
      const bool is_ack = id == MethodId::basic_ack;
      const std::uint64_t tag = is_ack ? std::get<BasicAck>(m).delivery_tag : std::get<BasicNack>(m).delivery_tag;
      const bool multiple = is_ack ? std::get<BasicAck>(m).multiple : std::get<BasicNack>(m).multiple;
      if (st.confirms.settle(tag, multiple, st.settled) == 0) return Action::none();
      return Action{Action::Kind::confirm, is_ack ? std::error_code() : std::error_code(errc::message_nacked)};
    }
    case MethodId::basic_cancel: {
      auto& cancel = std::get<BasicCancel>(m);
      st.cancelled_consumer = std::move(cancel.consumer_tag);
      if (!cancel.nowait) {
        BasicCancelOk ok;
        ok.consumer_tag = st.cancelled_consumer;
        encode_method_frame(st.out.bytes(), st.id, ok, ec);
      }
      return Action{Action::Kind::consumer_cancelled, {}};
    }
    case MethodId::channel_flow: {
      ChannelFlowOk ok;
      ok.active = std::get<ChannelFlow>(m).active;
      encode_method_frame(st.out.bytes(), st.id, ok, ec);
      return Action::none();
    }
    default: break;
  }
  if (st.pending.empty() || !is_reply_to(st.pending.front(), id))
    return channel_protocol_error(st, errc::unexpected_frame);
  st.pending.pop_front();
  if (id == MethodId::channel_open_ok) st.phase = ChannelPhase::open;
  st.reply = std::move(m);
  return Action{Action::Kind::reply, {}};
}

}  // namespace detail

/// Feeds the channel a frame the server sent on it (or `Event::failed` when the connection
/// failed). Returns what happened:
/// - `reply`: the oldest pending call was answered; `st.reply` holds the answer (and for
///   basic.get-ok, `st.delivery` the message);
/// - `delivery`: `st.delivery` holds a complete message (body sliced from `ev.source` when
///   it came in one frame);
/// - `returned`: `st.returned` holds an unroutable mandatory message (it precedes its confirm);
/// - `confirm`: `st.settled` holds the tags acked (`ec` empty) or nacked (`message_nacked`);
/// - `consumer_cancelled`: the server cancelled `st.cancelled_consumer` (cancel-ok queued);
/// - `channel_closed`: by the server (`ec` is its reply code, close-ok queued, text in
///   `st.diagnostics`) or at the close-ok for our close (`ec` empty, or the reply code of a
///   server close that crossed ours); pending calls are dropped and every outstanding confirm
///   is in `st.settled`. A server close crossing ours gives `none` (close-ok queued): the
///   channel stays `closing` until our close-ok;
/// - `protocol_error`: a connection-level error; close the connection with `reply_code_for`;
/// - `none`: a frame of a message still being reassembled, or nothing to report.
KINCIR_DECL Action resume(ChannelState& st, const Event& ev) {
  st.settled.clear();
  if (ev.kind == Event::Kind::failed) return abandon(st, ev.ec);
  if (ev.kind != Event::Kind::frame) return Action::none();
  if (ev.frame.channel != st.id || st.phase == ChannelPhase::closed)
    return detail::channel_protocol_error(st, errc::unexpected_frame);
  switch (ev.frame.type) {
    case FrameType::header:
    case FrameType::body: return detail::on_channel_content(st, ev);
    case FrameType::method: return detail::on_channel_method(st, ev);
    default: return detail::channel_protocol_error(st, errc::unexpected_frame);
  }
}

}  // namespace kincir::rabbitmq::amqp
