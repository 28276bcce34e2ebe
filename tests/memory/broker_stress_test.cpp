#include <kincir/memory/broker.hpp>
#include <kincir/memory/publisher.hpp>
#include <kincir/memory/subscriber.hpp>

#include <atomic>  // counters across threads
#include <chrono>  // timeouts
#include <mutex>   // collecting results
#include <string>  // payloads
#include <thread>  // publishers and subscribers
#include <vector>  // per-thread results

#include "support/catch.hpp"

using namespace std::chrono_literals;
using kincir::errc;
using kincir::Message;
using namespace kincir::memory;

namespace {

#if defined(__SANITIZE_THREAD__)
constexpr int kScale = 4;  // ThreadSanitizer runs everything ~10x slower
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr int kScale = 4;
#else
constexpr int kScale = 1;
#endif
#else
constexpr int kScale = 1;
#endif

/// Payload "publisher:sequence".
Message tagged(int publisher, int sequence) {
  return Message(std::to_string(publisher) + ":" + std::to_string(sequence));
}

std::pair<int, int> parse(const Message& m) {
  const auto text = m.payload.view();
  const auto colon = text.find(':');
  return {std::stoi(std::string(text.substr(0, colon))), std::stoi(std::string(text.substr(colon + 1)))};
}

BrokerConfig stress_config() {
  BrokerConfig c;
  c.cleanup_interval = 0ms;
  c.max_queue_size = 4096;  // small enough that publishers really wait for subscribers
  return c;
}

}  // namespace

TEST_CASE("the guide's concurrent workload: 10 publishers x 10 000, 5 subscribers get all", "[stress]") {
  constexpr int kPublishers = 10;
  const int per_publisher = 10'000 / kScale;
  constexpr int kSubscribers = 5;
  InMemoryBroker broker(stress_config());

  std::vector<InMemorySubscriber> subscribers;
  for (int s = 0; s < kSubscribers; ++s) {
    subscribers.emplace_back(broker);
    subscribers.back().subscribe("high-throughput");
  }
  std::vector<int> ok(kSubscribers, 0);
  std::vector<std::thread> threads;
  for (int s = 0; s < kSubscribers; ++s) {
    threads.emplace_back([&, s] {
      std::vector<int> next(kPublishers, 0);
      bool in_order = true;
      for (int i = 0; i < kPublishers * per_publisher; ++i) {
        const auto [p, seq] = parse(subscribers[static_cast<std::size_t>(s)].receive());
        in_order = in_order && seq == next[static_cast<std::size_t>(p)]++;
      }
      bool all = in_order;
      for (int n : next) all = all && n == per_publisher;
      ok[static_cast<std::size_t>(s)] = all ? 1 : 0;
    });
  }
  for (int p = 0; p < kPublishers; ++p) {
    threads.emplace_back([&, p] {
      InMemoryPublisher publisher(broker);
      for (int i = 0; i < per_publisher; ++i) publisher.publish("high-throughput", tagged(p, i));
    });
  }
  for (auto& t : threads) t.join();
  for (int s = 0; s < kSubscribers; ++s) CHECK(ok[static_cast<std::size_t>(s)] == 1);
  for (auto& s : subscribers) CHECK_FALSE(s.try_receive().has_value());
}

TEST_CASE("a group under load receives each message exactly once", "[stress][group]") {
  for (const bool ordered : {true, false}) {
    BrokerConfig c = stress_config();
    c.enable_message_ordering = ordered;
    InMemoryBroker broker(c);
    constexpr int kPublishers = 3;
    const int per_publisher = 20'000 / kScale;
    constexpr int kMembers = 3;
    const int total = kPublishers * per_publisher;

    std::vector<InMemorySubscriber> members;
    for (int m = 0; m < kMembers; ++m) {
      members.emplace_back(broker);
      members.back().subscribe("jobs", "workers");
    }
    std::vector<std::atomic<int>> seen(static_cast<std::size_t>(total));
    std::atomic<int> received{0};
    std::vector<std::thread> threads;
    for (int m = 0; m < kMembers; ++m) {
      threads.emplace_back([&, m] {
        while (received.load() < total) {
          auto msg = members[static_cast<std::size_t>(m)].receive_for(5ms);
          if (!msg) continue;
          const auto [p, seq] = parse(*msg);
          seen[static_cast<std::size_t>(p) * static_cast<std::size_t>(per_publisher) + static_cast<std::size_t>(seq)]
              .fetch_add(1);
          received.fetch_add(1);
        }
      });
    }
    for (int p = 0; p < kPublishers; ++p) {
      threads.emplace_back([&, p] {
        InMemoryPublisher publisher(broker);
        std::vector<Message> batch;
        for (int i = 0; i < per_publisher; ++i) {
          batch.push_back(tagged(p, i));
          // Batches of 1 to 50 messages, mixed.
          if (batch.size() >= static_cast<std::size_t>(1 + (i * 7) % 50))
            publisher.publish("jobs", std::exchange(batch, {}));
        }
        publisher.publish("jobs", std::exchange(batch, {}));
      });
    }
    for (auto& t : threads) t.join();
    int exactly_once = 0;
    for (auto& s : seen) exactly_once += s.load() == 1 ? 1 : 0;
    CHECK(exactly_once == total);
  }
}

TEST_CASE("shutdown racing publishers and receivers loses nothing that was accepted", "[stress][shutdown]") {
  InMemoryBroker broker(stress_config());
  constexpr int kPublishers = 3;
  std::vector<InMemorySubscriber> subscribers;
  for (int s = 0; s < 2; ++s) {
    subscribers.emplace_back(broker);
    subscribers.back().subscribe("t");
  }
  std::atomic<int> accepted{0};
  std::vector<int> received(2, 0);
  // Catch's assertions are not thread-safe: threads record their final error, checked after join.
  std::vector<std::error_code> subscriber_end(2);
  std::vector<std::error_code> publisher_end(kPublishers);
  std::vector<std::thread> threads;
  for (int s = 0; s < 2; ++s) {
    threads.emplace_back([&, s] {
      std::error_code ec;
      for (;;) {
        (void)subscribers[static_cast<std::size_t>(s)].receive(ec);
        if (ec) break;
        ++received[static_cast<std::size_t>(s)];
      }
      subscriber_end[static_cast<std::size_t>(s)] = ec;
    });
  }
  for (int p = 0; p < kPublishers; ++p) {
    threads.emplace_back([&, p] {
      InMemoryPublisher publisher(broker);
      std::error_code ec;
      for (int i = 0;; ++i) {
        publisher.publish("t", tagged(p, i), ec);
        if (ec) {
          publisher_end[static_cast<std::size_t>(p)] = ec;
          break;
        }
        accepted.fetch_add(1);
      }
    });
  }
  std::this_thread::sleep_for(50ms);
  broker.shutdown();
  for (auto& t : threads) t.join();
  for (const auto& ec : subscriber_end) CHECK(ec == errc::broker_shutdown);
  for (const auto& ec : publisher_end) CHECK(ec == errc::broker_shutdown);
  CHECK(accepted.load() > 0);
  CHECK(received[0] == accepted.load());
  CHECK(received[1] == accepted.load());
}

TEST_CASE("nack and redelivery under load lose nothing", "[stress][ack]") {
  BrokerConfig c = stress_config();
  c.max_deliveries = 1000;  // never dead-letter here
  c.max_unacked = 64;
  InMemoryBroker broker(c);
  const int total = 20'000 / kScale;
  constexpr int kMembers = 2;
  std::vector<InMemoryAckSubscriber> members;
  for (int m = 0; m < kMembers; ++m) {
    members.emplace_back(broker);
    members.back().subscribe("t", "g");
  }
  std::vector<std::atomic<int>> acked(static_cast<std::size_t>(total));
  std::atomic<int> done{0};
  std::atomic<int> nacks{0};
  std::vector<std::thread> threads;
  for (int m = 0; m < kMembers; ++m) {
    threads.emplace_back([&, m] {
      auto& sub = members[static_cast<std::size_t>(m)];
      std::error_code ec;
      while (done.load() < total) {
        auto d = sub.receive_with_ack_for(5ms, ec);
        if (!d) continue;
        const auto [p, seq] = parse(d->first);
        // Every third first delivery is nacked and must come back.
        if (d->second.delivery_count() == 1 && seq % 3 == 0) {
          sub.nack(d->second, true);
          nacks.fetch_add(1);
        } else {
          sub.ack(d->second);
          acked[static_cast<std::size_t>(seq)].fetch_add(1);
          done.fetch_add(1);
        }
      }
    });
  }
  threads.emplace_back([&] {
    InMemoryPublisher publisher(broker);
    for (int i = 0; i < total; ++i) publisher.publish("t", tagged(0, i));
  });
  for (auto& t : threads) t.join();
  int exactly_once = 0;
  for (auto& a : acked) exactly_once += a.load() == 1 ? 1 : 0;
  CHECK(exactly_once == total);
  CHECK(nacks.load() == (total + 2) / 3);
  CHECK(broker.topic_info("t")->redelivered == static_cast<std::uint64_t>(nacks.load()));
}

TEST_CASE("a publisher shared by threads keeps its topics alive while topics are deleted and switched",
          "[stress][publisher]") {
  InMemoryBroker broker(stress_config());
  InMemoryPublisher publisher(broker);  // one cache for every thread
  InMemorySubscriber subscriber(broker);
  subscriber.subscribe("a");
  std::atomic<bool> stop{false};
  std::atomic<int> published{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 3000 / kScale; ++i) {
        std::error_code ec;
        // Alternating topics replace the cache entry while the other threads publish through it.
        publisher.publish((i + t) % 2 == 0 ? "a" : "b", tagged(t, i), ec);
        if (!ec) published.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  threads.emplace_back([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      broker.delete_topic("b");  // a deleted topic is looked up again by the next publish
      std::this_thread::yield();
    }
  });
  threads.emplace_back([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      while (subscriber.try_receive()) {
      }
      std::this_thread::yield();
    }
  });
  for (int t = 0; t < 3; ++t) threads[static_cast<std::size_t>(t)].join();
  stop.store(true, std::memory_order_relaxed);
  threads[3].join();
  threads[4].join();
  CHECK(published.load() == 3 * (3000 / kScale));
}
