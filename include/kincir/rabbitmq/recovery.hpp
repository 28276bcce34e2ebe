/// @file
/// Automatic recovery of a RabbitMQ connection, the parts that do no I/O: the settings
/// (`RecoveryConfig`), the states a connection reports (`RecoveryState`, `RecoveryEvent`,
/// `RecoveryStats`), which errors are worth a reconnect (`is_recoverable`) and the delays
/// between attempts (`Backoff`: exponential with jitter).
#pragma once

#include <kincir/config.hpp>

#include <kincir/rabbitmq/amqp/error.hpp>  // errc, reply_code

#include <algorithm>     // std::min, std::clamp
#include <chrono>        // delays, durations
#include <cstddef>       // std::size_t
#include <cstdint>       // counters, the jitter generator
#include <functional>    // the state callback
#include <string_view>   // state names
#include <system_error>  // std::error_code

namespace kincir::rabbitmq {

/// What a publish does when the connection is down (recovering) and the outage buffer is full.
enum class OutagePolicy : std::uint8_t {
  /// Wait for the connection to come back, at most the publish's deadline (`confirm_timeout`);
  /// past it the messages not yet sent fail with `errc::connection_recovering`.
  wait,
  /// Fail at once with `errc::publish_buffer_full`; nothing of that publish is sent.
  fail_fast,
};

/// The states a connection reports through `RecoveryConfig::on_state`.
enum class RecoveryState : std::uint8_t {
  /// The first connection is open.
  connected,
  /// The connection was lost; reconnecting (reported once per outage, before the first attempt).
  recovering,
  /// Reconnected; channels, topology and consumers are being restored.
  recovered,
  /// Recovery gave up (403, 530, a protocol error, or `max_attempts`): the connection is closed
  /// for good and `Connection::error()` says why.
  failed,
};

[[nodiscard]] constexpr std::string_view to_string(RecoveryState s) noexcept {
  switch (s) {
    case RecoveryState::connected: return "connected";
    case RecoveryState::recovering: return "recovering";
    case RecoveryState::recovered: return "recovered";
    case RecoveryState::failed: return "failed";
  }
  return "unknown";
}

/// One state change.
struct RecoveryEvent {
  RecoveryState state = RecoveryState::connected;
  /// `recovering`: why the connection was lost; `failed`: why recovery gave up.
  std::error_code error;
  /// Reconnection attempts in this outage so far (`recovered`, `failed`).
  std::uint32_t attempts = 0;
  /// `recovered`: from the loss to the new connection's open-ok.
  std::chrono::steady_clock::duration downtime{};
};

/// Counters of a connection's state changes (`Connection::recovery_stats()`).
struct RecoveryStats {
  std::uint64_t connected = 0;
  std::uint64_t recovering = 0;  // outages
  std::uint64_t recovered = 0;
  std::uint64_t failed = 0;
  std::uint64_t attempts = 0;  // reconnection attempts, all outages
  std::chrono::steady_clock::duration last_downtime{};
  std::chrono::steady_clock::duration max_downtime{};
};

/// How a connection recovers. Recovery starts when an open connection is lost for a reason
/// worth retrying (`is_recoverable`); `Connection::open` itself does not retry.
struct RecoveryConfig {
  /// Reconnect automatically. Off: a lost connection stays closed and unconfirmed publishes are
  /// `errc::message_lost`.
  bool enabled = true;
  /// The first delay before reconnecting; doubled (`multiplier`) after each failed attempt up to
  /// `max_delay`. Each attempt tries every endpoint in order.
  std::chrono::milliseconds initial_delay{100};
  std::chrono::milliseconds max_delay{10000};
  double multiplier = 2.0;
  /// The delay is drawn uniformly from [(1 - jitter) × d, d], so clients that lost the same broker
  /// do not come back in step. 0 to 1.
  double jitter = 0.5;
  /// Give up after this many attempts in one outage (0: never).
  std::uint32_t max_attempts = 0;
  /// Messages and body bytes a publisher keeps while the connection is down (what was published
  /// meanwhile plus what was unconfirmed at the loss); past that, `outage_policy`.
  std::size_t max_buffered_messages = 10000;
  std::size_t max_buffered_bytes = std::size_t{64} << 20;
  OutagePolicy outage_policy = OutagePolicy::wait;
  /// Called on every state change, on the connection's handler executor (never the I/O thread);
  /// it may block other handlers but not the connection, and may close the connection. An
  /// exception it throws is caught and dropped (it would end the handler thread).
  std::function<void(const RecoveryEvent&)> on_state;
};

/// Whether losing a connection for `ec` is worth a reconnect: I/O errors, timeouts, missed
/// heartbeats, an end of stream, and the broker's `connection-forced` (320, e.g. a restart or
/// `rabbitmqctl close_connection`) and `internal-error` (541). Not: a refused login (403), a vhost
/// that is not allowed (530), a missing vhost (402), a protocol error or a TLS error (a certificate
/// that failed verification), which would fail again.
[[nodiscard]] inline bool is_recoverable(std::error_code ec) noexcept {
  if (!ec) return false;
  if (ec.category() == reply_category()) {
    const auto code = static_cast<reply_code>(ec.value());
    return code == reply_code::connection_forced || code == reply_code::internal_error;
  }
  if (ec.category() == error_category()) {
    switch (static_cast<errc>(ec.value())) {
      case errc::heartbeat_timeout:
      case errc::connection_closed:
      case errc::connect_timeout:
      case errc::handshake_timeout:
      case errc::close_timeout: return true;
      default: return false;
    }
  }
  // A certificate the broker's TLS layer refused (or we refused) stays refused; a TLS stream cut
  // short ("asio.ssl.stream") is a network error like any other.
  if (std::string_view(ec.category().name()) == "asio.ssl") return false;
  return true;  // socket and resolver errors
}

/// The delays between reconnection attempts: `initial_delay × multiplier^n` capped at
/// `max_delay`, each drawn from [(1 - jitter) × d, d]. Deterministic for a given seed.
///
/// Settings that `RabbitMQConfig::validate` refuses are made harmless here too, so that a
/// `Backoff` never spins nor overflows: the delays stay within [`kMinDelay`, `kMaxDelay`], a
/// multiplier below 1 or not a number counts as 1, a jitter outside [0, 1] (or not a number) is
/// clamped (NaN: 0).
class Backoff {
 public:
  static constexpr std::chrono::milliseconds kMinDelay{1};
  static constexpr std::chrono::milliseconds kMaxDelay{std::chrono::hours(24)};

  explicit Backoff(const RecoveryConfig& c, std::uint64_t seed = 0x9E3779B97F4A7C15ULL) noexcept
      : initial_(std::clamp(c.initial_delay, kMinDelay, kMaxDelay)),
        max_(std::clamp(c.max_delay, initial_, kMaxDelay)),
        multiplier_(c.multiplier >= 1.0 ? std::min(c.multiplier, 1e6) : 1.0),
        jitter_(c.jitter >= 0.0 ? std::min(c.jitter, 1.0) : 0.0),
        state_(seed == 0 ? 1 : seed) {}

  /// The delay before the next attempt.
  std::chrono::milliseconds next() noexcept {
    double d = static_cast<double>(initial_.count());
    for (std::uint32_t i = 0; i < attempt_ && d < static_cast<double>(max_.count()); ++i) d *= multiplier_;
    d = std::min(d, static_cast<double>(max_.count()));
    ++attempt_;
    const double low = d * (1.0 - jitter_);
    return std::max(kMinDelay, std::chrono::milliseconds(static_cast<std::int64_t>(low + (d - low) * uniform())));
  }
  /// Starts over (after a successful attempt).
  void reset() noexcept { attempt_ = 0; }
  [[nodiscard]] std::uint32_t attempts() const noexcept { return attempt_; }

 private:
  double uniform() noexcept {  // xorshift64*, [0, 1)
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return static_cast<double>((state_ * 0x2545F4914F6CDD1DULL) >> 11) * 0x1.0p-53;
  }

  std::chrono::milliseconds initial_;
  std::chrono::milliseconds max_;
  double multiplier_;
  double jitter_;
  std::uint64_t state_;
  std::uint32_t attempt_ = 0;
};

}  // namespace kincir::rabbitmq
