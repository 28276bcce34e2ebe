/// @file
/// `Heartbeat`: the bookkeeping of AMQP heartbeats for a negotiated interval H. Send a heartbeat
/// frame when nothing was written for H/2; consider the peer dead after 2H without receiving a
/// single byte (any traffic counts, not only heartbeat frames). The driver owns the timers and
/// the clock; this class only decides.
#pragma once

#include <kincir/config.hpp>

#include <chrono>   // steady_clock, durations
#include <cstdint>  // std::uint8_t

namespace kincir::rabbitmq::amqp {

class Heartbeat {
 public:
  using clock = std::chrono::steady_clock;

  /// What `check` decided.
  enum class Status : std::uint8_t {
    /// Nothing to do before `next_deadline()`.
    idle,
    /// Nothing was written for H/2: send a heartbeat frame (then call `on_write`).
    send,
    /// Nothing was received for 2H: the peer is dead.
    dead,
  };

  /// Starts heartbeats with interval `interval` (0: disabled) at `now`.
  void start(std::chrono::seconds interval, clock::time_point now) noexcept {
    interval_ = interval;
    last_read_ = now;
    last_write_ = now;
  }

  [[nodiscard]] bool enabled() const noexcept { return interval_.count() != 0; }
  [[nodiscard]] std::chrono::seconds interval() const noexcept { return interval_; }

  /// Bytes arrived at `now` (any bytes: a busy server sends no heartbeat frames).
  void on_read(clock::time_point now) noexcept { last_read_ = now; }
  /// Bytes were written at `now`.
  void on_write(clock::time_point now) noexcept { last_write_ = now; }

  [[nodiscard]] Status check(clock::time_point now) const noexcept {
    if (!enabled()) return Status::idle;
    if (now - last_read_ >= 2 * interval_) return Status::dead;
    if (now - last_write_ >= send_interval()) return Status::send;
    return Status::idle;
  }

  /// When `check` should run next: the earlier of the send and the dead deadline.
  [[nodiscard]] clock::time_point next_deadline() const noexcept {
    if (!enabled()) return clock::time_point::max();
    const auto send = last_write_ + send_interval();
    const auto dead = last_read_ + 2 * interval_;
    return send < dead ? send : dead;
  }

 private:
  [[nodiscard]] clock::duration send_interval() const noexcept {
    return std::chrono::duration_cast<clock::duration>(interval_) / 2;
  }

  std::chrono::seconds interval_{0};
  clock::time_point last_read_{};
  clock::time_point last_write_{};
};

}  // namespace kincir::rabbitmq::amqp
