/// @file
/// The RabbitMQ adapter's error model: `kincir::rabbitmq::errc` (errors the client detects),
/// `kincir::rabbitmq::reply_code` (AMQP 0-9-1 reply codes sent by the server) and `Diagnostics`,
/// which keeps the server's reply text out of the error code.
#pragma once

#include <kincir/config.hpp>

#include <kincir/core/error.hpp>  // kincir::Error, throw_if, the pattern followed here

#include <cstdint>       // std::uint16_t
#include <string>        // std::string for messages and server text
#include <string_view>   // std::string_view for Diagnostics::assign
#include <system_error>  // std::error_code, std::error_category
#include <type_traits>   // std::true_type

namespace kincir::rabbitmq {

/// Errors detected by the client: malformed input, protocol violations, timeouts.
enum class errc {
  /// A frame is shorter than its header says, or a field runs past the end of its frame.
  malformed_frame = 1,
  /// A frame does not end with the frame-end octet 0xCE.
  bad_frame_end,
  /// A frame is larger than the negotiated `frame_max` (checked before anything is allocated).
  frame_too_large,
  /// A frame type other than method (1), header (2), body (3) or heartbeat (8).
  unknown_frame_type,
  /// A method's arguments do not match its layout (truncated, or bytes left over).
  malformed_method,
  /// A (class id, method id) pair that this client does not know.
  unknown_method,
  /// A field table or array is malformed: unknown type tag, length past its end, bad value.
  malformed_field_table,
  /// Field tables or arrays nest deeper than the decoding limit.
  field_table_too_deep,
  /// A field table holds more values than the decoding limit.
  field_table_too_large,
  /// A content header frame is malformed (wrong class, unknown property flag, truncated).
  malformed_content_header,
  /// A frame that is not valid in the current state: content without a content method, a
  /// method in the middle of a content, a heartbeat on a channel other than 0, ...
  unexpected_frame,
  /// A short string longer than 255 bytes was given to an encoder.
  string_too_long,
  /// The server answered the protocol header with its own: it does not speak AMQP 0-9-1.
  protocol_version_mismatch,
  /// The server does not offer the authentication mechanism asked for (PLAIN or EXTERNAL).
  unsupported_mechanism,
  /// The server tuned `frame_max` below the protocol minimum of 4096 bytes.
  frame_max_too_small,
  /// The opening handshake did not complete in time.
  handshake_timeout,
  /// The closing handshake did not complete in time.
  close_timeout,
  /// Nothing was received from the server for two heartbeat intervals.
  heartbeat_timeout,
  /// The connection is closed (or closing): the operation cannot run.
  connection_closed,
  /// The channel is closed (or closing): pending calls and confirms fail with this.
  channel_closed,
  /// The broker rejected a published message (`basic.nack` in confirm mode).
  message_nacked,
  /// The server cancelled the consumer (queue deleted, node failure).
  consumer_cancelled,
  /// A message body is larger than the configured limit.
  body_too_large,
  /// The channel is not in a state that allows the operation (not open yet, not in confirm mode).
  invalid_state,
  /// An AMQP URI is malformed (the exception's text names the part).
  invalid_uri,
  /// No endpoint accepted a TCP connection in time.
  connect_timeout,
  /// A synchronous call got no reply in time (its channel is then closed).
  call_timeout,
  /// A published message got no confirm in time; its outcome is unknown.
  confirm_timeout,
  /// A mandatory message could not be routed and came back (`basic.return`).
  message_returned,
  /// The connection died before the broker confirmed the message; it may or may not have arrived.
  message_lost,
  /// Every channel id up to the negotiated `channel_max` is in use.
  too_many_channels,
  /// The broker blocked the connection (`connection.blocked`, a resource alarm) for too long.
  connection_blocked,
  /// The connection is down (recovering) and the publisher's outage buffer is full
  /// (`OutagePolicy::fail_fast`): the message was not sent.
  publish_buffer_full,
  /// The connection stayed down (recovering) past the publish's deadline: the message was not
  /// sent.
  connection_recovering,
  /// The delivery came on a channel that has since been reopened (after a connection or channel
  /// recovery): its tag means nothing to the broker, which redelivers the message.
  stale_delivery,
  /// TLS (`amqps`) was asked for, but kincir was compiled without it (define
  /// `KINCIR_RABBITMQ_TLS=1` and link OpenSSL).
  tls_unavailable,
};

/// The category of `errc`; its name is "kincir.rabbitmq".
class error_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "kincir.rabbitmq"; }

  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::malformed_frame: return "malformed frame";
      case errc::bad_frame_end: return "bad frame-end octet";
      case errc::frame_too_large: return "frame larger than frame_max";
      case errc::unknown_frame_type: return "unknown frame type";
      case errc::malformed_method: return "malformed method arguments";
      case errc::unknown_method: return "unknown method";
      case errc::malformed_field_table: return "malformed field table";
      case errc::field_table_too_deep: return "field tables nested too deeply";
      case errc::field_table_too_large: return "field table too large";
      case errc::malformed_content_header: return "malformed content header";
      case errc::unexpected_frame: return "unexpected frame";
      case errc::string_too_long: return "short string longer than 255 bytes";
      case errc::protocol_version_mismatch: return "server does not speak AMQP 0-9-1";
      case errc::unsupported_mechanism: return "server does not offer the authentication mechanism (PLAIN or EXTERNAL)";
      case errc::frame_max_too_small: return "negotiated frame_max below 4096";
      case errc::handshake_timeout: return "connection handshake timed out";
      case errc::close_timeout: return "close handshake timed out";
      case errc::heartbeat_timeout: return "missed heartbeats from the server";
      case errc::connection_closed: return "connection closed";
      case errc::channel_closed: return "channel closed";
      case errc::message_nacked: return "message rejected by the broker";
      case errc::consumer_cancelled: return "consumer cancelled by the server";
      case errc::body_too_large: return "message body too large";
      case errc::invalid_state: return "operation not valid in this state";
      case errc::invalid_uri: return "invalid AMQP URI";
      case errc::connect_timeout: return "connecting timed out";
      case errc::call_timeout: return "no reply from the broker in time";
      case errc::confirm_timeout: return "no publisher confirm in time";
      case errc::message_returned: return "message returned unroutable";
      case errc::message_lost: return "connection lost before the message was confirmed";
      case errc::too_many_channels: return "no free channel id";
      case errc::connection_blocked: return "connection blocked by the broker";
      case errc::publish_buffer_full: return "connection down and the publisher's outage buffer is full";
      case errc::connection_recovering: return "connection still down (recovering) at the publish deadline";
      case errc::tls_unavailable: return "TLS requested, but kincir was built without KINCIR_RABBITMQ_TLS";
      case errc::stale_delivery: return "delivery from before the channel was reopened (the broker redelivers it)";
    }
    return "unknown kincir.rabbitmq error";
  }
};

/// The one instance of the client error category.
inline const std::error_category& error_category() noexcept {
  static const error_category_impl instance;
  return instance;
}

/// Makes `errc` values usable as `std::error_code` (found by ADL).
inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

/// AMQP 0-9-1 reply codes (the spec's constants), carried by `connection.close`,
/// `channel.close` and `basic.return`. Soft errors close a channel, hard errors the connection.
enum class reply_code : std::uint16_t {
  /// Soft: the content is too large for the server to accept.
  content_too_large = 311,
  /// Soft: a mandatory message could not be routed to any queue.
  no_route = 312,
  /// Soft: an immediate message found no consumer (not used by RabbitMQ 3+).
  no_consumers = 313,
  /// Hard: an operator or the broker closed the connection (shutdown, management UI).
  connection_forced = 320,
  /// Hard: the virtual host does not exist.
  invalid_path = 402,
  /// Soft: access refused (permissions, exclusive queue of another connection; 403 on login).
  access_refused = 403,
  /// Soft: the exchange or queue does not exist.
  not_found = 404,
  /// Soft: the resource is locked by another connection (exclusive queue).
  resource_locked = 405,
  /// Soft: a precondition failed (redeclared with other arguments, unknown delivery tag).
  precondition_failed = 406,
  /// Hard: a malformed frame.
  frame_error = 501,
  /// Hard: a frame with bad field values.
  syntax_error = 502,
  /// Hard: an invalid sequence of frames or an invalid method.
  command_invalid = 503,
  /// Hard: a channel that is not open, or one opened twice.
  channel_error = 504,
  /// Hard: a frame that was not expected (e.g. interleaved content).
  unexpected_frame = 505,
  /// Hard: the server ran out of a resource.
  resource_error = 506,
  /// Hard: an operation the server does not allow (vhost access, immediate flag).
  not_allowed = 530,
  /// Hard: a feature the server does not implement.
  not_implemented = 540,
  /// Hard: the server had an internal error.
  internal_error = 541,
};

/// True for the reply codes that close only a channel (311, 312, 313, 403, 404, 405, 406).
constexpr bool is_soft_error(reply_code code) noexcept {
  switch (code) {
    case reply_code::content_too_large:
    case reply_code::no_route:
    case reply_code::no_consumers:
    case reply_code::access_refused:
    case reply_code::not_found:
    case reply_code::resource_locked:
    case reply_code::precondition_failed: return true;
    default: return false;
  }
}

/// The category of `reply_code`; its name is "amqp". Values are the codes themselves.
class reply_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "amqp"; }

  std::string message(int value) const override {
    switch (static_cast<reply_code>(value)) {
      case reply_code::content_too_large: return "CONTENT_TOO_LARGE (311)";
      case reply_code::no_route: return "NO_ROUTE (312)";
      case reply_code::no_consumers: return "NO_CONSUMERS (313)";
      case reply_code::connection_forced: return "CONNECTION_FORCED (320)";
      case reply_code::invalid_path: return "INVALID_PATH (402)";
      case reply_code::access_refused: return "ACCESS_REFUSED (403)";
      case reply_code::not_found: return "NOT_FOUND (404)";
      case reply_code::resource_locked: return "RESOURCE_LOCKED (405)";
      case reply_code::precondition_failed: return "PRECONDITION_FAILED (406)";
      case reply_code::frame_error: return "FRAME_ERROR (501)";
      case reply_code::syntax_error: return "SYNTAX_ERROR (502)";
      case reply_code::command_invalid: return "COMMAND_INVALID (503)";
      case reply_code::channel_error: return "CHANNEL_ERROR (504)";
      case reply_code::unexpected_frame: return "UNEXPECTED_FRAME (505)";
      case reply_code::resource_error: return "RESOURCE_ERROR (506)";
      case reply_code::not_allowed: return "NOT_ALLOWED (530)";
      case reply_code::not_implemented: return "NOT_IMPLEMENTED (540)";
      case reply_code::internal_error: return "INTERNAL_ERROR (541)";
    }
    return "AMQP reply code " + std::to_string(value);
  }
};

/// The one instance of the reply-code category.
inline const std::error_category& reply_category() noexcept {
  static const reply_category_impl instance;
  return instance;
}

/// Makes `reply_code` values usable as `std::error_code` (found by ADL).
inline std::error_code make_error_code(reply_code e) noexcept { return {static_cast<int>(e), reply_category()}; }

/// The error code for a reply code received from the server: 200 (success) gives no error.
inline std::error_code reply_error(std::uint16_t code) noexcept {
  return code == 200 ? std::error_code() : std::error_code(code, reply_category());
}

/// What the server said when it closed a channel or the connection, or returned a message:
/// its reply text and the method it was answering. Kept apart from the error code.
class Diagnostics {
 public:
  /// The server's reply text ("NOT_FOUND - no exchange 'x' in vhost '/'"); empty if none.
  [[nodiscard]] const std::string& server_message() const noexcept { return server_message_; }
  /// The class id of the method that caused the error (0 if none).
  [[nodiscard]] std::uint16_t class_id() const noexcept { return class_id_; }
  /// The method id of the method that caused the error (0 if none).
  [[nodiscard]] std::uint16_t method_id() const noexcept { return method_id_; }

  void assign(std::string_view text, std::uint16_t class_id = 0, std::uint16_t method_id = 0) {
    server_message_.assign(text);
    class_id_ = class_id;
    method_id_ = method_id;
  }

  void clear() noexcept {
    server_message_.clear();
    class_id_ = 0;
    method_id_ = 0;
  }

 private:
  std::string server_message_;
  std::uint16_t class_id_ = 0;
  std::uint16_t method_id_ = 0;
};

}  // namespace kincir::rabbitmq

template <>
struct std::is_error_code_enum<kincir::rabbitmq::errc> : std::true_type {};

template <>
struct std::is_error_code_enum<kincir::rabbitmq::reply_code> : std::true_type {};
