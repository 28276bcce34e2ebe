/// @file
/// The connection-level protocol, sans I/O: configuration and tuning negotiation, the opening
/// handshake (`HandshakeAlgo`), the client-initiated close (`CloseAlgo`) and the steady state on
/// channel 0 (`resume(ConnectionState&, Event)`: server close, blocked/unblocked, heartbeats).
#pragma once

#include <kincir/config.hpp>

#include <kincir/rabbitmq/amqp/action.hpp>            // Event, Action
#include <kincir/rabbitmq/amqp/codec.hpp>             // encode_method_frame
#include <kincir/rabbitmq/amqp/detail/coroutine.hpp>  // KINCIR_AMQP_CORO_BEGIN, KINCIR_AMQP_YIELD
#include <kincir/rabbitmq/amqp/error.hpp>             // errc, reply_code, Diagnostics
#include <kincir/rabbitmq/amqp/field_table.hpp>       // client and server properties
#include <kincir/rabbitmq/amqp/frame.hpp>             // FrameReader, kProtocolHeader, encode_heartbeat
#include <kincir/rabbitmq/amqp/heartbeat.hpp>         // Heartbeat
#include <kincir/rabbitmq/amqp/methods.hpp>           // connection.* methods
#include <kincir/rabbitmq/amqp/output_buffer.hpp>     // OutputBuffer

#include <chrono>        // heartbeat interval
#include <cstdint>       // tuning values
#include <string>        // credentials, names
#include <string_view>   // mechanism lists
#include <system_error>  // std::error_code
#include <utility>       // std::move

namespace kincir::rabbitmq::amqp {

/// What the client asks for as its heartbeat interval in connection.tune-ok.
///
/// - `off()`: tune-ok carries 0 and RabbitMQ disables heartbeats on the connection, whatever it
///   proposed;
/// - `server_default()`: tune-ok carries the server's proposal (RabbitMQ's default is 60 s);
/// - `seconds(n)`: the smaller non-zero value of `n` and the server's proposal, as RabbitMQ's
///   own clients negotiate; a server proposing 0 gets `n`. `seconds(0)` expresses no
///   preference of its own, so it behaves like `server_default()`.
struct HeartbeatSetting {
  enum class Kind : std::uint8_t { off, server_default, seconds };

  Kind kind = Kind::seconds;
  /// The interval for `Kind::seconds`; ignored otherwise.
  std::uint16_t interval = 60;

  [[nodiscard]] static constexpr HeartbeatSetting off() noexcept { return {Kind::off, 0}; }
  [[nodiscard]] static constexpr HeartbeatSetting server_default() noexcept { return {Kind::server_default, 0}; }
  [[nodiscard]] static constexpr HeartbeatSetting seconds(std::uint16_t n) noexcept { return {Kind::seconds, n}; }

  friend bool operator==(const HeartbeatSetting&, const HeartbeatSetting&) = default;
};

/// What the client asks for when it connects.
/// How the client authenticates (SASL).
enum class SaslMechanism : std::uint8_t {
  /// User name and password (`\0user\0password`).
  plain,
  /// The identity the broker takes from the TLS client certificate (RabbitMQ's
  /// `rabbitmq_auth_mechanism_ssl` plugin); user name and password are not sent.
  external,
};

struct ConnectionConfig {
  /// PLAIN (default) or EXTERNAL.
  SaslMechanism mechanism = SaslMechanism::plain;
  std::string username = "guest";
  std::string password = "guest";
  std::string vhost = "/";
  /// Shown in RabbitMQ's management UI; not sent when empty.
  std::string connection_name;
  std::string locale = "en_US";
  /// Highest channel id the client wants (0: no limit of its own).
  std::uint16_t channel_max = 2047;
  /// Largest frame the client accepts (0: no limit of its own; at least 4096 otherwise).
  std::uint32_t frame_max = kDefaultFrameMax;
  /// The heartbeat interval to ask for. The default, 60 s, is what RabbitMQ's Java and .NET
  /// clients request; against RabbitMQ's default proposal (60 s) it gives 60 s.
  HeartbeatSetting heartbeat = HeartbeatSetting::seconds(60);
  /// Extra client properties. Each entry is added to kincir's own (`product`, `version`,
  /// `platform`, `connection_name`) or replaces it, except `capabilities`: a table given there
  /// is merged with kincir's capabilities (see `client_properties`).
  FieldTable client_properties;
};

/// The largest channel id: the negotiated `channel_max` when neither side sets a limit.
inline constexpr std::uint16_t kMaxChannelId = 65535;

/// The negotiated connection parameters, as sent in tune-ok.
struct Tuning {
  /// Highest usable channel id (65535 when neither side has a limit).
  std::uint16_t channel_max = 0;
  /// Largest frame, header and frame-end included; 0 means no limit.
  std::uint32_t frame_max = kFrameMinSize;
  /// Heartbeat interval in seconds; 0 disables heartbeats.
  std::uint16_t heartbeat = 0;
  friend bool operator==(const Tuning&, const Tuning&) = default;
};

namespace detail {
template <class T>
constexpr T smaller_nonzero(T a, T b) noexcept {
  if (a == 0) return b;
  if (b == 0) return a;
  return a < b ? a : b;
}
}  // namespace detail

/// The heartbeat interval sent in tune-ok for the server's proposal `server` (seconds; 0: the
/// server proposes none). See `HeartbeatSetting`.
KINCIR_DECL std::uint16_t negotiate_heartbeat(HeartbeatSetting setting, std::uint16_t server) noexcept {
  switch (setting.kind) {
    case HeartbeatSetting::Kind::off: return 0;
    case HeartbeatSetting::Kind::server_default: return server;
    case HeartbeatSetting::Kind::seconds: return detail::smaller_nonzero(setting.interval, server);
  }
  return server;
}

/// Negotiates the tune-ok values from the server's connection.tune:
/// - `channel_max` and `frame_max`: the smaller non-zero value of the two sides (0 means "no
///   limit"); when both are 0, `channel_max` is 65535 (the largest channel id) and `frame_max`
///   stays 0 (no limit);
/// - `heartbeat`: see `negotiate_heartbeat`.
/// A `frame_max` below 4096 is `errc::frame_max_too_small`.
KINCIR_DECL Tuning negotiate(const ConnectionTune& server, const ConnectionConfig& client, std::error_code& ec) {
  Tuning t;
  t.channel_max = detail::smaller_nonzero(server.channel_max, client.channel_max);
  if (t.channel_max == 0) t.channel_max = kMaxChannelId;
  t.frame_max = detail::smaller_nonzero(server.frame_max, client.frame_max);
  t.heartbeat = negotiate_heartbeat(client.heartbeat, server.heartbeat);
  ec.clear();
  if (t.frame_max != 0 && t.frame_max < kFrameMinSize) ec = errc::frame_max_too_small;
  return t;
}

/// The capabilities kincir advertises. Without `connection.blocked` RabbitMQ never reports its
/// alarms, without `consumer_cancel_notify` a consumer never learns its queue is gone, and
/// `authentication_failure_close` turns a bad login into connection.close(403).
KINCIR_DECL FieldTable client_capabilities() {
  return FieldTable{{"publisher_confirms", true}, {"exchange_exchange_bindings", true},
                    {"basic.nack", true},         {"consumer_cancel_notify", true},
                    {"connection.blocked", true}, {"authentication_failure_close", true},
                    {"per_consumer_qos", true}};
}

/// The client-properties table sent in connection.start-ok: kincir's `product`, `version`,
/// `platform`, `connection_name` (when set) and `capabilities`, then `config.client_properties`.
/// A user entry replaces kincir's entry of the same name, except `capabilities`, which is
/// merged: a user table keeps its own entries and gets kincir's capabilities added, kincir's
/// value winning for the names it sets (RabbitMQ only sends connection.blocked and consumer
/// cancel notifications to clients that announce them, and the channel machine relies on
/// them). A `capabilities` entry that is not a table is ignored: kincir's table is sent.
KINCIR_DECL FieldTable client_properties(const ConnectionConfig& config) {
  FieldTable props{{"product", "kincir"},
                   {"version", KINCIR_VERSION_STRING},
                   {"platform", "C++20"},
                   {"capabilities", client_capabilities()}};
  if (!config.connection_name.empty()) props.set("connection_name", std::string_view(config.connection_name));
  for (const auto& entry : config.client_properties) {
    if (entry.name != "capabilities") {
      props.set(entry.name, entry.value);
      continue;
    }
    const auto* user = entry.value.get_if<FieldTable>();
    if (user == nullptr) continue;
    FieldTable merged = *user;
    for (const auto& capability : client_capabilities()) merged.set(capability.name, capability.value);
    props.set("capabilities", std::move(merged));
  }
  return props;
}

/// The PLAIN response: `\0username\0password` (RFC 4616 without an authorisation identity).
KINCIR_DECL std::string plain_response(std::string_view username, std::string_view password) {
  std::string response;
  response.reserve(2 + username.size() + password.size());
  response.push_back('\0');
  response.append(username);
  response.push_back('\0');
  response.append(password);
  return response;
}

/// True if the space-separated `list` contains `word`.
KINCIR_DECL bool contains_word(std::string_view list, std::string_view word) noexcept {
  while (!list.empty()) {
    const auto space = list.find(' ');
    if (list.substr(0, space) == word) return true;
    if (space == std::string_view::npos) break;
    list.remove_prefix(space + 1);
  }
  return false;
}

/// The reply code a client sends in connection.close for a protocol error it detected.
KINCIR_DECL reply_code reply_code_for(std::error_code ec) noexcept {
  if (ec.category() == reply_category()) return static_cast<reply_code>(ec.value());
  if (ec.category() != error_category()) return reply_code::internal_error;
  switch (static_cast<errc>(ec.value())) {
    case errc::malformed_frame:
    case errc::bad_frame_end:
    case errc::frame_too_large:
    case errc::unknown_frame_type: return reply_code::frame_error;
    case errc::malformed_method:
    case errc::malformed_field_table:
    case errc::field_table_too_deep:
    case errc::field_table_too_large:
    case errc::malformed_content_header:
    case errc::string_too_long: return reply_code::syntax_error;
    case errc::unknown_method: return reply_code::command_invalid;
    case errc::unexpected_frame: return reply_code::unexpected_frame;
    case errc::body_too_large: return reply_code::resource_error;
    default: return reply_code::internal_error;
  }
}

/// Where a connection is in its life.
enum class ConnectionPhase : std::uint8_t { idle, handshake, open, closing, closed };

/// Everything the connection algorithms share.
struct ConnectionState {
  explicit ConnectionState(ConnectionConfig cfg = {}) : config(std::move(cfg)) {}

  ConnectionConfig config;
  ConnectionPhase phase = ConnectionPhase::idle;
  /// Valid once the handshake got connection.tune.
  Tuning tuning;
  /// The driver's frame reader; its limit follows the negotiated `frame_max`.
  FrameReader reader;
  /// Frames to write.
  OutputBuffer out;
  /// From connection.start (product, version, capabilities ...).
  FieldTable server_properties;
  /// connection.blocked is in effect; `blocked_reason` says why.
  bool blocked = false;
  std::string blocked_reason;
  Heartbeat heartbeat;
  /// The server's text when it closed the connection.
  Diagnostics diagnostics;
  /// Why the connection closed (empty for a clean close).
  std::error_code error;
};

namespace detail {

inline bool is_heartbeat(const Event& ev) noexcept {
  return ev.kind == Event::Kind::frame && ev.frame.type == FrameType::heartbeat;
}

/// The method id of a method frame's payload, without decoding its arguments.
inline bool peek_method_id(const Frame& frame, MethodId& id) noexcept {
  if (frame.type != FrameType::method || frame.payload.size() < 4) return false;
  id = make_method_id(load_u16(frame.payload.data()), load_u16(frame.payload.data() + 2));
  return true;
}

/// Handles connection.close from the server: keeps its text, queues close-ok, returns its code.
inline std::error_code on_server_close(ConnectionState& st, const ConnectionClose& close) {
  st.diagnostics.assign(close.reply_text, close.class_id, close.method_id);
  std::error_code ec;
  encode_method_frame(st.out.bytes(), 0, ConnectionCloseOk{}, ec);
  st.phase = ConnectionPhase::closed;
  st.error = reply_error(close.reply_code);
  if (!st.error) st.error = errc::connection_closed;
  return st.error;
}

/// Decodes a frame of the handshake: a method on channel 0, one of `Ms`, or connection.close.
/// Returns the decoded method's id through `out`.
inline std::error_code handshake_method(const Event& ev, Method& out) {
  if (ev.kind != Event::Kind::frame || ev.frame.type != FrameType::method || ev.frame.channel != 0)
    return errc::unexpected_frame;
  std::error_code ec;
  decode_method(ev.frame.payload, out, ec);
  return ec;
}

}  // namespace detail

/// The opening handshake: protocol header, start/start-ok (PLAIN), tune/tune-ok (negotiated),
/// open/open-ok. Completes with `done()` once the connection is open, or `done(ec)`: the
/// server's reply code if it closed the connection (403 ACCESS_REFUSED for a bad login, 530
/// NOT_ALLOWED for a vhost), `errc::handshake_timeout` on `Event::timeout()`, a transport error,
/// or a protocol error. The driver applies its handshake deadline (RabbitMQ's is 10 s).
class HandshakeAlgo {
 public:
  Action resume(ConnectionState& st, const Event& ev) {
    if (ev.kind == Event::Kind::failed) return finish(st, ev.ec);
    if (ev.kind == Event::Kind::timeout) return finish(st, errc::handshake_timeout);
    KINCIR_AMQP_CORO_BEGIN(point_)
    st.phase = ConnectionPhase::handshake;
    st.out.clear();
    st.reader.set_frame_max(kFrameMinSize);
    st.out.bytes().append(kProtocolHeader.data(), kProtocolHeader.size());
    KINCIR_AMQP_YIELD(point_, 1, Action::write());
    st.out.clear();
    do {
      KINCIR_AMQP_YIELD(point_, 2, Action::read());
    } while (detail::is_heartbeat(ev));
    ec_ = on_start(st, ev);
    if (ec_) return finish(st, ec_);
    KINCIR_AMQP_YIELD(point_, 3, Action::write());
    st.out.clear();
    do {
      KINCIR_AMQP_YIELD(point_, 4, Action::read());
    } while (detail::is_heartbeat(ev));
    ec_ = on_tune(st, ev);
    if (ec_) {
      if (!st.out.empty()) KINCIR_AMQP_YIELD(point_, 5, Action::write());
      return finish(st, ec_);
    }
    KINCIR_AMQP_YIELD(point_, 6, Action::write());
    st.out.clear();
    do {
      KINCIR_AMQP_YIELD(point_, 7, Action::read());
    } while (detail::is_heartbeat(ev));
    ec_ = on_open_ok(st, ev);
    if (ec_) {
      if (!st.out.empty()) KINCIR_AMQP_YIELD(point_, 8, Action::write());
      return finish(st, ec_);
    }
    return finish(st, {});
    KINCIR_AMQP_CORO_END
    return Action::done(ec_);
  }

 private:
  Action finish(ConnectionState& st, std::error_code ec) {
    point_ = -1;
    ec_ = ec;
    st.out.clear();
    st.phase = ec ? ConnectionPhase::closed : ConnectionPhase::open;
    st.error = ec;
    return Action::done(ec);
  }

  static std::error_code on_start(ConnectionState& st, const Event& ev) {
    Method m;
    if (auto ec = detail::handshake_method(ev, m)) return ec;
    auto* start = std::get_if<ConnectionStart>(&m);
    if (start == nullptr) return errc::unexpected_frame;
    if (start->version_major != 0 || start->version_minor != 9) return errc::protocol_version_mismatch;
    const bool external = st.config.mechanism == SaslMechanism::external;
    const std::string_view mechanism = external ? "EXTERNAL" : "PLAIN";
    if (!contains_word(start->mechanisms, mechanism)) return errc::unsupported_mechanism;
    st.server_properties = std::move(start->server_properties);
    ConnectionStartOk ok;
    ok.client_properties = client_properties(st.config);
    ok.mechanism = std::string(mechanism);
    if (!external) ok.response = plain_response(st.config.username, st.config.password);
    ok.locale = st.config.locale;
    std::error_code ec;
    encode_method_frame(st.out.bytes(), 0, ok, ec);
    return ec;
  }

  static std::error_code on_tune(ConnectionState& st, const Event& ev) {
    Method m;
    if (auto ec = detail::handshake_method(ev, m)) return ec;
    if (auto* close = std::get_if<ConnectionClose>(&m)) return detail::on_server_close(st, *close);
    if (std::holds_alternative<ConnectionSecure>(m)) return errc::unsupported_mechanism;
    auto* tune = std::get_if<ConnectionTune>(&m);
    if (tune == nullptr) return errc::unexpected_frame;
    std::error_code ec;
    st.tuning = negotiate(*tune, st.config, ec);
    if (ec) return ec;
    st.reader.set_frame_max(st.tuning.frame_max);
    ConnectionTuneOk ok;
    ok.channel_max = st.tuning.channel_max;
    ok.frame_max = st.tuning.frame_max;
    ok.heartbeat = st.tuning.heartbeat;
    encode_method_frame(st.out.bytes(), 0, ok, ec);
    if (ec) return ec;
    ConnectionOpen open;
    open.virtual_host = st.config.vhost;
    encode_method_frame(st.out.bytes(), 0, open, ec);
    return ec;
  }

  static std::error_code on_open_ok(ConnectionState& st, const Event& ev) {
    Method m;
    if (auto ec = detail::handshake_method(ev, m)) return ec;
    if (auto* close = std::get_if<ConnectionClose>(&m)) return detail::on_server_close(st, *close);
    if (!std::holds_alternative<ConnectionOpenOk>(m)) return errc::unexpected_frame;
    return {};
  }

  int point_ = 0;
  std::error_code ec_;
};

/// The client-initiated close: connection.close, then every frame is discarded until
/// close-ok (or the server's own close, which gets a close-ok). Completes with `done()`;
/// `errc::close_timeout` on `Event::timeout()` (the driver then drops the transport).
/// Use reply code 200 for a normal close, or `reply_code_for(ec)` after a protocol error.
class CloseAlgo {
 public:
  explicit CloseAlgo(std::uint16_t code = 200, std::string text = "", std::uint16_t class_id = 0,
                     std::uint16_t method_id = 0)
      : text_(std::move(text)), code_(code), class_id_(class_id), method_id_(method_id) {}

  Action resume(ConnectionState& st, const Event& ev) {
    if (ev.kind == Event::Kind::failed) return finish(st, ev.ec);
    if (ev.kind == Event::Kind::timeout) return finish(st, errc::close_timeout);
    KINCIR_AMQP_CORO_BEGIN(point_)
    st.phase = ConnectionPhase::closing;
    st.out.clear();
    {
      ConnectionClose close;
      close.reply_code = code_;
      close.reply_text = text_;
      close.class_id = class_id_;
      close.method_id = method_id_;
      encode_method_frame(st.out.bytes(), 0, close, ec_);
    }
    if (ec_) return finish(st, ec_);
    KINCIR_AMQP_YIELD(point_, 1, Action::write());
    st.out.clear();
    do {
      KINCIR_AMQP_YIELD(point_, 2, Action::read());
      reply_ = on_frame(st, ev);
    } while (reply_ == Reply::discard);
    if (reply_ == Reply::close_ok_queued) KINCIR_AMQP_YIELD(point_, 3, Action::write());
    return finish(st, {});
    KINCIR_AMQP_CORO_END
    return Action::done(ec_);
  }

 private:
  Action finish(ConnectionState& st, std::error_code ec) {
    point_ = -1;
    ec_ = ec;
    st.out.clear();
    st.phase = ConnectionPhase::closed;
    if (!st.error) st.error = ec ? ec : std::error_code(errc::connection_closed);
    return Action::done(ec);
  }

  enum class Reply : std::uint8_t { discard, got_close_ok, close_ok_queued };

  /// While closing: close-ok ends it, the server's own close is answered, the rest discarded.
  Reply on_frame(ConnectionState& st, const Event& ev) {
    MethodId id{};
    if (ev.kind != Event::Kind::frame || ev.frame.channel != 0 || !detail::peek_method_id(ev.frame, id))
      return Reply::discard;
    if (id == MethodId::connection_close_ok) return Reply::got_close_ok;
    if (id != MethodId::connection_close) return Reply::discard;
    ConnectionClose close;
    std::error_code ec;
    decode_method_as(ev.frame.payload, close, ec);
    if (!ec) st.diagnostics.assign(close.reply_text, close.class_id, close.method_id);
    encode_method_frame(st.out.bytes(), 0, ConnectionCloseOk{}, ec);
    return Reply::close_ok_queued;
  }

  std::string text_;
  std::uint16_t code_;
  std::uint16_t class_id_;
  std::uint16_t method_id_;
  int point_ = 0;
  Reply reply_ = Reply::discard;
  std::error_code ec_;
};

/// The open connection's own traffic (channel 0 and heartbeats); frames of other channels are
/// the channels' business and give `none`. Returns:
/// - `connection_closed(ec)` on the server's connection.close (close-ok queued in `out`);
/// - `blocked` / `unblocked` on connection.blocked / unblocked;
/// - on `Event::tick(now)`: a heartbeat queued in `out` (`none`) when H/2 passed without
///   writing, or `protocol_error(errc::heartbeat_timeout)` after 2H without reading;
/// - `protocol_error(ec)` for a frame that breaks the protocol (the driver then runs
///   `CloseAlgo(reply_code_for(ec))`).
/// The driver calls `st.heartbeat.on_read` for every read and `on_write` for every write.
KINCIR_DECL Action resume(ConnectionState& st, const Event& ev) {
  auto error = [&st](std::error_code ec) {
    st.error = ec;
    return Action{Action::Kind::protocol_error, ec};
  };
  if (ev.kind == Event::Kind::tick) {
    switch (st.heartbeat.check(ev.now)) {
      case Heartbeat::Status::dead: return error(errc::heartbeat_timeout);
      case Heartbeat::Status::send:
        encode_heartbeat(st.out.bytes());
        st.heartbeat.on_write(ev.now);
        return Action::none();
      case Heartbeat::Status::idle: return Action::none();
    }
  }
  if (ev.kind == Event::Kind::failed) {
    st.phase = ConnectionPhase::closed;
    st.error = ev.ec;
    return Action{Action::Kind::connection_closed, ev.ec};
  }
  if (ev.kind != Event::Kind::frame) return Action::none();
  const Frame& frame = ev.frame;
  if (frame.type == FrameType::heartbeat) {
    if (frame.channel != 0 || !frame.payload.empty()) return error(errc::unexpected_frame);
    return Action::none();
  }
  if (frame.channel != 0) return Action::none();
  if (frame.type != FrameType::method) return error(errc::unexpected_frame);
  Method m;
  std::error_code ec;
  decode_method(frame.payload, m, ec);
  if (ec) return error(ec);
  if (auto* close = std::get_if<ConnectionClose>(&m)) {
    ec = detail::on_server_close(st, *close);
    return Action{Action::Kind::connection_closed, ec};
  }
  if (auto* blocked = std::get_if<ConnectionBlocked>(&m)) {
    st.blocked = true;
    st.blocked_reason = std::move(blocked->reason);
    return Action{Action::Kind::blocked, {}};
  }
  if (std::holds_alternative<ConnectionUnblocked>(m)) {
    st.blocked = false;
    st.blocked_reason.clear();
    return Action{Action::Kind::unblocked, {}};
  }
  if (std::holds_alternative<ConnectionUpdateSecretOk>(m)) return Action{Action::Kind::secret_updated, {}};
  return error(errc::unexpected_frame);
}

/// Sends connection.update-secret: RabbitMQ replaces the credentials of an open connection (an
/// expiring token), answering update-secret-ok (`Action::Kind::secret_updated`) or closing the
/// connection if it refuses them. The password in `st.config` becomes `new_secret`. Errors:
/// `errc::invalid_state` unless the connection is open.
KINCIR_DECL void update_secret(ConnectionState& st, std::string_view new_secret, std::string_view reason,
                               std::error_code& ec) {
  if (st.phase != ConnectionPhase::open) {
    ec = errc::invalid_state;
    return;
  }
  ConnectionUpdateSecret m;
  m.new_secret = new_secret;
  m.reason = reason;
  encode_method_frame(st.out.bytes(), 0, m, ec);
  if (!ec) st.config.password = new_secret;
}

}  // namespace kincir::rabbitmq::amqp
