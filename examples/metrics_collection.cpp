// The performance guide's "Monitoring Performance" example: time every publish and receive,
// record them in a MetricsCollector, print the summary. Then what kincir adds: recording from
// several threads, a named counter, a decorator that does the timing, a broker-statistics hook,
// and the Prometheus text.
//
// The in-memory broker is replaced here by a small queue (`LocalQueue`) so the example only
// needs the metrics header; the calls are the same as with InMemoryPublisher/Subscriber.
#include <kincir/metrics.hpp>

#include <chrono>        // timing
#include <cstdint>       // std::uint64_t
#include <cstdlib>       // std::atoi
#include <deque>         // LocalQueue storage
#include <mutex>         // LocalQueue lock
#include <string>        // payloads
#include <system_error>  // std::error_code
#include <thread>        // recording from several threads
#include <vector>        // batches, threads

#include <fmt/format.h>  // fmt::print

namespace {

/// A thread-safe FIFO with the `Publisher` members, standing in for a broker.
class LocalQueue {
 public:
  void publish(std::string_view, std::vector<kincir::Message>&& batch, std::error_code& ec) {
    ec.clear();
    const std::lock_guard lock(mutex_);
    for (auto& m : batch) queue_.push_back(std::move(m));
    published_ += batch.size();
  }
  void publish(std::string_view topic, std::vector<kincir::Message>&& batch) {
    std::error_code ec;
    publish(topic, std::move(batch), ec);
    kincir::throw_if(ec, "LocalQueue::publish");
  }
  void publish(std::string_view topic, kincir::Message&& m, std::error_code& ec) {
    std::vector<kincir::Message> batch;
    batch.push_back(std::move(m));
    publish(topic, std::move(batch), ec);
  }
  void publish(std::string_view topic, kincir::Message&& m) {
    std::error_code ec;
    publish(topic, std::move(m), ec);
    kincir::throw_if(ec, "LocalQueue::publish");
  }

  kincir::Message receive(std::error_code& ec) {
    ec.clear();
    const std::lock_guard lock(mutex_);
    if (queue_.empty()) {
      ec = kincir::errc::timeout;
      return {};
    }
    kincir::Message m = std::move(queue_.front());
    queue_.pop_front();
    ++delivered_;
    return m;
  }

  /// What a broker's `stats()` reports.
  kincir::BrokerStatsSample stats() const {
    const std::lock_guard lock(mutex_);
    return {published_, delivered_, 0, 0, queue_.size()};
  }

 private:
  mutable std::mutex mutex_;
  std::deque<kincir::Message> queue_;
  std::uint64_t published_ = 0;
  std::uint64_t delivered_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 1000;
  kincir::MetricsCollector metrics;
  LocalQueue queue;

  // The guide's loop: time each call, record success or error.
  for (int i = 0; i < count; ++i) {
    const auto start = std::chrono::steady_clock::now();
    std::error_code ec;
    queue.publish("perf-test", kincir::Message(fmt::format("Message {}", i)), ec);
    if (ec) {
      metrics.record_error();
    } else {
      metrics.record_publish(std::chrono::steady_clock::now() - start);
    }
  }
  for (int i = 0; i < count; ++i) {
    const auto start = std::chrono::steady_clock::now();
    std::error_code ec;
    const kincir::Message m = queue.receive(ec);
    if (ec) {
      metrics.record_error();
    } else {
      metrics.record_receive(std::chrono::steady_clock::now() - start);
    }
  }
  metrics.print_summary();

  // Beyond the guide. Any thread may record: each writes its own shard, no lock is taken.
  kincir::MetricsCollector live;
  const auto bytes = live.counter("payload_bytes", "Payload bytes published.");
  auto publisher = kincir::instrumented(queue, live);  // times every call, records errors
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < count / 4; ++i) {
        kincir::Message m(fmt::format("thread {} message {}", t, i));
        bytes.add(m.payload.size());
        publisher.publish("perf-test", std::move(m));
      }
    });
  }
  for (auto& th : threads) th.join();

  // The queue's own statistics, polled on every snapshot.
  live.observe("local", [&queue] { return queue.stats(); });

  const kincir::PerformanceMetrics snapshot = live.snapshot();
  fmt::print("\n{}", snapshot);
  fmt::print("\n{}", kincir::to_prometheus(snapshot, "example"));
}
