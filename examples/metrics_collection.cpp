// The performance guide's "Performance Metrics Collection": publish 1 000 messages to the
// in-memory broker and receive them, timing every call into a MetricsCollector, then print the
// summary. Then what kincir adds: recording from several threads, a named counter, a decorator
// that does the timing, the broker's own statistics through `kincir::metrics_observe`, and the
// Prometheus text.
//
//   metrics_collection [count]
//
// Differences from the guide's Rust: the collector needs no lock (per-thread shards) and is
// passed by reference instead of Arc; errors come back through std::error_code instead of Result.
// The summary is printed after the program has checked that the numbers add up (it exits 1
// otherwise), so its "Messages Published" line means the run was right.
#include <kincir/kincir.hpp>
#include <kincir/metrics.hpp>
#include <kincir/metrics/memory.hpp>

#include <chrono>        // timing
#include <cstdint>       // std::uint64_t
#include <cstdio>        // stderr
#include <cstdlib>       // std::atoi
#include <string>        // payloads
#include <system_error>  // std::error_code
#include <thread>        // recording from several threads
#include <vector>        // threads

#include <fmt/format.h>  // fmt::print

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 1000;
  kincir::MetricsCollector metrics;
  kincir::memory::InMemoryBroker broker = kincir::memory::InMemoryBroker::with_default_config();
  kincir::memory::InMemoryPublisher publisher(broker);
  kincir::memory::InMemorySubscriber subscriber(broker);
  subscriber.subscribe("perf-test");

  // The broker's own counters, polled on every snapshot. The broker outlives the collector's use
  // of it here; otherwise call metrics.unobserve(id) first (or pass a std::shared_ptr).
  const auto id = kincir::metrics_observe(metrics, broker, "memory");

  // The guide's loops: time each call, record success or error.
  for (int i = 0; i < count; ++i) {
    const auto start = std::chrono::steady_clock::now();
    std::error_code ec;
    publisher.publish("perf-test", kincir::Message(fmt::format("Message {}", i)), ec);
    if (ec) {
      metrics.record_error();
    } else {
      metrics.record_publish(std::chrono::steady_clock::now() - start);
    }
  }
  for (int i = 0; i < count; ++i) {
    const auto start = std::chrono::steady_clock::now();
    std::error_code ec;
    const kincir::Message m = subscriber.receive(ec);
    if (ec) {
      metrics.record_error();
    } else {
      metrics.record_receive(std::chrono::steady_clock::now() - start);
    }
  }

  const kincir::PerformanceMetrics summary = metrics.snapshot();
  const auto expected = static_cast<std::uint64_t>(count);
  const bool counted = summary.messages_published == expected && summary.messages_received == expected &&
                       summary.error_count == 0 && summary.sources.size() == 1 &&
                       summary.sources[0].stats.published == expected &&
                       summary.sources[0].stats.delivered == expected && summary.sources[0].stats.queue_depth == 0;
  if (!counted) {
    fmt::print(stderr, "the collector and the broker disagree:\n{}", summary);
    return 1;
  }
  summary.print_summary();  // the guide's lines, percentiles, and "Source memory: ..."
  metrics.unobserve(id);

  // Beyond the guide. Any thread may record: each writes its own shard, no lock is taken.
  kincir::MetricsCollector live;
  const auto bytes = live.counter("payload_bytes", "Payload bytes published.");
  auto timed = kincir::instrumented(publisher, live);  // times every call, records errors
  constexpr int kThreads = 4;
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < count / kThreads; ++i) {
        kincir::Message m(fmt::format("thread {} message {}", t, i));
        bytes.add(m.payload.size());
        timed.publish("perf-test", std::move(m));
      }
    });
  }
  for (auto& th : threads) th.join();
  kincir::metrics_observe(live, broker, "memory");  // the subscriber has not received these yet

  const kincir::PerformanceMetrics snapshot = live.snapshot();
  fmt::print("\n{}", snapshot);
  fmt::print("\n{}", kincir::to_prometheus(snapshot, "example"));
  return snapshot.messages_published == expected / kThreads * kThreads ? 0 : 1;
}
