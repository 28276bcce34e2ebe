// The performance guide's "Running Performance Tests" (`cargo run --release --example
// performance-benchmark`): the guide's throughput tests one after another, each checked (every
// message arrives intact), then a summary.
//
//   performance_benchmark [messages] [message_size]
//
// messages (default 100 000) sizes every test: the simple test publishes that many, the
// concurrent test spreads them over 10 publishers with 5 subscribers, the batch test publishes
// half as many in batches of 1 000 (the guide's 50 000), the latency test sends 1 000.
//
// Differences from the guide's Rust: plain threads instead of tokio tasks, the broker shared by
// reference (it outlives every publisher and subscriber here) instead of Arc, and one program
// instead of several. For the full measurement (repetitions, medians, more workloads, JSON and
// charts) run `scripts/dev bench`; for profiling this program see docs/profiling.md.
#include <kincir/batch.hpp>
#include <kincir/kincir.hpp>

#include <algorithm>  // std::sort
#include <atomic>     // one message in flight (latency test)
#include <chrono>     // timing
#include <cstddef>    // std::size_t
#include <cstdlib>    // std::strtoul
#include <cstring>    // std::memcpy
#include <string>     // payloads
#include <thread>     // publishers and subscribers
#include <utility>    // std::move
#include <vector>     // batches, results

#include <fmt/format.h>  // fmt::print

namespace {

using clock_type = std::chrono::steady_clock;
using kincir::memory::InMemoryBroker;
using kincir::memory::InMemoryPublisher;
using kincir::memory::InMemorySubscriber;

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

struct Line {
  std::string test;
  std::string result;
  bool ok = false;
};

/// The guide's "Simple Throughput Test".
void simple_throughput(std::size_t count, std::size_t size, std::vector<Line>& summary) {
  InMemoryBroker broker = InMemoryBroker::with_default_config();
  InMemoryPublisher publisher(broker);
  InMemorySubscriber subscriber(broker);
  subscriber.subscribe("benchmark");
  std::vector<kincir::Message> messages;
  messages.reserve(count);
  for (std::size_t i = 0; i < count; ++i)
    messages.push_back(kincir::Message(std::string(size, '\0')).with_metadata("id", std::to_string(i)));

  auto start = clock_type::now();
  publisher.publish("benchmark", std::move(messages));
  const double publish_s = seconds_since(start);
  start = clock_type::now();
  std::size_t intact = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const kincir::Message m = subscriber.receive();
    intact += m.payload.size() == size && m.metadata.get("id") == std::to_string(i) ? 1 : 0;
  }
  const double receive_s = seconds_since(start);
  fmt::print("simple throughput: {} x {} B: publish {:.2f} msg/s, receive {:.2f} msg/s\n", count, size,
             static_cast<double>(count) / publish_s, static_cast<double>(count) / receive_s);
  summary.push_back(
      {"simple publish", fmt::format("{:.2f} M msg/s", static_cast<double>(count) / publish_s / 1e6), intact == count});
  summary.push_back(
      {"simple receive", fmt::format("{:.2f} M msg/s", static_cast<double>(count) / receive_s / 1e6), intact == count});
}

/// The guide's "Concurrent Publishers and Subscribers" (subscribers stop when they have
/// everything rather than after 10 s, so the time is the real one).
void concurrent(int publishers, int per_publisher, int subscribers, std::vector<Line>& summary) {
  InMemoryBroker broker;
  std::vector<InMemorySubscriber> subs;
  subs.reserve(static_cast<std::size_t>(subscribers));
  for (int s = 0; s < subscribers; ++s) {
    subs.emplace_back(broker);
    subs.back().subscribe("high-throughput");
  }
  const int total = publishers * per_publisher;
  std::vector<int> received(static_cast<std::size_t>(subscribers), 0);
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(subscribers) + static_cast<std::size_t>(publishers));
  const auto start = clock_type::now();
  for (int s = 0; s < subscribers; ++s) {
    threads.emplace_back([&, s] {
      for (int i = 0; i < total; ++i) {
        if (!subs[static_cast<std::size_t>(s)].receive().payload.empty()) ++received[static_cast<std::size_t>(s)];
      }
    });
  }
  for (int p = 0; p < publishers; ++p) {
    threads.emplace_back([&, p] {
      InMemoryPublisher publisher(broker);
      for (int i = 0; i < per_publisher; ++i)
        publisher.publish("high-throughput", kincir::Message(fmt::format("Publisher {} - Message {}", p, i)));
    });
  }
  for (auto& t : threads) t.join();
  const double seconds = seconds_since(start);
  bool all = true;
  for (const int r : received) all = all && r == total;
  const double deliveries = static_cast<double>(total) * subscribers;
  fmt::print("concurrent: {} publishers x {}, {} subscribers: {:.2f} ms, {:.2f} deliveries/s\n", publishers,
             per_publisher, subscribers, seconds * 1e3, deliveries / seconds);
  summary.push_back(
      {"concurrent", fmt::format("{:.2f} ms ({:.2f} M deliveries/s)", seconds * 1e3, deliveries / seconds / 1e6), all});
}

/// The guide's "Efficient Batch Publishing": batches of 1 000 through a BatchPublisher.
void batch_publishing(std::size_t count, std::vector<Line>& summary) {
  InMemoryBroker broker;
  InMemorySubscriber subscriber(broker);
  subscriber.subscribe("batch-topic");
  kincir::BatchPublisher<InMemoryPublisher> batcher(std::in_place, {.batch_size = 1000}, broker);
  std::vector<kincir::Message> messages;
  messages.reserve(count);
  for (std::size_t i = 0; i < count; ++i) messages.emplace_back(fmt::format("Batch message {}", i));

  std::size_t received = 0;
  std::thread reader([&] {
    for (std::size_t i = 0; i < count; ++i) received += subscriber.receive().payload.empty() ? 0 : 1;
  });
  const auto start = clock_type::now();
  const std::size_t published = batcher.publish_batch("batch-topic", std::move(messages));
  reader.join();
  const double seconds = seconds_since(start);
  fmt::print("batch publishing: {} messages in {} batches, delivered in {:.2f} ms ({:.2f} msg/s)\n", published,
             (published + 999) / 1000, seconds * 1e3, static_cast<double>(count) / seconds);
  summary.push_back({"batch publish (1 000)", fmt::format("{:.2f} M msg/s", static_cast<double>(count) / seconds / 1e6),
                     published == count && received == count});
}

/// Publish -> receive latency, one message in flight, the subscriber blocked in receive().
void latency(std::size_t count, std::vector<Line>& summary) {
  InMemoryBroker broker;
  InMemoryPublisher publisher(broker);
  InMemorySubscriber subscriber(broker);
  subscriber.subscribe("latency");
  std::vector<clock_type::time_point> sent(count);
  std::vector<double> micros(count);
  std::atomic<std::size_t> done{0};
  std::thread reader([&] {
    for (std::size_t n = 0; n < count; ++n) {
      const kincir::Message m = subscriber.receive();
      const auto now = clock_type::now();
      std::size_t i = 0;
      std::memcpy(&i, m.payload.data(), sizeof i);
      micros[i] = std::chrono::duration<double, std::micro>(now - sent[i]).count();
      done.store(n + 1, std::memory_order_release);  // the next message goes out after this
    }
  });
  for (std::size_t i = 0; i < count; ++i) {
    while (done.load(std::memory_order_acquire) < i) std::this_thread::yield();
    std::string index(sizeof i, '\0');
    std::memcpy(index.data(), &i, sizeof i);
    kincir::Message m(std::move(index));
    sent[i] = clock_type::now();
    publisher.publish("latency", std::move(m));
  }
  reader.join();
  std::sort(micros.begin(), micros.end());
  const double p50 = micros[count / 2];
  const double p99 = micros[count * 99 / 100];
  fmt::print("latency: {} messages, p50 {:.2f} us, p99 {:.2f} us\n", count, p50, p99);
  summary.push_back({"latency p50 / p99", fmt::format("{:.2f} us / {:.2f} us", p50, p99), p50 > 0});
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t messages = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 100'000;
  const std::size_t size = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 1024;
  if (messages < 10) {
    fmt::print(stderr, "usage: performance_benchmark [messages >= 10] [message_size]\n");
    return 2;
  }
  std::vector<Line> summary;
  simple_throughput(messages, size, summary);
  concurrent(10, static_cast<int>(messages / 10), 5, summary);
  batch_publishing(messages / 2, summary);
  latency(1000, summary);

  fmt::print("\n=== Performance Summary ===\n");
  std::size_t passed = 0;
  for (const auto& line : summary) {
    fmt::print("{:<22} {:<32} {}\n", line.test, line.result, line.ok ? "ok" : "LOST MESSAGES");
    passed += line.ok ? 1 : 0;
  }
  if (passed != summary.size()) return 1;
  fmt::print("All {} throughput tests passed\n", summary.size());
  return 0;
}
