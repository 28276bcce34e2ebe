// Hostile review of read batching round four (read buffer growth, low-water mark, confirms as
// read weight, automatic acks sent once a quarter of the prefetch waits): acks that must reach
// the broker however the receiver behaves, small publisher windows on batched connections, large
// bodies and frame_max variations, recovery after the read buffer grew.
#include <kincir/rabbitmq/publisher.hpp>   // RabbitMQPublisher
#include <kincir/rabbitmq/subscriber.hpp>  // RabbitMQSubscriber

#include <atomic>              // counters
#include <chrono>              // deadlines
#include <condition_variable>  // async_receive completions
#include <cstdint>             // prefetch
#include <functional>          // the async chain
#include <map>                 // outcomes per message
#include <memory>              // subscribers
#include <mutex>               // outcomes
#include <set>                 // distinct numbers
#include <span>                // publish_with_outcomes
#include <sstream>             // ctl output
#include <string>              // names
#include <system_error>        // error codes
#include <thread>              // feeders
#include <utility>             // std::move
#include <vector>              // batches

#include "broker_ctl.hpp"
#include "node.hpp"  // node(), fresh(), eventually()
#include "support/catch.hpp"

using namespace std::chrono_literals;

// A namespace of its own: the files of this binary may be compiled as one unit.
namespace hostile4_test {
namespace {

using kincir::Message;
using kincir::rabbitmq::Connection;
using kincir::rabbitmq::RabbitMQConfig;
using kincir::rabbitmq::RabbitMQPublisher;
using kincir::rabbitmq::RabbitMQSubscriber;

std::string h4_text(const Message& m) { return std::string(m.payload.view()); }

void h4_publish(RabbitMQPublisher& pub, const std::string& topic, int from, int to) {
  while (from < to) {
    std::vector<Message> batch;
    for (int i = 0; i < 250 && from < to; ++i) batch.emplace_back(std::to_string(from++));
    pub.publish(topic, std::move(batch));
  }
}

/// messages_ready and messages_unacknowledged of `queue` (-1, -1 if not listed).
std::pair<long, long> h4_queue_counts(const std::string& queue) {
  std::istringstream lines(kincir::test::ctl("list_queues -q name messages_ready messages_unacknowledged"));
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::string name;
    long ready = -1;
    long unacked = -1;
    if (!(fields >> name >> ready >> unacked)) continue;
    if (name == queue) return {ready, unacked};
  }
  return {-1, -1};
}

bool h4_counts_become(const std::string& queue, long ready, long unacked, std::chrono::milliseconds limit) {
  std::pair<long, long> last{-2, -2};
  const bool ok = kincir::test::eventually(
      [&] {
        last = h4_queue_counts(queue);
        return last.first == ready && last.second == unacked;
      },
      limit);
  if (!ok) UNSCOPED_INFO("queue " << queue << ": ready " << last.first << " unacked " << last.second);
  return ok;
}

std::string h4_body(std::size_t size, int n) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < s.size(); ++i)
    s[i] = static_cast<char>((i * 131 + static_cast<std::size_t>(n) * 17 + (i >> 9)) & 0xff);
  return s;
}

}  // namespace
}  // namespace hostile4_test

using namespace hostile4_test;

TEST_CASE("hostile4: a receiver that stops mid-stream still gets its automatic acks to the broker",
          "[broker][hostile4]") {
  // The receiver takes k deliveries and then stops: the k acks wait below the per-read threshold
  // (prefetch / 4) and below the receiver's (prefetch / 2); only the ack timer sends them. The
  // broker refills the prefetch with k more, so `ready` drops by prefetch + k.
  for (const std::uint16_t prefetch : {std::uint16_t{1}, std::uint16_t{2}, std::uint16_t{5}, std::uint16_t{8},
                                       std::uint16_t{16}, std::uint16_t{100}}) {
    const int k = prefetch >= 8 ? prefetch / 4 - 1 : 1;
    CAPTURE(prefetch, k);
    auto cfg = kincir::test::node();
    cfg.prefetch = prefetch;
    auto conn = Connection::open(cfg);
    const std::string topic = kincir::test::fresh("h4-stop");
    RabbitMQSubscriber sub(conn);
    sub.subscribe(topic, "g");
    const int total = prefetch * 3 + 10;
    {
      RabbitMQPublisher pub(Connection::open(kincir::test::node()));
      h4_publish(pub, topic, 0, total);
    }
    for (int i = 0; i < k; ++i) {
      auto m = sub.receive_for(5s);
      REQUIRE(m);
      CHECK(h4_text(*m) == std::to_string(i));
    }
    CHECK(h4_counts_become(topic + ".g", total - prefetch - k, prefetch, 15s));
    // Still holding what was prefetched; then unsubscribing acks nothing more (nothing handed out).
    sub.unsubscribe();
    CHECK(h4_counts_become(topic + ".g", total - k, 0, 15s));
  }
}

TEST_CASE("hostile4: async_receive chains with small prefetches drain the queue and ack everything",
          "[broker][hostile4]") {
  for (const std::uint16_t prefetch :
       {std::uint16_t{1}, std::uint16_t{2}, std::uint16_t{3}, std::uint16_t{4}, std::uint16_t{7}, std::uint16_t{8}}) {
    CAPTURE(prefetch);
    auto cfg = kincir::test::node();
    cfg.prefetch = prefetch;
    auto conn = Connection::open(cfg);
    const std::string topic = kincir::test::fresh("h4-async");
    RabbitMQSubscriber sub(conn);
    sub.subscribe(topic, "g");
    const int total = 2000;
    std::thread feeder([&] {
      RabbitMQPublisher pub(Connection::open(kincir::test::node()));
      h4_publish(pub, topic, 0, total);
    });
    std::mutex m;
    std::condition_variable cv;
    int got = 0;
    bool in_order = true;
    std::error_code failure;
    std::function<void()> next;
    next = [&] {
      sub.async_receive([&](std::error_code ec, Message msg) {
        const std::lock_guard lock(m);
        if (ec) {
          failure = ec;
          cv.notify_all();
          return;
        }
        if (h4_text(msg) != std::to_string(got)) in_order = false;
        ++got;
        if (got < total) {
          next();
        }
        cv.notify_all();
      });
    };
    next();
    {
      std::unique_lock lock(m);
      CHECK(cv.wait_for(lock, 60s, [&] { return got == total || failure; }));
      CHECK(got == total);
      CHECK_FALSE(failure);
      CHECK(in_order);
    }
    feeder.join();
    CHECK(h4_counts_become(topic + ".g", 0, 0, 15s));
  }
}

TEST_CASE("hostile4: unsubscribe or destroy right after a few receives: nothing handed out is redelivered",
          "[broker][hostile4]") {
  // The acks of the k deliveries handed out are below every threshold (k < prefetch / 4) when the
  // subscription ends: unsubscribe and the destructor must send them.
  for (const bool destroy : {false, true}) {
    for (const std::uint16_t prefetch : {std::uint16_t{8}, std::uint16_t{100}}) {
      CAPTURE(destroy, prefetch);
      auto cfg = kincir::test::node();
      cfg.prefetch = prefetch;
      auto conn = Connection::open(cfg);
      const std::string topic = kincir::test::fresh("h4-unsub");
      auto sub = std::make_unique<RabbitMQSubscriber>(conn);
      sub->subscribe(topic, "g");
      const int total = 400;
      {
        RabbitMQPublisher pub(Connection::open(kincir::test::node()));
        h4_publish(pub, topic, 0, total);
      }
      std::map<int, int> seen;
      int round = 0;
      const auto until = std::chrono::steady_clock::now() + 60s;
      while (seen.size() < static_cast<std::size_t>(total) && std::chrono::steady_clock::now() < until) {
        const int k = 1 + round % std::max(1, prefetch / 4 - 1);
        for (int i = 0; i < k; ++i) {
          auto m = sub->receive_for(5s);
          if (!m) break;
          ++seen[std::stoi(h4_text(*m))];
        }
        if (destroy) {
          sub.reset();  // no wait: the next subscriber comes at once
          sub = std::make_unique<RabbitMQSubscriber>(conn);
        } else {
          sub->unsubscribe();
        }
        sub->subscribe(topic, "g");
        ++round;
      }
      CHECK(seen.size() == static_cast<std::size_t>(total));
      int duplicates = 0;
      for (const auto& [n, times] : seen) duplicates += times > 1 ? 1 : 0;
      CHECK(duplicates == 0);
      sub.reset();
      CHECK(h4_counts_become(topic + ".g", 0, 0, 15s));
    }
  }
}

TEST_CASE("hostile4: small publisher windows on a connection batching a stream: every message one outcome",
          "[broker][hostile4]") {
  const std::string hot = kincir::test::fresh("h4-window-hot");
  std::atomic<bool> stop{false};
  std::thread feeder([&] {
    RabbitMQPublisher pub(Connection::open(kincir::test::node()));
    int n = 0;
    while (!stop.load()) {
      h4_publish(pub, hot, n, n + 250);
      n += 250;
      std::this_thread::sleep_for(2ms);
    }
  });
  struct Case {
    std::size_t window;
    std::size_t bytes;
    std::chrono::microseconds interval;
    std::uint32_t frames;
  };
  const Case cases[] = {{1, 64u << 20, 1000us, 32},  {2, 64u << 20, 1000us, 32},  {3, 64u << 20, 100000us, 1},
                        {7, 64u << 20, 100000us, 1}, {16, 64u << 20, 1000us, 32}, {1024, 1, 1000us, 32},
                        {1024, 100, 100000us, 1},    {16, 0, 1000us, 32},         {0, 64u << 20, 1000us, 32}};
  for (const Case& c : cases) {
    CAPTURE(c.window, c.bytes, c.interval.count(), c.frames);
    auto cfg = kincir::test::node();
    cfg.max_unconfirmed = c.window;
    cfg.max_unconfirmed_bytes = c.bytes;
    cfg.read_batch_interval = c.interval;
    cfg.read_batch_frames = c.frames;
    auto conn = Connection::open(cfg);
    RabbitMQSubscriber consumer(conn);
    consumer.subscribe(hot);
    std::atomic<bool> drained{false};
    std::atomic<int> streamed{0};
    std::thread drainer([&] {
      while (!drained.load()) streamed += consumer.receive_for(50ms) ? 1 : 0;
    });
    REQUIRE(kincir::test::eventually([&] { return streamed.load() > 200; }, 10s));
    const std::string topic = kincir::test::fresh("h4-window");
    RabbitMQSubscriber sub(Connection::open(kincir::test::node()));
    sub.subscribe(topic, "g");
    RabbitMQPublisher pub(conn);
    const int sync_count = c.interval >= 100ms ? 60 : 400;
    const auto started = std::chrono::steady_clock::now();
    {
      std::vector<Message> batch;
      for (int i = 0; i < sync_count; ++i) batch.emplace_back(std::to_string(i));
      std::vector<std::error_code> outcomes;
      std::error_code ec;
      pub.publish_with_outcomes(topic, std::span<Message>(batch), outcomes, ec);
      CHECK_FALSE(ec);
      REQUIRE(outcomes.size() == static_cast<std::size_t>(sync_count));
      for (const auto& o : outcomes) CHECK_FALSE(o);
    }
    // Asynchronous, many at once, each one message: exactly one completion each.
    const int async_count = c.interval >= 100ms ? 40 : 300;
    std::mutex m;
    std::map<int, int> completions;
    std::atomic<int> failures{0};
    for (int i = 0; i < async_count; ++i) {
      pub.async_publish(topic, Message(std::to_string(sync_count + i)), [&, i](std::error_code ec) {
        if (ec) ++failures;
        const std::lock_guard lock(m);
        ++completions[i];
      });
    }
    CHECK(kincir::test::eventually(
        [&] {
          const std::lock_guard lock(m);
          return completions.size() == static_cast<std::size_t>(async_count);
        },
        60s));
    std::this_thread::sleep_for(100ms);
    {
      const std::lock_guard lock(m);
      for (const auto& [i, times] : completions) CHECK(times == 1);
    }
    CHECK(failures.load() == 0);
    CHECK(std::chrono::steady_clock::now() - started < 60s);  // liveness, not speed
    for (int i = 0; i < sync_count + async_count; ++i) {
      auto msg = sub.receive_for(10s);
      REQUIRE(msg);
      if (i < sync_count) REQUIRE(h4_text(*msg) == std::to_string(i));
    }
    drained = true;
    drainer.join();
    CHECK(conn->is_open());
  }
  stop = true;
  feeder.join();
}

TEST_CASE("hostile4: mandatory returns on a batched connection keep exactly one outcome each", "[broker][hostile4]") {
  auto cfg = kincir::test::node();
  cfg.mandatory = true;
  cfg.max_unconfirmed = 8;
  cfg.read_batch_interval = 100ms;
  cfg.read_batch_frames = 1;
  auto conn = Connection::open(cfg);
  RabbitMQPublisher pub(conn);
  const std::string routed = kincir::test::fresh("h4-routed");
  RabbitMQSubscriber sub(Connection::open(kincir::test::node()));
  sub.subscribe(routed, "g");
  const std::string nowhere = kincir::test::fresh("h4-nowhere");
  for (int round = 0; round < 5; ++round) {
    std::vector<Message> a;
    std::vector<Message> b;
    for (int i = 0; i < 20; ++i) {
      a.emplace_back(std::to_string(i));
      b.emplace_back(std::to_string(i));
    }
    std::vector<std::error_code> oa;
    std::vector<std::error_code> ob;
    std::error_code ea;
    std::error_code eb;
    std::thread other([&] { pub.publish_with_outcomes(nowhere, std::span<Message>(b), ob, eb); });
    pub.publish_with_outcomes(routed, std::span<Message>(a), oa, ea);
    other.join();
    CHECK_FALSE(ea);
    REQUIRE(ob.size() == 20);
    for (const auto& o : ob) CHECK(o == kincir::rabbitmq::errc::message_returned);
    for (int i = 0; i < 20; ++i) REQUIRE(sub.receive_for(10s));
  }
}

TEST_CASE("hostile4: large bodies across frame_max values and buffer boundaries arrive intact under batching",
          "[broker][hostile4]") {
  for (const std::uint32_t frame_max : {std::uint32_t{4096}, std::uint32_t{131072}}) {
    for (const bool slow : {false, true}) {
      CAPTURE(frame_max, slow);
      auto cfg = kincir::test::node();
      cfg.connection.frame_max = frame_max;
      if (slow) {
        cfg.read_batch_interval = 100ms;
        cfg.read_batch_frames = 1;
      }
      auto conn = Connection::open(cfg);
      const std::string topic = kincir::test::fresh("h4-large");
      RabbitMQSubscriber sub(conn);
      sub.subscribe(topic, "g");
      const std::vector<std::size_t> sizes = {0,
                                              1,
                                              frame_max - 9,
                                              frame_max - 8,
                                              frame_max - 7,
                                              65535,
                                              65536,
                                              65537,
                                              131071,
                                              131072,
                                              131073,
                                              262144 + 5,
                                              524287,
                                              524288,
                                              524289,
                                              (std::size_t{1} << 20) + 3,
                                              std::size_t{3} << 20};
      std::thread feeder([&] {
        auto pcfg = kincir::test::node();
        pcfg.connection.frame_max = frame_max;
        RabbitMQPublisher pub(Connection::open(pcfg));
        for (int round = 0; round < 3; ++round) {
          std::vector<Message> batch;
          for (std::size_t i = 0; i < sizes.size(); ++i) {
            const int n = round * 100 + static_cast<int>(i);
            batch.push_back(Message(h4_body(sizes[i], n)).with_metadata("n", std::to_string(n)));
          }
          pub.publish(topic, std::move(batch));
        }
      });
      int intact = 0;
      for (int round = 0; round < 3; ++round) {
        for (std::size_t i = 0; i < sizes.size(); ++i) {
          const int n = round * 100 + static_cast<int>(i);
          auto m = sub.receive_for(30s);
          REQUIRE(m);
          REQUIRE(m->metadata.get("n") == std::to_string(n));
          intact += h4_text(*m) == h4_body(sizes[i], n) ? 1 : 0;
        }
      }
      feeder.join();
      CHECK(intact == static_cast<int>(3 * sizes.size()));
      CHECK(conn->is_open());
    }
  }
}

TEST_CASE("hostile4: a connection whose read buffer grew recovers and streams on, nothing lost",
          "[broker][hostile4][recovery]") {
  auto cfg = kincir::test::node();
  const std::string name = kincir::test::fresh("kincir-h4-grown");
  cfg.connection.connection_name = name;
  cfg.read_batch_interval = 20ms;
  cfg.read_batch_frames = 4;
  cfg.recovery.initial_delay = 50ms;
  auto conn = Connection::open(cfg);
  const std::string topic = kincir::test::fresh("h4-grown");
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic, "g");
  constexpr int kTotal = 400;
  constexpr std::size_t kSize = std::size_t{200} * 1024;  // two reads of these fill 512 KiB
  std::atomic<bool> closed{false};
  std::thread feeder([&] {
    RabbitMQPublisher pub(Connection::open(kincir::test::node()));
    for (int n = 0; n < kTotal; n += 10) {
      std::vector<Message> batch;
      for (int i = n; i < n + 10; ++i)
        batch.push_back(Message(h4_body(kSize, i)).with_metadata("n", std::to_string(i)));
      pub.publish(topic, std::move(batch));
      std::this_thread::sleep_for(closed.load() ? 1ms : 30ms);
    }
  });
  std::thread closer([&] { closed = kincir::test::close_connections_named(name) == 1; });
  std::set<int> seen;
  int corrupt = 0;
  const auto until = std::chrono::steady_clock::now() + 90s;
  while (seen.size() < static_cast<std::size_t>(kTotal) && std::chrono::steady_clock::now() < until) {
    auto r = sub.receive_with_ack_for(1s);
    if (!r) continue;
    const int n = std::stoi(std::string(r->first.metadata.get("n").value_or("-1")));
    corrupt += h4_text(r->first) == h4_body(kSize, n) ? 0 : 1;
    seen.insert(n);
    std::error_code ec;
    sub.ack(r->second, ec);
  }
  closer.join();
  feeder.join();
  CHECK(closed.load());
  CHECK(corrupt == 0);
  CHECK(seen.size() == static_cast<std::size_t>(kTotal));
  CHECK(kincir::test::eventually([&] { return conn->recovery_stats().recovered >= 1; }, 15s));
  CHECK(conn->is_open());
}

TEST_CASE("hostile4: heartbeats of 1 s with every read held back 100 ms keep an idle and a busy connection up",
          "[broker][hostile4]") {
  auto cfg = kincir::test::node();
  cfg.connection.heartbeat = kincir::rabbitmq::amqp::HeartbeatSetting::seconds(1);
  cfg.read_batch_interval = 100ms;
  cfg.read_batch_frames = 1;
  cfg.recovery.enabled = false;
  auto conn = Connection::open(cfg);
  const std::string topic = kincir::test::fresh("h4-heartbeat");
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic, "g");
  std::this_thread::sleep_for(4s);  // idle: only heartbeats, each one holding the next read back
  CHECK(conn->is_open());
  std::atomic<bool> stop{false};
  std::thread feeder([&] {
    RabbitMQPublisher pub(Connection::open(kincir::test::node()));
    int n = 0;
    while (!stop.load()) {
      h4_publish(pub, topic, n, n + 100);
      n += 100;
      std::this_thread::sleep_for(50ms);
    }
  });
  int got = 0;
  const auto until = std::chrono::steady_clock::now() + 4s;
  while (std::chrono::steady_clock::now() < until) {
    auto m = sub.receive_for(500ms);
    if (!m) continue;
    REQUIRE(h4_text(*m) == std::to_string(got));
    ++got;
  }
  stop = true;
  feeder.join();
  CHECK(got > 100);
  CHECK(conn->is_open());
  RabbitMQPublisher pub(conn);
  pub.publish(topic, Message(std::string("last")));  // a synchronous publish on the same connection
  conn->close();
  CHECK_FALSE(conn->is_open());
}

// The `multiple` ack used to name the last entry of the acked prefix even when that delivery was
// settled already (acked alone past a gap, nacked, rejected): the broker closed the channel with
// 406 "unknown delivery tag" and redelivered what had been acked.

TEST_CASE("hostile4: out-of-order explicit acks (ack 2, then ack 1) keep the channel", "[broker][hostile4][acks]") {
  auto cfg = kincir::test::node();
  cfg.prefetch = 10;
  auto conn = Connection::open(cfg);
  const std::string topic = kincir::test::fresh("h4-out-of-order");
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic, "g");
  {
    RabbitMQPublisher pub(Connection::open(kincir::test::node()));
    h4_publish(pub, topic, 0, 3);
  }
  auto r1 = sub.receive_with_ack_for(5s);
  REQUIRE(r1);
  auto r2 = sub.receive_with_ack_for(5s);
  REQUIRE(r2);
  sub.ack(r2->second);  // past a gap: a single ack of tag 2
  std::this_thread::sleep_for(200ms);
  sub.ack(r1->second);  // closes the gap: ack(1, multiple), never ack(2, multiple)
  std::this_thread::sleep_for(500ms);
  auto r3 = sub.receive_with_ack_for(5s);
  REQUIRE(r3);
  CHECK(h4_text(r3->first) == "2");  // not a redelivery of "0"
  CHECK(sub.recoveries() == 0);
  sub.ack(r3->second);
  CHECK(h4_counts_become(topic + ".g", 0, 0, 10s));
}

TEST_CASE("hostile4: an automatic ack and a reject in one flush keep the channel", "[broker][hostile4][acks]") {
  auto cfg = kincir::test::node();
  cfg.prefetch = 10;
  auto conn = Connection::open(cfg);
  const std::string topic = kincir::test::fresh("h4-ack-reject");
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic, "g");
  {
    RabbitMQPublisher pub(Connection::open(kincir::test::node()));
    h4_publish(pub, topic, 0, 4);
  }
  REQUIRE(kincir::test::eventually([&] { return sub.buffered_bytes() == 4; }, 10s));
  auto m1 = sub.try_receive();  // its automatic ack waits (fewer than prefetch / 4)
  REQUIRE(m1);
  auto r2 = sub.receive_with_ack_for(1s);
  REQUIRE(r2);
  sub.reject(r2->second, false);  // the flush: [ack 1, reject 2]
  std::this_thread::sleep_for(500ms);
  std::error_code ec;
  auto m3 = sub.receive_for(2s, ec);
  CHECK(m3);
  CHECK_FALSE(ec);
  auto m4 = sub.receive_for(2s, ec);
  CHECK(m4);
  CHECK(sub.recoveries() == 0);
  CHECK(h4_counts_become(topic + ".g", 0, 0, 10s));
}

TEST_CASE("hostile4: automatic acks, explicit acks and rejects mixed at prefetch 4 keep the channel",
          "[broker][hostile4][acks]") {
  auto cfg = kincir::test::node();
  cfg.prefetch = 4;
  auto conn = Connection::open(cfg);
  const std::string topic = kincir::test::fresh("h4-mixed");
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic, "g");
  constexpr int kTotal = 600;
  {
    RabbitMQPublisher pub(Connection::open(kincir::test::node()));
    h4_publish(pub, topic, 0, kTotal);
  }
  int got = 0;
  bool in_order = true;
  for (int i = 0; i < kTotal; ++i) {
    std::error_code ec;
    if (i % 5 == 4) {
      auto m = sub.receive_for(5s, ec);
      REQUIRE_FALSE(ec);
      in_order = in_order && h4_text(*m) == std::to_string(i);
    } else {
      auto r = sub.receive_with_ack_for(5s, ec);
      REQUIRE_FALSE(ec);
      in_order = in_order && h4_text(r->first) == std::to_string(i);
      if (i % 5 == 2)
        sub.reject(r->second, false, ec);
      else
        sub.ack(r->second, ec);
      REQUIRE_FALSE(ec);
    }
    ++got;
  }
  CHECK(got == kTotal);
  CHECK(in_order);  // no redelivery came in between
  CHECK(sub.recoveries() == 0);
  CHECK(conn->is_open());
  CHECK(h4_counts_become(topic + ".g", 0, 0, 10s));
}
