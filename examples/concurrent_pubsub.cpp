// The performance guide's "Concurrent Publishers and Subscribers": 10 publishers publish 10 000
// messages each, one at a time; 5 subscribers each receive all 100 000.
//
//   concurrent_pubsub [publishers] [messages_per_publisher] [subscribers]
//
// Differences from the guide's Rust: threads instead of tokio tasks, and subscribers stop when
// they have received everything instead of after a fixed 10 s, so the run reports the real time.
#include <kincir/kincir.hpp>

#include <chrono>   // timing
#include <cstdio>   // std::printf
#include <cstdlib>  // std::strtoul
#include <memory>   // std::make_shared
#include <string>   // payloads
#include <thread>   // publishers and subscribers
#include <vector>   // threads

int main(int argc, char** argv) {
  const int num_publishers = argc > 1 ? static_cast<int>(std::strtoul(argv[1], nullptr, 10)) : 10;
  const int messages_per_publisher = argc > 2 ? static_cast<int>(std::strtoul(argv[2], nullptr, 10)) : 10'000;
  const int num_subscribers = argc > 3 ? static_cast<int>(std::strtoul(argv[3], nullptr, 10)) : 5;
  const int total = num_publishers * messages_per_publisher;

  auto broker = std::make_shared<kincir::memory::InMemoryBroker>(kincir::memory::InMemoryBroker::with_default_config());

  // Subscribe before publishing starts: a subscriber sees what is published after it subscribed.
  std::vector<kincir::memory::InMemorySubscriber> subscribers;
  for (int s = 0; s < num_subscribers; ++s) {
    subscribers.emplace_back(broker);
    subscribers.back().subscribe("high-throughput");
  }

  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  std::vector<std::thread> tasks;
  std::vector<int> received(static_cast<std::size_t>(num_subscribers), 0);
  for (int s = 0; s < num_subscribers; ++s) {
    tasks.emplace_back([&, s] {
      auto& subscriber = subscribers[static_cast<std::size_t>(s)];
      const auto begin = clock::now();
      int count = 0;
      while (count < total) {
        std::error_code ec;
        (void)subscriber.receive(ec);
        if (ec) {
          std::fprintf(stderr, "Subscriber %d error: %s\n", s, ec.message().c_str());
          break;
        }
        ++count;
      }
      const std::chrono::duration<double> took = clock::now() - begin;
      received[static_cast<std::size_t>(s)] = count;
      std::printf("Subscriber %d processed %d messages (%.2f msg/s)\n", s, count, count / took.count());
    });
  }
  for (int p = 0; p < num_publishers; ++p) {
    tasks.emplace_back([&, p] {
      kincir::memory::InMemoryPublisher publisher(broker);
      const auto begin = clock::now();
      for (int i = 0; i < messages_per_publisher; ++i)
        publisher.publish("high-throughput",
                          kincir::Message("Publisher " + std::to_string(p) + " - Message " + std::to_string(i)));
      const std::chrono::duration<double, std::milli> took = clock::now() - begin;
      std::printf("Publisher %d completed in %.3f ms\n", p, took.count());
    });
  }
  for (auto& t : tasks) t.join();
  const std::chrono::duration<double, std::milli> wall = clock::now() - start;

  bool all = true;
  for (int n : received) all = all && n == total;
  std::printf("%d publishers x %d messages, %d subscribers: %s in %.3f ms\n", num_publishers, messages_per_publisher,
              num_subscribers, all ? "every subscriber received every message" : "MESSAGES MISSING", wall.count());
  return all ? 0 : 1;
}
