/// @file
/// `kincir::rabbitmq::RabbitMQConfig`: where to connect (AMQP URIs as RabbitMQ specifies them),
/// the deadlines, the publisher's and subscriber's settings and how topics map to exchanges and
/// queues, with presets.
///
/// Passwords never leave the config in text form: `to_string`, `operator<<`, the {fmt}
/// formatter and every URI error print `****` or nothing in their place.
#pragma once

#include <kincir/config.hpp>

#include <kincir/core/error.hpp>                 // kincir::Error for the throwing overloads
#include <kincir/rabbitmq/amqp/connection.hpp>   // amqp::ConnectionConfig, HeartbeatSetting
#include <kincir/rabbitmq/amqp/error.hpp>        // errc::invalid_uri
#include <kincir/rabbitmq/amqp/field_table.hpp>  // queue arguments
#include <kincir/rabbitmq/recovery.hpp>          // RecoveryConfig

#include <chrono>        // deadlines
#include <cstddef>       // std::size_t
#include <cstdint>       // ports, counts
#include <ostream>       // operator<<
#include <string>        // hosts, names, error text
#include <string_view>   // URI parsing
#include <system_error>  // std::error_code
#include <utility>       // std::pair (validate)
#include <vector>        // endpoints

namespace kincir::rabbitmq {

/// One broker address. Several endpoints are tried in order when connecting.
struct Endpoint {
  std::string host = "localhost";
  std::uint16_t port = 5672;
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

/// How topics map to AMQP entities.
enum class Layout : std::uint8_t {
  /// A topic is an exchange (fanout unless `TopologyConfig::exchange_type` says otherwise); a
  /// subscriber without a group gets an exclusive auto-delete queue bound to it (every
  /// subscriber sees every message, as with the in-memory broker); a group is a durable queue
  /// named `TOPIC.GROUP` (the topic, a dot, the group) bound to it, whose consumers compete.
  exchange_per_topic,
  /// A topic is a durable queue of the same name on the default exchange: publishers route to it
  /// by name and every subscriber, group or not, competes on it (point-to-point). The layout the
  /// Rust kincir adapter uses, so both can share a broker.
  queue_per_topic,
};

/// The mapping of topics to exchanges and queues.
struct TopologyConfig {
  Layout layout = Layout::exchange_per_topic;
  /// Type of the exchanges declared for topics ("fanout", "direct", "topic", "headers").
  std::string exchange_type = "fanout";
  /// Exchanges survive a broker restart.
  bool durable_exchanges = true;
  /// Group queues and queue-per-topic queues survive a broker restart.
  bool durable_queues = true;
  /// If set, every topic is published to this (existing or declared) exchange with the topic as
  /// the routing key, and subscribers bind with the topic as the binding key.
  std::string exchange;
  /// The routing key of publishes and bindings when `exchange` is empty (fanout ignores it).
  std::string routing_key;
  /// Arguments of declared queues: `x-queue-type` (quorum), `x-dead-letter-exchange`,
  /// `x-message-ttl`, `x-max-length`, `x-overflow` ...
  amqp::FieldTable queue_arguments;
  /// Declare exchanges and queues (otherwise they must exist).
  bool declare = true;
};

/// TLS for `amqps://`. The I/O layer speaks TLS only when kincir's users define
/// `KINCIR_RABBITMQ_TLS=1` and link OpenSSL (`OpenSSL::SSL`); otherwise a TLS connection fails
/// with `errc::tls_unavailable`.
struct TlsConfig {
  bool enabled = false;
  /// Verify the broker's certificate chain and that it names the host (on by default).
  bool verify_peer = true;
  /// CA certificates (PEM) to verify against; empty: the system's default paths.
  std::string ca_file;
  /// A client certificate chain and its private key (PEM), for brokers that ask for one.
  std::string cert_file;
  std::string key_file;
  /// The name sent as SNI and checked against the certificate; empty: the endpoint's host.
  std::string server_name;
};

/// Everything a connection, a publisher and a subscriber need. Start from a preset or from
/// `from_uri`, then adjust fields.
struct RabbitMQConfig {
  /// Tried in order; the first that accepts a connection and completes the handshake is used.
  std::vector<Endpoint> endpoints{Endpoint{}};
  /// Credentials, vhost, heartbeat, `frame_max`, `channel_max`, connection name, client
  /// properties: what the AMQP handshake sends.
  amqp::ConnectionConfig connection;

  // --- deadlines ---
  /// Per endpoint: resolving and the TCP connect.
  std::chrono::milliseconds connect_timeout{10000};
  /// From the protocol header to connection.open-ok (RabbitMQ's own limit is 10 s).
  std::chrono::milliseconds handshake_timeout{10000};
  /// Every synchronous call (declare, bind, qos, consume, channel open/close). A call that
  /// times out closes its channel: the reply could still arrive and would be misattributed.
  std::chrono::milliseconds call_timeout{10000};
  /// The closing handshake; the socket is dropped after it.
  std::chrono::milliseconds close_timeout{5000};

  // --- reading ---
  /// Read batching under a sustained stream. Once `read_batch_frames` frames have arrived within
  /// one `read_batch_interval`, the connection reads again only when that interval ends (the
  /// socket holds what arrives meanwhile), so one wake-up of the I/O thread, and of a waiting
  /// receiver, carries dozens of deliveries instead of a few. Below that rate every read happens
  /// at once: a quiet connection (request/reply, sporadic messages) gets no added latency. Under
  /// a stream a frame waits at most `read_batch_interval` longer. 0 (either field) turns it off:
  /// every read at once, more CPU per message. At most 100 ms.
  std::chrono::microseconds read_batch_interval{1000};
  /// Frames per `read_batch_interval` from which reads are batched (a 1 KiB delivery is 3
  /// frames: 32 frames in 1 ms are about 10 700 deliveries a second, more than a request/reply
  /// client waiting for each reply gets through one connection).
  std::uint32_t read_batch_frames = 32;
  /// How long a synchronous publish waits for all its confirms (and for a blocked connection to
  /// be unblocked) before reporting `errc::confirm_timeout` or `errc::connection_blocked`.
  std::chrono::milliseconds confirm_timeout{30000};

  // --- publisher ---
  /// Publisher confirms: every publish gets exactly one outcome (acked, nacked, returned, lost).
  /// Off: a publish completes once its frames are queued for writing.
  bool confirms = true;
  /// Publish with `mandatory`: unroutable messages come back as `errc::message_returned`.
  bool mandatory = false;
  /// delivery-mode 2 (persistent) instead of 1.
  bool persistent = false;
  /// Unconfirmed messages per publisher; past this, publishes wait (asynchronous ones complete
  /// later).
  std::size_t max_unconfirmed = 1024;
  /// Unconfirmed body bytes per publisher (a single larger message still goes out alone).
  std::size_t max_unconfirmed_bytes = std::size_t{64} << 20;

  // --- subscriber ---
  /// basic.qos prefetch-count per consumer: the most unacknowledged deliveries the broker sends
  /// ahead. Never 0 (RabbitMQ's "unlimited"): it also bounds the client's buffer.
  std::uint16_t prefetch = 1000;
  /// Body bytes a subscriber buffers before it pauses its consumer (basic.cancel; consuming
  /// resumes below half of this). Deliveries already on the way still arrive, so the buffer can
  /// pass the bound by what the broker had sent before the cancel (at most `prefetch` messages).
  std::size_t max_buffered_bytes = std::size_t{64} << 20;

  TopologyConfig topology;

  /// Automatic reconnection, what publishers keep while the connection is down, the state
  /// callback (see `RecoveryConfig`).
  RecoveryConfig recovery;

  /// TLS (`amqps://`).
  TlsConfig tls;

  /// Defaults: localhost:5672, guest/guest, vhost "/", heartbeat 60 s, confirms on, prefetch 1000.
  [[nodiscard]] static RabbitMQConfig with_default_config() { return {}; }
  /// More in flight: 8192 unconfirmed messages, prefetch 4096, transient messages.
  [[nodiscard]] static RabbitMQConfig for_high_throughput() {
    RabbitMQConfig c;
    c.max_unconfirmed = 8192;
    c.max_unconfirmed_bytes = std::size_t{256} << 20;
    c.prefetch = 4096;
    return c;
  }
  /// Persistent messages, mandatory publishes, durable entities, a small window.
  [[nodiscard]] static RabbitMQConfig for_reliability() {
    RabbitMQConfig c;
    c.persistent = true;
    c.mandatory = true;
    c.max_unconfirmed = 256;
    c.prefetch = 100;
    return c;
  }
  /// Short deadlines and transient exchanges for tests against a local broker.
  [[nodiscard]] static RabbitMQConfig for_testing() {
    RabbitMQConfig c;
    c.connect_timeout = std::chrono::seconds(2);
    c.handshake_timeout = std::chrono::seconds(5);
    c.call_timeout = std::chrono::seconds(5);
    c.close_timeout = std::chrono::seconds(2);
    c.confirm_timeout = std::chrono::seconds(10);
    c.topology.durable_exchanges = false;
    c.topology.durable_queues = false;
    c.recovery.initial_delay = std::chrono::milliseconds(50);
    c.recovery.max_delay = std::chrono::milliseconds(1000);
    return c;
  }
  /// Queue per topic on the default exchange (see `Layout::queue_per_topic`).
  [[nodiscard]] static RabbitMQConfig queue_per_topic() {
    RabbitMQConfig c;
    c.topology.layout = Layout::queue_per_topic;
    return c;
  }

  /// Parses `uri` (see `apply_uri`) into a default config.
  [[nodiscard]] static RabbitMQConfig from_uri(std::string_view uri, std::error_code& ec, std::string* why = nullptr) {
    RabbitMQConfig c;
    c.apply_uri(uri, ec, why);
    return c;
  }
  /// Throws `kincir::Error(errc::invalid_uri)` whose text names the bad part.
  [[nodiscard]] static RabbitMQConfig from_uri(std::string_view uri) {
    RabbitMQConfig c;
    c.apply_uri(uri);
    return c;
  }

  /// Sets the endpoint, credentials, vhost and tuning from an AMQP URI, following RabbitMQ's URI
  /// specification: `amqp://[user[:password]@]host[:port][/vhost][?key=value&...]`.
  /// - user, password, host and vhost are percent-decoded; an absent user means guest/guest;
  /// - an absent host is "localhost", an absent port 5672; IPv6 hosts go in brackets;
  /// - no path means vhost "/", an empty path ("amqp://host/") the empty vhost, and a vhost
  ///   containing "/" must be encoded (`%2f`);
  /// - query keys: `heartbeat` (seconds, 0 = off), `connection_timeout` (milliseconds),
  ///   `frame_max`, `channel_max`, `connection_name`, `auth_mechanism` (`plain` or `external`:
  ///   the TLS client certificate's identity); with `amqps` (TLS, port 5671 by default)
  ///   also `cacertfile`, `certfile`, `keyfile`, `verify` (`verify_peer` or `verify_none`) and
  ///   `server_name_indication`; other keys are errors.
  /// On error `ec` is `errc::invalid_uri`, `*why` (if given)
  /// names the bad part (never the password), and the config is unchanged.
  void apply_uri(std::string_view uri, std::error_code& ec, std::string* why = nullptr);
  void apply_uri(std::string_view uri) {
    std::error_code ec;
    std::string why;
    apply_uri(uri, ec, &why);
    if (ec) throw Error(ec, why);
  }

  /// `amqp://user:****@host:port/vhost (heartbeat …)`: the password is never shown.
  [[nodiscard]] std::string to_string() const;

  /// Checks what no connection could work with; `Connection::open` calls it first. Errors
  /// (`kincir::errc::invalid_argument`, `*why` names the field): no endpoint, an empty host or port
  /// 0, a deadline (`connect_timeout`, `handshake_timeout`, `call_timeout`, `close_timeout`,
  /// `confirm_timeout`) that is not positive, a recovery `initial_delay` that is not positive, a
  /// `max_delay` below it, a `multiplier` below 1 or not finite, a `jitter` outside [0, 1], a
  /// `read_batch_interval` outside [0, 100 ms].
  [[nodiscard]] std::error_code validate(std::string* why = nullptr) const;
};

namespace detail {

inline int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// Percent-decodes `in`; false on a bad escape.
inline bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    const int hi = hex_value(in[i + 1]);
    const int lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

/// Parses a decimal integer in [0, max]; false otherwise.
inline bool parse_uint(std::string_view s, std::uint64_t max, std::uint64_t& out) noexcept {
  if (s.empty() || s.size() > 20) return false;
  std::uint64_t v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return false;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (v > (max - digit) / 10) return false;
    v = v * 10 + digit;
  }
  out = v;
  return true;
}

/// Percent-encodes what an AMQP URI cannot hold literally in a vhost or user name.
inline std::string percent_encode(std::string_view in) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const char c : in) {
    const auto u = static_cast<unsigned char>(c);
    const bool plain = (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || c == '-' ||
                       c == '.' || c == '_' || c == '~';
    if (plain) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

}  // namespace detail

KINCIR_DECL void RabbitMQConfig::apply_uri(std::string_view uri, std::error_code& ec, std::string* why) {
  ec.clear();
  auto fail = [&](std::string text) {
    ec = errc::invalid_uri;
    if (why != nullptr) *why = "invalid AMQP URI: " + std::move(text);
  };
  const auto scheme_end = uri.find("://");
  if (scheme_end == std::string_view::npos) return fail("missing scheme (expected amqp://)");
  const std::string_view scheme = uri.substr(0, scheme_end);
  if (scheme != "amqp" && scheme != "amqps")
    return fail("unknown scheme '" + std::string(scheme) + "' (expected amqp or amqps)");
  const bool tls = scheme == "amqps";
  std::string_view rest = uri.substr(scheme_end + 3);

  std::string_view query;
  if (const auto q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  if (rest.find('#') != std::string_view::npos) return fail("fragments ('#') are not allowed");
  std::string_view authority = rest;
  std::string_view path;
  bool has_path = false;
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    authority = rest.substr(0, slash);
    path = rest.substr(slash + 1);
    has_path = true;
  }

  RabbitMQConfig next = *this;
  next.tls.enabled = tls;
  Endpoint endpoint;
  if (tls) endpoint.port = 5671;
  std::string_view hostport = authority;
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, at);
    hostport = authority.substr(at + 1);
    const auto colon = userinfo.find(':');
    if (!detail::percent_decode(userinfo.substr(0, colon), next.connection.username))
      return fail("the user name has a bad percent-escape");
    next.connection.password.clear();
    if (colon != std::string_view::npos &&
        !detail::percent_decode(userinfo.substr(colon + 1), next.connection.password))
      return fail("the password has a bad percent-escape");  // never echoed
  } else {
    next.connection.username = "guest";
    next.connection.password = "guest";
  }

  std::string_view host = hostport;
  std::string_view port;
  if (!hostport.empty() && hostport.front() == '[') {
    const auto close = hostport.find(']');
    if (close == std::string_view::npos) return fail("IPv6 host without closing ']'");
    host = hostport.substr(1, close - 1);
    const std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return fail("unexpected text after the IPv6 host");
      port = after.substr(1);
      if (port.empty()) return fail("empty port");
    }
  } else if (const auto colon = hostport.rfind(':'); colon != std::string_view::npos) {
    host = hostport.substr(0, colon);
    port = hostport.substr(colon + 1);
    if (port.empty()) return fail("empty port");
  }
  if (!host.empty() && !detail::percent_decode(host, endpoint.host))
    return fail("the host '" + std::string(host) + "' has a bad percent-escape");
  if (host.empty()) endpoint.host = "localhost";
  if (!port.empty()) {
    std::uint64_t p = 0;
    if (!detail::parse_uint(port, 65535, p) || p == 0)
      return fail("bad port '" + std::string(port) + "' (expected 1-65535)");
    endpoint.port = static_cast<std::uint16_t>(p);
  }

  if (!has_path) {
    next.connection.vhost = "/";
  } else {
    if (path.find('/') != std::string_view::npos)
      return fail("the vhost '" + std::string(path) + "' contains '/' (encode it as %2f)");
    if (!detail::percent_decode(path, next.connection.vhost))
      return fail("the vhost '" + std::string(path) + "' has a bad percent-escape");
  }

  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    const std::string_view key = pair.substr(0, eq);
    std::string value;
    if (eq == std::string_view::npos || !detail::percent_decode(pair.substr(eq + 1), value))
      return fail("query parameter '" + std::string(key) + "' needs a value");
    std::uint64_t n = 0;
    if (key == "heartbeat") {
      if (!detail::parse_uint(value, 65535, n)) return fail("bad heartbeat '" + value + "' (seconds, 0-65535)");
      next.connection.heartbeat =
          n == 0 ? amqp::HeartbeatSetting::off() : amqp::HeartbeatSetting::seconds(static_cast<std::uint16_t>(n));
    } else if (key == "connection_timeout") {
      if (!detail::parse_uint(value, 86400000, n) || n == 0)
        return fail("bad connection_timeout '" + value + "' (milliseconds, 1-86400000)");
      next.connect_timeout = std::chrono::milliseconds(n);
    } else if (key == "frame_max") {
      if (!detail::parse_uint(value, 0xFFFFFFFFu, n) || (n != 0 && n < amqp::kFrameMinSize))
        return fail("bad frame_max '" + value + "' (0 or 4096-4294967295)");
      next.connection.frame_max = static_cast<std::uint32_t>(n);
    } else if (key == "channel_max") {
      if (!detail::parse_uint(value, 65535, n)) return fail("bad channel_max '" + value + "' (0-65535)");
      next.connection.channel_max = static_cast<std::uint16_t>(n);
    } else if (key == "connection_name") {
      next.connection.connection_name = value;
    } else if (tls && key == "cacertfile") {
      next.tls.ca_file = value;
    } else if (tls && key == "certfile") {
      next.tls.cert_file = value;
    } else if (tls && key == "keyfile") {
      next.tls.key_file = value;
    } else if (tls && key == "server_name_indication") {
      next.tls.server_name = value;
    } else if (key == "auth_mechanism") {
      if (value != "plain" && value != "external")
        return fail("bad auth_mechanism '" + value + "' (plain or external)");
      next.connection.mechanism = value == "external" ? amqp::SaslMechanism::external : amqp::SaslMechanism::plain;
    } else if (tls && key == "verify") {
      if (value != "verify_peer" && value != "verify_none")
        return fail("bad verify '" + value + "' (verify_peer or verify_none)");
      next.tls.verify_peer = value == "verify_peer";
    } else {
      return fail("unknown query parameter '" + std::string(key) + "'");
    }
  }
  next.endpoints.assign(1, endpoint);
  *this = std::move(next);
}

KINCIR_DECL std::error_code RabbitMQConfig::validate(std::string* why) const {
  const auto bad = [why](std::string text) -> std::error_code {
    if (why != nullptr) *why = "invalid RabbitMQ config: " + std::move(text);
    return kincir::errc::invalid_argument;
  };
  if (endpoints.empty()) return bad("no endpoint");
  for (const Endpoint& e : endpoints) {
    if (e.host.empty()) return bad("an endpoint without a host");
    if (e.port == 0) return bad("endpoint " + e.host + " has port 0");
  }
  const std::pair<const char*, std::chrono::milliseconds> deadlines[] = {
      {"connect_timeout", connect_timeout}, {"handshake_timeout", handshake_timeout},
      {"call_timeout", call_timeout},       {"close_timeout", close_timeout},
      {"confirm_timeout", confirm_timeout}, {"recovery.initial_delay", recovery.initial_delay}};
  for (const auto& [name, value] : deadlines)
    if (value.count() <= 0)
      return bad(std::string(name) + " must be positive (got " + std::to_string(value.count()) + " ms)");
  if (recovery.max_delay < recovery.initial_delay) return bad("recovery.max_delay is below recovery.initial_delay");
  // Written so that NaN fails too.
  if (!(recovery.multiplier >= 1.0) || recovery.multiplier > 1e6)
    return bad("recovery.multiplier must be a number from 1 to 1e6");
  if (!(recovery.jitter >= 0.0 && recovery.jitter <= 1.0)) return bad("recovery.jitter must be from 0 to 1");
  if (read_batch_interval.count() < 0 || read_batch_interval > std::chrono::milliseconds(100))
    return bad("read_batch_interval must be from 0 to 100 ms (got " + std::to_string(read_batch_interval.count()) +
               " us)");
  return {};
}

KINCIR_DECL std::string RabbitMQConfig::to_string() const {
  std::string out = tls.enabled ? "amqps://" : "amqp://";
  out += detail::percent_encode(connection.username);
  out += ":****@";
  for (std::size_t i = 0; i < endpoints.size(); ++i) {
    if (i != 0) out += ',';
    const bool v6 = endpoints[i].host.find(':') != std::string::npos;
    if (v6) out += '[';
    out += endpoints[i].host;
    if (v6) out += ']';
    out += ':';
    out += std::to_string(endpoints[i].port);
  }
  out += '/';
  out += detail::percent_encode(connection.vhost);
  out += " (heartbeat ";
  switch (connection.heartbeat.kind) {
    case amqp::HeartbeatSetting::Kind::off: out += "off"; break;
    case amqp::HeartbeatSetting::Kind::server_default: out += "server default"; break;
    case amqp::HeartbeatSetting::Kind::seconds: out += std::to_string(connection.heartbeat.interval) + " s"; break;
  }
  if (tls.enabled) out += tls.verify_peer ? ", TLS verified" : ", TLS NOT verified";
  out += ", confirms ";
  out += confirms ? "on" : "off";
  out += ", prefetch ";
  out += std::to_string(prefetch);
  out += ')';
  return out;
}

inline std::ostream& operator<<(std::ostream& os, const RabbitMQConfig& config) { return os << config.to_string(); }

}  // namespace kincir::rabbitmq

#if KINCIR_HAS_FMT
#include <fmt/format.h>  // fmt::formatter

// A specialisation of fmt::formatter: Doxygen cannot place it in a scope.
/// @cond
template <>
struct fmt::formatter<kincir::rabbitmq::RabbitMQConfig> : fmt::formatter<fmt::string_view> {
  template <class FormatContext>
  auto format(const kincir::rabbitmq::RabbitMQConfig& c, FormatContext& ctx) const {
    const std::string text = c.to_string();
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(text), ctx);
  }
};
/// @endcond
#endif
