// The connection against a scripted AMQP server on loopback ([unit]: no broker): a peer that
// misbehaves in ways a real RabbitMQ does not, so that what the client does about it is tested.
#include <kincir/rabbitmq/connection.hpp>

#include <asio/io_context.hpp>  // the fake server's own context
#include <asio/ip/tcp.hpp>      // acceptor, socket
#include <asio/read.hpp>        // whole frames
#include <asio/write.hpp>       // frames out

#include <array>      // frame headers
#include <chrono>     // deadlines
#include <cstdint>    // bytes
#include <optional>   // the close the client sent
#include <stdexcept>  // a failed script step
#include <string>     // the URI
#include <thread>     // the fake server runs beside the client
#include <vector>     // frames

#include "amqp_harness.hpp"
#include "support/catch.hpp"

using namespace std::chrono_literals;
using kincir::rabbitmq::Connection;
using kincir::rabbitmq::RabbitMQConfig;
namespace amqp = kincir::rabbitmq::amqp;
namespace amqp_test = kincir::rabbitmq::amqp::test;

namespace {

/// One AMQP server connection, driven by hand: reads whole frames, writes prepared ones.
class ScriptedPeer {
 public:
  ScriptedPeer() : acceptor_(io_, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {}

  [[nodiscard]] std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

  void accept() {
    acceptor_.accept(socket_);
    std::array<std::uint8_t, 8> header{};
    asio::read(socket_, asio::buffer(header));  // "AMQP" 0 0 9 1
    expect(header == std::array<std::uint8_t, 8>{'A', 'M', 'Q', 'P', 0, 0, 9, 1}, "not an AMQP 0-9-1 header");
  }

  void send(const amqp_test::ByteVector& bytes) { asio::write(socket_, asio::buffer(bytes)); }

  /// The next frame's method, decoded (content and heartbeat frames are skipped).
  amqp::Method read_method() {
    for (;;) {
      std::array<std::uint8_t, 7> head{};
      asio::read(socket_, asio::buffer(head));
      const std::uint32_t size = (std::uint32_t{head[3]} << 24) | (std::uint32_t{head[4]} << 16) |
                                 (std::uint32_t{head[5]} << 8) | std::uint32_t{head[6]};
      amqp_test::ByteVector frame(head.begin(), head.end());
      frame.resize(head.size() + size + 1);
      asio::read(socket_, asio::buffer(frame.data() + head.size(), size + 1));
      std::error_code ec;
      const auto parsed = amqp::FrameReader(0).parse(frame, ec);
      expect(!ec && parsed.status == amqp::ParseStatus::complete, "the client sent a malformed frame");
      if (parsed.frame.type != amqp::FrameType::method) continue;
      amqp::Method m;
      amqp::decode_method(parsed.frame.payload, m, ec);
      expect(!ec, "the client sent a method that does not decode");
      return m;
    }
  }

  /// The server's half of the handshake: start, tune (heartbeats off), open-ok.
  void handshake() {
    accept();
    send(amqp_test::method_frame(0, amqp::ConnectionStart{}));
    expect(std::holds_alternative<amqp::ConnectionStartOk>(read_method()), "expected start-ok");
    amqp::ConnectionTune tune;
    tune.channel_max = 16;
    tune.frame_max = 131072;
    tune.heartbeat = 0;
    send(amqp_test::method_frame(0, tune));
    expect(std::holds_alternative<amqp::ConnectionTuneOk>(read_method()), "expected tune-ok");
    expect(std::holds_alternative<amqp::ConnectionOpen>(read_method()), "expected open");
    send(amqp_test::method_frame(0, amqp::ConnectionOpenOk{}));
  }

 private:
  // Runs on the server's thread, where a Catch assertion may not be used: a failure ends the
  // script with an exception that the test reads after joining.
  static void expect(bool ok, const char* what) {
    if (!ok) throw std::runtime_error(what);
  }

  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  asio::ip::tcp::socket socket_{io_};
};

RabbitMQConfig config_for(std::uint16_t port) {
  RabbitMQConfig c = RabbitMQConfig::for_testing();
  c.apply_uri("amqp://guest:guest@127.0.0.1:" + std::to_string(port));
  c.recovery.enabled = false;  // one connection: the scripted peer accepts once
  return c;
}

/// What the scripted server saw: the connection.close the client sent, or why the script failed.
struct ServerLog {
  std::optional<amqp::ConnectionClose> client_close;
  std::string failure;
};

/// Serves one client on its own thread: the handshake, then `bad_frame`, then waits for the
/// client's connection.close and answers it.
std::thread serve(ScriptedPeer& peer, amqp_test::ByteVector bad_frame, ServerLog& log) {
  return std::thread([&peer, &log, bad = std::move(bad_frame)] {
    try {
      peer.handshake();
      peer.send(bad);
      for (;;) {
        amqp::Method m = peer.read_method();
        if (auto* close = std::get_if<amqp::ConnectionClose>(&m)) {
          log.client_close = *close;
          peer.send(amqp_test::method_frame(0, amqp::ConnectionCloseOk{}));
          return;
        }
      }
    } catch (const std::exception& e) {
      log.failure = e.what();
    }
  });
}

/// Joins the server thread also when the client's open throws (the script then ends on the closed
/// socket).
class ThreadJoiner {
 public:
  explicit ThreadJoiner(std::thread& thread) : thread_(thread) {}
  ThreadJoiner(const ThreadJoiner&) = delete;
  ThreadJoiner& operator=(const ThreadJoiner&) = delete;
  ~ThreadJoiner() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::thread& thread_;
};

/// Waits (up to 10 s) until `conn` is no longer open.
bool closes_within_deadline(const Connection& conn) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (conn.is_open() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  return !conn.is_open();
}

/// What a client connection did against a peer that sent `bad_frame` after the handshake.
struct Outcome {
  bool closed = false;           ///< the client closed the connection by itself within 10 s
  ServerLog log;                 ///< what the peer saw
  std::error_code client_error;  ///< Connection::error() afterwards
};

Outcome connect_to_peer_sending(amqp_test::ByteVector bad_frame) {
  ScriptedPeer peer;
  Outcome out;
  std::thread server = serve(peer, std::move(bad_frame), out.log);
  const ThreadJoiner joiner{server};
  auto conn = Connection::open(config_for(peer.port()));
  out.closed = closes_within_deadline(*conn);
  if (!out.closed) conn->close();
  server.join();  // the script ends when the client closes
  out.client_error = conn->error();
  return out;
}

}  // namespace

TEST_CASE("a frame on a channel that is not open is a connection error 504", "[unit][fake_peer]") {
  amqp::BasicAck ack;  // on channel 7, which the client never opened
  ack.delivery_tag = 1;
  const Outcome out = connect_to_peer_sending(amqp_test::method_frame(7, ack));
  INFO("server script: " << (out.log.failure.empty() ? "ok" : out.log.failure));
  REQUIRE(out.closed);
  REQUIRE(out.log.client_close.has_value());
  CHECK(out.log.client_close->reply_code == 504);
  CHECK(out.log.client_close->reply_text.find("channel 7") != std::string::npos);
  CHECK(out.client_error == kincir::rabbitmq::reply_code::channel_error);
  // A protocol error is final: recovery (on by default) would not reconnect after it.
  CHECK_FALSE(kincir::rabbitmq::is_recoverable(out.client_error));
}

TEST_CASE("a frame for a channel above channel_max is a connection error 504", "[unit][fake_peer]") {
  const Outcome out = connect_to_peer_sending(amqp_test::method_frame(65535, amqp::ChannelOpenOk{}));  // max 16
  INFO("server script: " << (out.log.failure.empty() ? "ok" : out.log.failure));
  REQUIRE(out.closed);
  REQUIRE(out.log.client_close.has_value());
  CHECK(out.log.client_close->reply_code == 504);
  CHECK(out.client_error == kincir::rabbitmq::reply_code::channel_error);
}
