// Read batching (RabbitMQConfig::read_batch_interval / read_batch_frames) against the test node:
// TLS streams, synchronous calls and many consumers on a batched connection, a connection closed
// by the broker while a read is held back, unsubscribe and subscribe again under a stream.
#include <kincir/rabbitmq/publisher.hpp>   // RabbitMQPublisher
#include <kincir/rabbitmq/subscriber.hpp>  // RabbitMQSubscriber

#include <atomic>        // stop
#include <chrono>        // deadlines
#include <cstdlib>       // std::getenv
#include <memory>        // subscribers
#include <set>           // distinct numbers
#include <string>        // names
#include <system_error>  // error codes
#include <thread>        // polling
#include <utility>       // std::move
#include <vector>        // batches

#include "broker_ctl.hpp"
#include "node.hpp"  // node(), fresh(), eventually()
#include "support/catch.hpp"

using namespace std::chrono_literals;
using kincir::Message;
using kincir::rabbitmq::Connection;
using kincir::rabbitmq::RabbitMQConfig;
using kincir::rabbitmq::RabbitMQPublisher;
using kincir::rabbitmq::RabbitMQSubscriber;

// A namespace of its own: the files of this binary may be compiled as one unit.
namespace batching_test {
namespace {

std::string batching_text(const Message& m) { return std::string(m.payload.view()); }

/// Publishes the numbers [from, to) in batches of 500.
void batching_publish(RabbitMQPublisher& pub, const std::string& topic, int from, int to) {
  while (from < to) {
    std::vector<Message> batch;
    for (int i = 0; i < 500 && from < to; ++i) batch.emplace_back(std::to_string(from++));
    pub.publish(topic, std::move(batch));
  }
}

}  // namespace
}  // namespace batching_test

using namespace batching_test;

#if KINCIR_RABBITMQ_TLS
TEST_CASE("read batching over TLS: a backlog drains, one TLS record per interval would not",
          "[broker][batching][tls]") {
  // A TLS read returns one record (at most 16 KiB), never a full read buffer. With 100 ms
  // intervals a connection that read one record per interval would take minutes for this
  // backlog; the bound below is a liveness bound many times what draining it takes.
  const char* port = std::getenv("KINCIR_RABBITMQ_TLS_PORT");  // NOLINT(concurrency-mt-unsafe): read once
  REQUIRE(port != nullptr);
  RabbitMQConfig cfg = RabbitMQConfig::for_testing();
  cfg.apply_uri(std::string("amqps://guest:guest@127.0.0.1:") + port + "/?verify=verify_none");
  cfg.connection.vhost = "/";
  cfg.read_batch_interval = 100ms;
  cfg.prefetch = 1000;
  auto conn = Connection::open(cfg);
  const std::string topic = kincir::test::fresh("batching-tls");
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic, "g");
  const int total = 20000;
  {
    RabbitMQPublisher pub(Connection::open(kincir::test::node()));
    batching_publish(pub, topic, 0, total);
  }
  const auto until = std::chrono::steady_clock::now() + 15s;
  int got = 0;
  while (got < total && std::chrono::steady_clock::now() < until) {
    auto m = sub.receive_for(1s);
    if (!m) continue;
    REQUIRE(batching_text(*m) == std::to_string(got));
    ++got;
  }
  CHECK(got == total);
  CHECK(conn->is_open());
}
#endif

TEST_CASE("read batching: synchronous calls and publishes on a connection with a hot consumer complete",
          "[broker][batching]") {
  // Every read of the shared connection is held back 100 ms once it read a frame: declares,
  // consumes, confirms and the close handshake still complete, each at most an interval later.
  auto cfg = kincir::test::node();
  cfg.read_batch_interval = 100ms;
  cfg.read_batch_frames = 1;
  auto conn = Connection::open(cfg);
  const std::string hot = kincir::test::fresh("batching-hot");
  RabbitMQSubscriber consumer(conn);
  consumer.subscribe(hot);
  std::atomic<bool> stop{false};
  std::thread feeder([&] {
    RabbitMQPublisher pub(Connection::open(kincir::test::node()));
    int n = 0;
    while (!stop.load()) {
      batching_publish(pub, hot, n, n + 200);
      n += 200;
      std::this_thread::sleep_for(5ms);
    }
  });
  std::thread drainer([&] {
    while (!stop.load()) (void)consumer.receive_for(50ms);
  });
  RabbitMQPublisher pub(conn);  // confirms on the batched connection
  for (int i = 0; i < 10; ++i) {
    const auto started = std::chrono::steady_clock::now();
    const std::string topic = kincir::test::fresh("batching-sync");
    RabbitMQSubscriber sub(conn);
    sub.subscribe(topic, "g");                      // channel open, declare, qos, consume: synchronous
    pub.publish(topic, Message(std::string("x")));  // waits for its confirm
    auto m = sub.receive_for(5s);
    REQUIRE(m);
    CHECK(batching_text(*m) == "x");
    sub.unsubscribe();
    CHECK(std::chrono::steady_clock::now() - started < 10s);  // liveness, not speed
  }
  stop = true;
  feeder.join();
  drainer.join();
  CHECK(conn->is_open());
  conn->close();
  CHECK_FALSE(conn->is_open());
}

TEST_CASE("read batching: many subscribers on one batched connection each get their stream in order",
          "[broker][batching]") {
  auto cfg = kincir::test::node();
  cfg.read_batch_interval = 100ms;
  cfg.read_batch_frames = 1;
  auto conn = Connection::open(cfg);
  constexpr int kSubs = 8;
  constexpr int kEach = 300;
  std::vector<std::string> topics;
  std::vector<std::unique_ptr<RabbitMQSubscriber>> subs;
  for (int s = 0; s < kSubs; ++s) {
    topics.push_back(kincir::test::fresh("batching-many"));
    subs.push_back(std::make_unique<RabbitMQSubscriber>(conn));
    subs.back()->subscribe(topics.back());
  }
  RabbitMQPublisher pub(Connection::open(kincir::test::node()));
  for (int s = 0; s < kSubs; ++s) batching_publish(pub, topics[static_cast<std::size_t>(s)], 0, kEach);
  for (int s = 0; s < kSubs; ++s) {
    for (int i = 0; i < kEach; ++i) {
      auto m = subs[static_cast<std::size_t>(s)]->receive_for(10s);
      REQUIRE(m);
      REQUIRE(batching_text(*m) == std::to_string(i));
    }
  }
  for (auto& sub : subs) CHECK_FALSE(sub->try_receive());
}

TEST_CASE("read batching: a connection the broker closes while a read is held back recovers, nothing lost",
          "[broker][batching][recovery]") {
  auto cfg = kincir::test::node();
  const std::string name = kincir::test::fresh("kincir-batching-close");
  cfg.connection.connection_name = name;
  cfg.read_batch_interval = 100ms;
  cfg.read_batch_frames = 1;
  cfg.recovery.initial_delay = 50ms;
  auto conn = Connection::open(cfg);
  const std::string topic = kincir::test::fresh("batching-close");
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic, "g");
  const int total = 10000;
  std::atomic<bool> closed{false};
  std::thread feeder([&] {  // a stream until after the close, and a little beyond
    RabbitMQPublisher pub(Connection::open(kincir::test::node()));
    for (int n = 0; n < total; n += 100) {
      batching_publish(pub, topic, n, n + 100);
      std::this_thread::sleep_for(closed.load() ? 1ms : 20ms);
    }
  });
  // rabbitmqctl takes a second or more: the stream is on by then, reads are held back.
  std::thread closer([&] { closed = kincir::test::close_connections_named(name) == 1; });
  std::set<int> seen;
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (seen.size() < static_cast<std::size_t>(total) && std::chrono::steady_clock::now() < until) {
    auto r = sub.receive_with_ack_for(1s);
    if (!r) continue;
    seen.insert(std::stoi(batching_text(r->first)));
    std::error_code ec;
    sub.ack(r->second, ec);  // stale after the recovery: the broker redelivers, never lost
  }
  closer.join();
  feeder.join();
  CHECK(closed.load());
  CHECK(seen.size() == static_cast<std::size_t>(total));
  CHECK(kincir::test::eventually([&] { return conn->recovery_stats().recovered >= 1; }, 15s));
  CHECK(conn->is_open());
}

TEST_CASE("read batching: unsubscribe and subscribe again under a stream lose nothing of a group",
          "[broker][batching][acks]") {
  auto cfg = kincir::test::node();
  cfg.read_batch_interval = 20ms;
  cfg.read_batch_frames = 4;
  auto conn = Connection::open(cfg);
  const std::string topic = kincir::test::fresh("batching-resub");
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic, "g");
  const int total = 5000;
  std::thread feeder([&] {
    RabbitMQPublisher pub(Connection::open(kincir::test::node()));
    for (int n = 0; n < total; n += 250) {
      batching_publish(pub, topic, n, n + 250);
      std::this_thread::sleep_for(10ms);
    }
  });
  std::set<int> seen;
  const auto until = std::chrono::steady_clock::now() + 60s;
  int round = 0;
  while (seen.size() < static_cast<std::size_t>(total) && std::chrono::steady_clock::now() < until) {
    // A few deliveries, then unsubscribe with more of them buffered and on the way: those are
    // redelivered to the next subscription, never handed out by this one after unsubscribe.
    for (int i = 0; i < 50 + round % 7 * 30; ++i) {
      auto m = sub.receive_for(200ms);
      if (!m) break;
      seen.insert(std::stoi(batching_text(*m)));
    }
    sub.unsubscribe();
    std::error_code ec;
    CHECK_FALSE(sub.try_receive(ec));  // nothing of the old subscription comes after it
    CHECK(ec == kincir::errc::not_subscribed);
    sub.subscribe(topic, "g");
    ++round;
  }
  feeder.join();
  CHECK(seen.size() == static_cast<std::size_t>(total));
  sub.unsubscribe();
  CHECK(kincir::test::eventually(
      [&] {
        return kincir::test::ctl("list_queues name messages messages_unacknowledged").find(topic + ".g\t0\t0") !=
               std::string::npos;
      },
      10s));
}

TEST_CASE("read batching: small prefetches keep a stream flowing and every automatic ack reaches the broker",
          "[broker][batching][acks]") {
  // Acks go out from a read once a quarter of the prefetch waits (at least one), and the receiver
  // posts them at half: with a prefetch of 1 or 3 the broker sends nothing more until they
  // arrive. A liveness check of the ack paths together (the receiver's post alone would keep
  // this stream going): the stream ends and every ack reaches the broker.
  for (const std::uint16_t prefetch : {std::uint16_t{1}, std::uint16_t{3}, std::uint16_t{8}}) {
    CAPTURE(prefetch);
    auto cfg = kincir::test::node();
    cfg.prefetch = prefetch;
    auto conn = Connection::open(cfg);
    const std::string topic = kincir::test::fresh("batching-prefetch");
    RabbitMQSubscriber sub(conn);
    sub.subscribe(topic, "g");
    const int total = 3000;
    std::thread feeder([&] {
      RabbitMQPublisher pub(Connection::open(kincir::test::node()));
      batching_publish(pub, topic, 0, total);
    });
    const auto started = std::chrono::steady_clock::now();
    for (int i = 0; i < total; ++i) {
      auto m = sub.receive_for(5s);
      REQUIRE(m);
      REQUIRE(batching_text(*m) == std::to_string(i));
    }
    feeder.join();
    CHECK(std::chrono::steady_clock::now() - started < 30s);  // liveness, not speed
    // Still subscribed: the last acks go out once deliveries stop.
    CHECK(kincir::test::eventually(
        [&] {
          return kincir::test::ctl("list_queues name messages messages_unacknowledged").find(topic + ".g\t0\t0") !=
                 std::string::npos;
        },
        10s));
  }
}

TEST_CASE("read batching: large bodies under a stream arrive intact while the read buffer grows",
          "[broker][batching]") {
  // 96 KiB bodies, each a pattern of its own, from a second connection: a held-back read takes
  // several frames and a partial one; reads that fill the buffer grow it (to 512 KiB) and the
  // low-water mark follows the buffer's free space.
  auto conn = Connection::open(kincir::test::node());
  const std::string topic = kincir::test::fresh("batching-large");
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic, "g");
  constexpr int kTotal = 300;
  constexpr std::size_t kSize = std::size_t{96} * 1024;
  const auto body_of = [](int n) {
    std::string s(kSize, '\0');
    for (std::size_t i = 0; i < s.size(); ++i)
      s[i] = static_cast<char>((i * 31 + static_cast<std::size_t>(n) * 7) & 0xff);
    return s;
  };
  std::thread feeder([&] {
    RabbitMQPublisher pub(Connection::open(kincir::test::node()));
    for (int n = 0; n < kTotal; n += 20) {
      std::vector<Message> batch;
      for (int i = n; i < n + 20; ++i) batch.push_back(Message(body_of(i)).with_metadata("n", std::to_string(i)));
      pub.publish(topic, std::move(batch));
    }
  });
  int intact = 0;
  for (int i = 0; i < kTotal; ++i) {
    auto m = sub.receive_for(10s);
    REQUIRE(m);
    REQUIRE(m->metadata.get("n") == std::to_string(i));
    intact += batching_text(*m) == body_of(i) ? 1 : 0;
  }
  feeder.join();
  CHECK(intact == kTotal);
  CHECK(conn->is_open());
}

TEST_CASE("read batching: a publisher on a connection batching a stream gets every confirm, small window or large",
          "[broker][batching]") {
  // Confirms of many messages count toward read batching, except where one read's confirms come
  // near the window: a window of 4 gets its reads at once, a window of 1024 is batched. Each
  // shares its connection with a consumer of a stream that keeps the reads held back.
  const std::string hot = kincir::test::fresh("batching-window-hot");
  std::atomic<bool> stop{false};
  std::thread feeder([&] {
    RabbitMQPublisher pub(Connection::open(kincir::test::node()));
    int n = 0;
    while (!stop.load()) {
      batching_publish(pub, hot, n, n + 500);
      n += 500;
    }
  });
  for (const std::size_t window : {std::size_t{4}, std::size_t{1024}}) {
    CAPTURE(window);
    auto cfg = kincir::test::node();
    cfg.max_unconfirmed = window;
    auto conn = Connection::open(cfg);
    RabbitMQSubscriber consumer(conn);
    consumer.subscribe(hot);  // fan-out: its own queue, the stream from now on
    std::atomic<bool> drained{false};
    std::atomic<int> streamed{0};
    std::thread drainer([&] {
      while (!drained.load()) streamed += consumer.receive_for(50ms) ? 1 : 0;
    });
    REQUIRE(kincir::test::eventually([&] { return streamed.load() > 1000; }, 10s));
    const std::string topic = kincir::test::fresh("batching-window");
    RabbitMQSubscriber sub(Connection::open(kincir::test::node()));
    sub.subscribe(topic, "g");
    RabbitMQPublisher pub(conn);
    const auto started = std::chrono::steady_clock::now();
    batching_publish(pub, topic, 0, 3000);                    // throws unless every message is confirmed
    CHECK(std::chrono::steady_clock::now() - started < 30s);  // liveness, not speed
    for (int i = 0; i < 3000; ++i) {
      auto m = sub.receive_for(5s);
      REQUIRE(m);
      REQUIRE(batching_text(*m) == std::to_string(i));
    }
    drained = true;
    drainer.join();
    CHECK(conn->is_open());
  }
  stop = true;
  feeder.join();
}
