// Fuzzes the connection and channel state machines with a hostile server. The input is the
// server's byte stream: the client runs the handshake, then opens channel 1, selects confirms,
// publishes and consumes, and routes every frame as a driver would. Any input must end in a
// clean error or a clean close, never a crash, a leak or undefined behaviour.
#include <kincir/rabbitmq/amqp/connection.hpp>

#include <kincir/rabbitmq/amqp/channel.hpp>

#include <chrono>        // the synthetic heartbeat clock
#include <cstddef>       // std::size_t
#include <cstdint>       // std::uint8_t
#include <cstdlib>       // std::abort
#include <span>          // input views
#include <system_error>  // std::error_code

namespace amqp = kincir::rabbitmq::amqp;
using Kind = amqp::Action::Kind;

namespace {

/// The client's side after the handshake: channel 1 in confirm mode, publishing and consuming.
void start_channel(amqp::ChannelState& ch) {
  std::error_code ec;
  amqp::open_channel(ch, ec);
}

void after_open(amqp::ChannelState& ch) {
  std::error_code ec;
  amqp::send_method(ch, amqp::ConfirmSelect{}, ec);
  amqp::BasicQos qos;
  qos.prefetch_count = 10;
  amqp::send_method(ch, qos, ec);
  amqp::BasicConsume consume;
  consume.queue = "q";
  amqp::send_method(ch, consume, ec);
  static constexpr std::uint8_t kBody[] = {'b', 'o', 'd', 'y'};
  for (int i = 0; i < 3; ++i) amqp::publish(ch, amqp::BasicPublish{}, {}, kBody, ec);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  amqp::ConnectionState conn;
  amqp::HandshakeAlgo handshake;
  amqp::ChannelState channel(1, amqp::kFrameMinSize);
  std::span<const std::uint8_t> rest(data, size);

  // Handshake: the algorithm asks to write (we pretend it succeeded) or to read (the next frame).
  amqp::Event ev = amqp::Event::start();
  for (;;) {
    const amqp::Action action = handshake.resume(conn, ev);
    if (action.kind == Kind::done) {
      if (action.ec) return 0;
      break;
    }
    if (action.kind == Kind::write) {
      ev = amqp::Event::written();
      continue;
    }
    if (action.kind != Kind::read) std::abort();
    std::error_code ec;
    const auto r = conn.reader.parse(rest, ec);
    if (r.status != amqp::ParseStatus::complete) {
      ev = r.status == amqp::ParseStatus::error ? amqp::Event::failed(ec) : amqp::Event::timeout();
      continue;
    }
    ev = amqp::Event::received(r.frame);
    rest = rest.subspan(r.size);
  }
  if (conn.phase != amqp::ConnectionPhase::open) std::abort();

  channel.frame_max = conn.tuning.frame_max == 0 ? amqp::kDefaultFrameMax : conn.tuning.frame_max;
  start_channel(channel);
  // A synthetic clock: each frame arrives some seconds after the previous one.
  auto now = amqp::Heartbeat::clock::time_point() + std::chrono::hours(1);
  conn.heartbeat.start(std::chrono::seconds(conn.tuning.heartbeat), now);
  bool opened = false;
  while (!rest.empty()) {
    std::error_code ec;
    const auto r = conn.reader.parse(rest, ec);
    if (r.status != amqp::ParseStatus::complete) break;
    rest = rest.subspan(r.size);
    now += std::chrono::seconds(r.frame.payload.empty() ? 0 : r.frame.payload.back() % 4);
    if (amqp::resume(conn, amqp::Event::tick(now)).kind == Kind::protocol_error) return 0;  // missed heartbeats
    conn.heartbeat.on_read(now);
    const amqp::Event frame = amqp::Event::received(r.frame);
    amqp::Action action;
    if (r.frame.channel == 0 || r.frame.type == amqp::FrameType::heartbeat) {
      action = amqp::resume(conn, frame);
      if (action.kind == Kind::connection_closed) {
        amqp::abandon(channel, action.ec);
        return 0;
      }
    } else if (r.frame.channel == channel.id && channel.phase != amqp::ChannelPhase::closed) {
      action = amqp::resume(channel, frame);
      if (action.kind == Kind::reply && !opened && channel.phase == amqp::ChannelPhase::open) {
        opened = true;
        after_open(channel);
      }
      if (action.kind == Kind::delivery) amqp::ack(channel, channel.delivery.delivery_tag, false, ec);
      if (action.kind == Kind::channel_closed) {
        // Settled ranges must cover only tags that were published.
        for (const auto& range : channel.settled)
          if (range.first == 0 || range.last >= channel.confirms.next_tag() || range.first > range.last) std::abort();
      }
    } else {
      action = amqp::Action{Kind::protocol_error, kincir::rabbitmq::errc::unexpected_frame};
    }
    if (action.kind == Kind::protocol_error) {
      // The driver would now close the connection with this reply code.
      (void)amqp::reply_code_for(action.ec);
      amqp::abandon(channel, action.ec);
      return 0;
    }
    channel.out.clear();
    conn.out.clear();
  }

  // Whatever is left is the server's side of a client-initiated close.
  amqp::CloseAlgo close;
  ev = amqp::Event::start();
  for (int steps = 0; steps < 100000; ++steps) {
    const amqp::Action action = close.resume(conn, ev);
    if (action.kind == Kind::done) return 0;
    if (action.kind == Kind::write) {
      ev = amqp::Event::written();
      continue;
    }
    std::error_code ec;
    const auto r = conn.reader.parse(rest, ec);
    if (r.status != amqp::ParseStatus::complete) {
      ev = amqp::Event::timeout();
      continue;
    }
    ev = amqp::Event::received(r.frame);
    rest = rest.subspan(r.size);
  }
  std::abort();  // the close never finished
}
