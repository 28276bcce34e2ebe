/// @file
/// The vocabulary of the sans-I/O protocol algorithms: `Event` (what happened: start, bytes
/// written, a frame read, a timeout, a transport failure, a clock tick) and `Action` (what the
/// driver must do next, or what the algorithm has to report).
///
/// Every algorithm is `Action resume(State&, const Event&)`. Frames to send go to the state's
/// `OutputBuffer out`: the handshake and close algorithms ask for them to be written with a
/// `write` action and wait for `Event::written()`; the channel and connection machines, which
/// never wait, leave them in `out` and the driver writes `out` whenever it is not empty.
#pragma once

#include <kincir/config.hpp>

#include <kincir/core/bytes.hpp>           // Bytes, the read buffer for zero-copy bodies
#include <kincir/rabbitmq/amqp/frame.hpp>  // Frame

#include <chrono>        // steady_clock ticks
#include <cstdint>       // std::uint8_t
#include <system_error>  // std::error_code

namespace kincir::rabbitmq::amqp {

/// What happened, fed to `resume`.
struct Event {
  enum class Kind : std::uint8_t {
    /// First call of an algorithm.
    start,
    /// The requested write completed.
    written,
    /// A frame arrived (`frame`; `source` optionally owns the bytes it points into).
    frame,
    /// The algorithm's deadline passed.
    timeout,
    /// The transport failed (`ec`).
    failed,
    /// The clock advanced (`now`): heartbeat bookkeeping.
    tick,
  };

  Kind kind = Kind::start;
  Frame frame;
  const Bytes* source = nullptr;
  std::error_code ec;
  std::chrono::steady_clock::time_point now;

  static Event start() noexcept { return {}; }
  static Event written() noexcept { return with(Kind::written); }
  static Event received(const Frame& frame, const Bytes* source = nullptr) noexcept {
    Event e = with(Kind::frame);
    e.frame = frame;
    e.source = source;
    return e;
  }
  static Event timeout() noexcept { return with(Kind::timeout); }
  static Event failed(std::error_code ec) noexcept {
    Event e = with(Kind::failed);
    e.ec = ec;
    return e;
  }
  static Event tick(std::chrono::steady_clock::time_point now) noexcept {
    Event e = with(Kind::tick);
    e.now = now;
    return e;
  }

 private:
  static Event with(Kind kind) noexcept {
    Event e;
    e.kind = kind;
    return e;
  }
};

/// What the driver does next, or what the algorithm reports.
struct Action {
  enum class Kind : std::uint8_t {
    /// Nothing to do; feed the next event.
    none,
    /// Write the state's `out`, then resume with `Event::written()`.
    write,
    /// Read the next frame (of this channel, for a channel) and resume with it.
    read,
    /// The algorithm finished; `ec` is its result.
    done,
    /// A synchronous call completed: the channel's `reply` holds the answer (the oldest
    /// pending call is answered).
    reply,
    /// A message was delivered: the channel's `delivery`.
    delivery,
    /// A message came back unroutable: the channel's `returned`.
    returned,
    /// Publisher confirms were settled: the channel's `settled` ranges; `ec` is empty for an
    /// ack, `errc::message_nacked` for a nack.
    confirm,
    /// The server cancelled a consumer: the channel's `cancelled_consumer`.
    consumer_cancelled,
    /// The channel closed: `ec` is the server's reply code (empty for a clean close); pending
    /// calls failed and every outstanding confirm is in `settled`.
    channel_closed,
    /// connection.blocked: publishing should pause (reason in the state).
    blocked,
    /// connection.unblocked.
    unblocked,
    /// The server closed the connection: `ec` is its reply code, text in the diagnostics.
    connection_closed,
    /// The peer broke the protocol (`ec`): close the connection with `reply_code_for(ec)`.
    protocol_error,
    /// connection.update-secret-ok: the server took the new credentials.
    secret_updated,
  };

  Kind kind = Kind::none;
  std::error_code ec;

  static Action none() noexcept { return {}; }
  static Action write() noexcept { return {Kind::write, {}}; }
  static Action read() noexcept { return {Kind::read, {}}; }
  static Action done(std::error_code ec = {}) noexcept { return {Kind::done, ec}; }

  friend bool operator==(const Action&, const Action&) = default;
};

}  // namespace kincir::rabbitmq::amqp
