#include <kincir/metrics/collector.hpp>

#include <atomic>   // stop flag for the concurrent reader
#include <chrono>   // durations
#include <cstdint>  // std::uint64_t
#include <cstdio>   // std::tmpfile
#include <string>   // summary text
#include <thread>   // recording threads
#include <vector>   // threads

#include "support/alloc_counter.hpp"
#include "support/catch.hpp"

using kincir::MetricsCollector;
using kincir::PerformanceMetrics;
using std::chrono::nanoseconds;

TEST_CASE("a fresh collector reports zeros and the guide's zero cases", "[metrics]") {
  const MetricsCollector collector;
  const PerformanceMetrics m = collector.snapshot();
  CHECK(m.messages_published == 0);
  CHECK(m.messages_received == 0);
  CHECK(m.error_count == 0);
  CHECK(m.total_publish_time == nanoseconds::zero());
  CHECK(m.total_receive_time == nanoseconds::zero());
  CHECK(m.publish_throughput() == 0.0);
  CHECK(m.receive_throughput() == 0.0);
  CHECK(m.overall_throughput() == 0.0);
  CHECK(m.error_rate() == 0.0);
  CHECK(m.publish_latency.count == 0);
  CHECK(m.start_time == collector.start_time());
  CHECK(m.snapshot_time >= m.start_time);
}

TEST_CASE("records from one thread add up exactly", "[metrics]") {
  MetricsCollector collector;
  for (int i = 1; i <= 1000; ++i) collector.record_publish(nanoseconds(i));
  collector.record_publish(nanoseconds(500), 10);  // a batch of 10 in one call
  for (int i = 1; i <= 500; ++i) collector.record_receive(std::chrono::microseconds(i));
  collector.record_error();
  collector.record_error(2);
  collector.record_ack(4);
  collector.record_nack();

  const PerformanceMetrics m = collector.get_metrics();
  CHECK(m.messages_published == 1010);
  CHECK(m.publish_calls == 1001);
  CHECK(m.messages_received == 500);
  CHECK(m.receive_calls == 500);
  CHECK(m.error_count == 3);
  CHECK(m.messages_acked == 4);
  CHECK(m.messages_nacked == 1);
  CHECK(m.total_publish_time == nanoseconds(500'500 + 500));
  CHECK(m.total_receive_time == std::chrono::microseconds(125'250));
  CHECK(m.publish_latency.count == 1001);
  CHECK(m.publish_latency.max == nanoseconds(1000));
  CHECK(static_cast<double>(m.receive_latency.p50.count()) ==
        Approx(250'000.0).epsilon(kincir::LatencyHistogram::kMaxRelativeError));
  CHECK(m.error_rate() == Approx(3.0 / 1510.0));
  CHECK(m.publish_throughput() == Approx(1010.0 / 501'000e-9));
}

TEST_CASE("untimed calls are counted and the total time extrapolated", "[metrics]") {
  MetricsCollector collector;
  collector.record_publish(nanoseconds(100));
  collector.count_publish();
  collector.count_publish();
  collector.count_publish(5);
  collector.count_receive();
  const PerformanceMetrics m = collector.snapshot();
  CHECK(m.messages_published == 8);
  CHECK(m.publish_calls == 4);
  CHECK(m.publish_latency.count == 1);
  CHECK(m.total_publish_time == nanoseconds(400));
  CHECK(m.messages_received == 1);
  CHECK(m.total_receive_time == nanoseconds::zero());  // nothing timed: nothing to extrapolate from
}

TEST_CASE("PerformanceMetrics computes the guide's formulas", "[metrics]") {
  PerformanceMetrics m;
  m.messages_published = 300;
  m.messages_received = 200;
  m.total_publish_time = std::chrono::seconds(2);
  m.total_receive_time = std::chrono::milliseconds(500);
  m.error_count = 25;
  m.snapshot_time = m.start_time + std::chrono::seconds(10);
  CHECK(m.publish_throughput() == Approx(150.0));
  CHECK(m.receive_throughput() == Approx(400.0));
  CHECK(m.overall_throughput() == Approx(50.0));
  CHECK(m.error_rate() == Approx(0.05));
  CHECK(m.elapsed() == std::chrono::seconds(10));

  SECTION("no time measured gives zero throughput") {
    m.total_publish_time = {};
    m.total_receive_time = {};
    m.snapshot_time = m.start_time;
    CHECK(m.publish_throughput() == 0.0);
    CHECK(m.receive_throughput() == 0.0);
    CHECK(m.overall_throughput() == 0.0);
  }
  SECTION("errors without operations give a zero rate") {
    m.messages_published = 0;
    m.messages_received = 0;
    CHECK(m.error_rate() == 0.0);
  }
}

TEST_CASE("the summary has the guide's lines and the percentiles", "[metrics]") {
  PerformanceMetrics m;
  m.messages_published = 1000;
  m.messages_received = 1000;
  m.total_publish_time = std::chrono::milliseconds(10);
  m.total_receive_time = std::chrono::milliseconds(20);
  m.error_count = 1;
  m.snapshot_time = m.start_time + std::chrono::seconds(2);
  m.publish_latency.count = 1000;
  m.publish_latency.p50 = nanoseconds(850);
  m.publish_latency.p99 = std::chrono::microseconds(12);
  m.publish_latency.max = std::chrono::milliseconds(3);

  const std::string text = fmt::format("{}", m);
  CHECK(text.find("=== Performance Summary ===\n") == 0);
  CHECK(text.find("Messages Published: 1000\n") != std::string::npos);
  CHECK(text.find("Messages Received: 1000\n") != std::string::npos);
  CHECK(text.find("Publish Throughput: 100000.00 msg/s\n") != std::string::npos);
  CHECK(text.find("Receive Throughput: 50000.00 msg/s\n") != std::string::npos);
  CHECK(text.find("Overall Throughput: 1000.00 msg/s\n") != std::string::npos);
  CHECK(text.find("Error Rate: 0.0500%\n") != std::string::npos);
  CHECK(text.find("Total Runtime: 2.000s\n") != std::string::npos);
  CHECK(text.find("Publish Latency: p50 850ns, p90 0ns, p99 12.00µs, p99.9 0ns, max 3.00ms") != std::string::npos);
  CHECK(text.find("Receive Latency: no samples\n") != std::string::npos);

  // print_summary writes the same text.
  std::FILE* file = std::tmpfile();
  REQUIRE(file != nullptr);
  m.print_summary(file);
  std::rewind(file);
  std::string printed(text.size() + 16, '\0');
  printed.resize(std::fread(printed.data(), 1, printed.size(), file));
  std::fclose(file);
  CHECK(printed == text);
}

TEST_CASE("named counters and histograms", "[metrics]") {
  MetricsCollector collector;
  auto retries = collector.counter("retries", "Publish retries.");
  auto same = collector.counter("retries", "ignored");
  auto db = collector.histogram("db_query", "Database query latency.");
  retries.add();
  same.add(4);
  db.record(std::chrono::microseconds(3));
  db.record(std::chrono::microseconds(5));
  CHECK(retries.value() == 5);
  CHECK(db.snapshot().count() == 2);

  const PerformanceMetrics m = collector.snapshot();
  REQUIRE(m.counters.size() == 1);
  CHECK(m.counters[0].name == "retries");
  CHECK(m.counters[0].help == "Publish retries.");
  CHECK(m.counters[0].value == 5);
  REQUIRE(m.histograms.size() == 1);
  CHECK(m.histograms[0].name == "db_query");
  CHECK(m.histograms[0].latency.count == 2);
  CHECK(m.histograms[0].latency.sum == std::chrono::microseconds(8));
  CHECK(m.histograms[0].latency.max == std::chrono::microseconds(5));

  SECTION("bad or reserved names are rejected") {
    for (const char* bad : {"", "1abc", "has space", "dash-ed", "messages_published", "errors_total", "broker_x"}) {
      std::error_code ec;
      const auto c = collector.counter(bad, "", ec);
      INFO(bad);
      CHECK(ec == kincir::errc::invalid_argument);
      CHECK_FALSE(c);
    }
    std::error_code ec;
    CHECK_FALSE(collector.histogram("publish_latency", "", ec));
    CHECK(ec == kincir::errc::invalid_argument);
    CHECK_THROWS_AS(collector.counter("bad name"), kincir::Error);
    const MetricsCollector::Counter unset;
    unset.add();  // a default-constructed handle does nothing
    CHECK(unset.value() == 0);
  }

  SECTION("capacity is bounded") {
    std::error_code ec;
    for (std::size_t i = 1; i < MetricsCollector::kMaxNamedCounters; ++i) {
      REQUIRE(collector.counter("c" + std::to_string(i), "", ec));
    }
    CHECK_FALSE(collector.counter("one_too_many", "", ec));
    CHECK(ec == kincir::errc::invalid_argument);
    CHECK(collector.counter("retries", "", ec));  // existing names still resolve
  }
}

TEST_CASE("observed sources are polled on every snapshot until unobserved", "[metrics]") {
  MetricsCollector collector;
  int polls = 0;
  const auto id = collector.observe("memory", [&polls] {
    ++polls;
    return kincir::BrokerStatsSample{10, 20, 3, 1, static_cast<std::uint64_t>(polls)};
  });
  auto m = collector.snapshot();
  REQUIRE(m.sources.size() == 1);
  CHECK(m.sources[0].name == "memory");
  CHECK(m.sources[0].stats == kincir::BrokerStatsSample{10, 20, 3, 1, 1});
  m = collector.snapshot();
  CHECK(m.sources[0].stats.queue_depth == 2);
  collector.unobserve(id);
  m = collector.snapshot();
  CHECK(m.sources.empty());
  CHECK(polls == 2);
}

TEST_CASE("collectors on one thread keep separate counts", "[metrics]") {
  MetricsCollector a;
  {
    MetricsCollector b;
    for (int i = 0; i < 10; ++i) {
      a.record_publish(nanoseconds(1));
      b.record_publish(nanoseconds(1));
      b.record_error();
    }
    CHECK(b.snapshot().messages_published == 10);
    CHECK(b.snapshot().error_count == 10);
  }
  // A collector made after one was destroyed starts from zero on a thread that used both.
  MetricsCollector c;
  c.record_receive(nanoseconds(1));
  CHECK(a.snapshot().messages_published == 10);
  CHECK(a.snapshot().error_count == 0);
  CHECK(c.snapshot().messages_received == 1);
  CHECK(c.snapshot().messages_published == 0);
}

TEST_CASE("recording allocates nothing once the thread is warmed up", "[metrics]") {
  MetricsCollector collector;
  auto counter = collector.counter("events");
  auto histogram = collector.histogram("step");
  collector.record_publish(nanoseconds(1));
  collector.record_receive(nanoseconds(1));
  histogram.record(nanoseconds(1));
  const kincir::test::AllocScope scope;
  for (int i = 0; i < 10'000; ++i) {
    collector.record_publish(nanoseconds(i));
    collector.record_receive(nanoseconds(i));
    collector.record_error();
    counter.add();
    histogram.record(nanoseconds(i));
  }
  CHECK(scope.allocations() == 0);
  CHECK(counter.value() == 10'000);
}

TEST_CASE("counts are exact under threads hammering one collector", "[metrics][concurrency]") {
  const int threads = GENERATE(2, 4, 8);
  constexpr std::uint64_t kPerThread = 20'000;
  MetricsCollector collector;
  auto counter = collector.counter("events");
  auto histogram = collector.histogram("step");

  std::atomic<bool> done{false};
  std::uint64_t last_seen = 0;
  bool monotonic = true;
  std::thread reader([&] {
    while (!done.load(std::memory_order_acquire)) {
      const std::uint64_t now = collector.snapshot().messages_published;
      monotonic = monotonic && now >= last_seen;
      last_seen = now;
    }
  });

  std::vector<std::thread> workers;
  workers.reserve(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (std::uint64_t i = 0; i < kPerThread; ++i) {
        collector.record_publish(nanoseconds(i % 1000));
        collector.record_receive(nanoseconds(t), 2);
        if (i % 10 == 0) collector.record_error();
        counter.add(3);
        histogram.record(nanoseconds(i % 7));
      }
    });
  }
  for (auto& w : workers) w.join();
  done.store(true, std::memory_order_release);
  reader.join();

  const auto n = static_cast<std::uint64_t>(threads);
  const PerformanceMetrics m = collector.snapshot();
  CHECK(monotonic);
  CHECK(m.messages_published == n * kPerThread);
  CHECK(m.publish_calls == n * kPerThread);
  CHECK(m.messages_received == 2 * n * kPerThread);
  CHECK(m.receive_calls == n * kPerThread);
  CHECK(m.error_count == n * kPerThread / 10);
  // Sum of i % 1000 over 20 000 values: 20 rounds of 0 + 1 + ... + 999.
  CHECK(m.total_publish_time == nanoseconds(static_cast<std::int64_t>(n * 20 * 499'500)));
  CHECK(m.total_receive_time == nanoseconds(static_cast<std::int64_t>(kPerThread * n * (n - 1) / 2)));
  CHECK(m.publish_latency.count == n * kPerThread);
  CHECK(m.publish_latency.max == nanoseconds(999));
  CHECK(m.counters.at(0).value == 3 * n * kPerThread);
  CHECK(m.histograms.at(0).latency.count == n * kPerThread);
}

TEST_CASE("counts of exited threads survive and their shards are reused", "[metrics][concurrency]") {
  MetricsCollector collector;
  for (int round = 0; round < 20; ++round) {
    std::thread([&] {
      for (int i = 0; i < 100; ++i) collector.record_publish(nanoseconds(5));
    }).join();
  }
  // A new thread adopts an exited thread's shard: it allocates nothing for counting.
  std::size_t allocations = 1;
  std::thread([&] {
    const kincir::test::AllocScope scope;
    collector.record_error();
    allocations = scope.allocations();
  }).join();
  const PerformanceMetrics m = collector.snapshot();
  CHECK(m.messages_published == 2000);
  CHECK(m.total_publish_time == nanoseconds(10'000));
  CHECK(m.error_count == 1);
  CHECK(allocations <= 1);  // at most the thread's own registry entry, never a new shard
}
