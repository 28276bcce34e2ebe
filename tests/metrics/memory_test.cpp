#include <kincir/metrics/instrumented.hpp>
#include <kincir/metrics/memory.hpp>

#include <kincir/memory/async.hpp>  // async_receive
#include <kincir/memory/publisher.hpp>
#include <kincir/memory/subscriber.hpp>

#include <asio/bind_cancellation_slot.hpp>  // cancelling an instrumented receive
#include <asio/bind_executor.hpp>           // handler executors
#include <asio/cancellation_signal.hpp>     // cancelling an instrumented receive
#include <asio/io_context.hpp>              // the executor of async_receive
#include <chrono>                           // run_for
#include <memory>                           // std::make_shared
#include <optional>                         // a received handle
#include <string>                           // payloads, Prometheus text
#include <utility>                          // std::declval
#include <vector>                           // batches

#include "support/catch.hpp"

using kincir::MetricsCollector;
using kincir::memory::BrokerConfig;
using kincir::memory::InMemoryBroker;
using kincir::memory::InMemoryPublisher;
using kincir::memory::InMemorySubscriber;

namespace {

std::vector<kincir::Message> batch(int n) {
  std::vector<kincir::Message> out;
  out.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) out.emplace_back(std::string("m") + std::to_string(i));
  return out;
}

const kincir::BrokerStatsSample* find_source(const kincir::PerformanceMetrics& m, const std::string& name) {
  for (const auto& s : m.sources)
    if (s.name == name) return &s.stats;
  return nullptr;
}

}  // namespace

TEST_CASE("metrics_observe reports the broker's own counts on every snapshot", "[metrics]") {
  InMemoryBroker broker;
  MetricsCollector collector;
  const auto id = kincir::metrics_observe(collector, broker, "memory");

  InMemoryPublisher publisher(broker);
  InMemorySubscriber subscriber(broker);
  subscriber.subscribe("orders");
  publisher.publish("orders", batch(5));
  publisher.publish("nobody-listens", batch(2));  // no subscriber: dropped
  CHECK(subscriber.receive().payload.view() == "m0");
  CHECK(subscriber.receive().payload.view() == "m1");

  const kincir::PerformanceMetrics first = collector.snapshot();
  const auto* s = find_source(first, "memory");
  REQUIRE(s != nullptr);
  CHECK(s->published == 5);
  CHECK(s->delivered == 2);
  CHECK(s->dropped == 2);
  CHECK(s->expired == 0);
  CHECK(s->queue_depth == 3);

  // Polled afresh: the next snapshot sees the receives made since.
  for (int i = 0; i < 3; ++i) (void)subscriber.receive();
  const kincir::PerformanceMetrics second = collector.snapshot();
  const auto* t = find_source(second, "memory");
  REQUIRE(t != nullptr);
  CHECK(t->delivered == 5);
  CHECK(t->queue_depth == 0);
  CHECK(collector.to_prometheus("app").find("app_broker_delivered_total{source=\"memory\"} 5") != std::string::npos);

  collector.unobserve(id);
  CHECK(collector.snapshot().sources.empty());
}

TEST_CASE("the shared_ptr form keeps the broker alive for the registration", "[metrics]") {
  MetricsCollector collector;
  std::weak_ptr<InMemoryBroker> weak;
  {
    auto broker = std::make_shared<InMemoryBroker>();
    weak = broker;
    kincir::metrics_observe(collector, broker, "shared");
    InMemoryPublisher publisher(broker);
    InMemorySubscriber subscriber(broker);
    subscriber.subscribe("t");
    publisher.publish("t", batch(4));
  }
  CHECK_FALSE(weak.expired());  // the collector's registration owns it now
  const kincir::PerformanceMetrics m = collector.snapshot();
  const auto* s = find_source(m, "shared");
  REQUIRE(s != nullptr);
  CHECK(s->published == 4);
  CHECK(s->queue_depth == 0);  // its only subscriber is gone
}

TEST_CASE("a broker without statistics reports zeros", "[metrics]") {
  BrokerConfig config;
  config.enable_statistics = false;
  InMemoryBroker broker(config);
  MetricsCollector collector;
  const auto id = kincir::metrics_observe(collector, broker, "quiet");
  InMemoryPublisher publisher(broker);
  InMemorySubscriber subscriber(broker);
  subscriber.subscribe("t");
  publisher.publish("t", batch(3));
  const kincir::PerformanceMetrics m = collector.snapshot();
  const auto* s = find_source(m, "quiet");
  REQUIRE(s != nullptr);
  CHECK(s->published == 0);
  CHECK(s->delivered == 0);
  collector.unobserve(id);
}

TEST_CASE("to_stats_sample copies the broker-wide totals", "[metrics]") {
  kincir::memory::BrokerStats stats;
  stats.published = 10;
  stats.delivered = 20;
  stats.dropped = 3;
  stats.expired = 4;
  stats.queue_depth = 5;
  stats.redelivered = 99;  // not part of the sample
  CHECK(kincir::to_stats_sample(stats) == kincir::BrokerStatsSample{10, 20, 3, 4, 5});
}

TEST_CASE("instrumented wrappers keep what they wrap: moved-in publishers, groups, try_publish, async_receive",
          "[metrics][instrumented]") {
  MetricsCollector collector;
  auto broker = std::make_shared<InMemoryBroker>();
  auto publisher = kincir::instrumented(InMemoryPublisher(broker), collector);  // an rvalue is moved in
  auto first = kincir::instrumented(InMemorySubscriber(broker), collector);
  InMemorySubscriber plain(broker);
  auto second = kincir::instrumented(plain, collector);
  std::error_code ec;
  first.subscribe("t", "g", ec);
  REQUIRE_FALSE(ec);
  second.subscribe("t", "g");
  CHECK(plain.group() == "g");

  publisher.publish("t", batch(2));
  publisher.try_publish("t", kincir::Message(std::string("third")), ec);
  CHECK_FALSE(ec);
  publisher.try_publish("", batch(1), ec);
  CHECK(ec == kincir::errc::invalid_topic);

  asio::io_context io;
  int received = 0;
  for (auto* s : {&first}) {
    for (int i = 0; i < 3; ++i) {
      s->async_receive(asio::bind_executor(io, [&](std::error_code e, const kincir::Message&) {
        if (!e) ++received;
      }));
      io.restart();
      io.run_for(std::chrono::milliseconds(50));
    }
  }
  while (second.try_receive()) ++received;
  CHECK(received == 3);  // the group shares the three messages

  // A cancelled receive is not an error.
  asio::cancellation_signal signal;
  std::error_code cancelled;
  first.async_receive(asio::bind_cancellation_slot(
      signal.slot(), asio::bind_executor(io, [&](std::error_code e, const kincir::Message&) { cancelled = e; })));
  io.restart();
  io.poll();
  signal.emit(asio::cancellation_type::all);
  io.restart();
  io.run();
  CHECK(cancelled == asio::error::operation_aborted);

  const auto m = collector.snapshot();
  CHECK(m.messages_published == 3);
  CHECK(m.messages_received == 3);
  CHECK(m.error_count == 1);  // the bad topic only
}

TEST_CASE("an instrumented ack subscriber keeps async_receive_with_ack, options, nack reasons and max_unacked",
          "[metrics][instrumented]") {
  using kincir::memory::InMemoryAckSubscriber;
  using kincir::memory::SubscriptionOptions;
  MetricsCollector collector;
  BrokerConfig config;
  config.max_unacked = 7;
  auto broker = std::make_shared<InMemoryBroker>(config);
  InMemoryAckSubscriber plain(broker);
  auto subscriber = kincir::instrumented(plain, collector);
  static_assert(kincir::AsyncAckSubscriber<decltype(subscriber)>);
  static_assert(
      !kincir::AsyncAckSubscriber<decltype(kincir::instrumented(std::declval<InMemorySubscriber&>(), collector))>);
  CHECK(subscriber.max_unacked() == 7);

  SubscriptionOptions bad;
  bad.max_deliveries = 0;
  std::error_code ec;
  subscriber.subscribe("t", bad, ec);
  CHECK(ec == kincir::errc::invalid_argument);
  CHECK_THROWS_AS(subscriber.subscribe("t", "g", bad), kincir::Error);
  SubscriptionOptions options;
  options.max_deliveries = 1;
  options.dead_letter_topic = "dead";
  subscriber.subscribe("t", "g", options);
  CHECK(plain.group() == "g");
  InMemorySubscriber dead(broker);
  dead.subscribe("dead");
  InMemoryPublisher(broker).publish("t", batch(2));

  asio::io_context io;
  std::optional<kincir::BasicAckHandle> handle;
  subscriber.async_receive_with_ack(
      asio::bind_executor(io, [&](std::error_code e, const kincir::Message&, kincir::BasicAckHandle h) {
        if (!e) handle = std::move(h);
      }));
  io.run();
  REQUIRE(handle.has_value());
  subscriber.nack(*handle, true, "gave up");  // the subscription's max_deliveries: dead-lettered
  const auto dl = dead.receive_for(std::chrono::seconds(1));
  REQUIRE(dl.has_value());
  CHECK(dl->metadata.get("x-kincir-death-reason") == "gave up");
  CHECK(dl->metadata.get("x-kincir-death-cause") == "delivery-limit");

  auto second = subscriber.receive_with_ack();
  const std::vector<kincir::BasicAckHandle> handles{second.second};
  subscriber.nack_batch(handles, false, "bad batch", ec);
  CHECK_FALSE(ec);
  subscriber.nack(second.second, false, "twice", ec);
  CHECK(ec == kincir::errc::unknown_delivery);
  CHECK(dead.receive_for(std::chrono::seconds(1))->metadata.get("x-kincir-death-reason") == "bad batch");

  // A cancelled receive with ack is not an error either.
  asio::cancellation_signal signal;
  std::error_code cancelled;
  subscriber.async_receive_with_ack(asio::bind_cancellation_slot(
      signal.slot(), asio::bind_executor(io, [&](std::error_code e, const kincir::Message&,
                                                 const kincir::BasicAckHandle&) { cancelled = e; })));
  io.restart();
  io.poll();
  signal.emit(asio::cancellation_type::all);
  io.restart();
  io.run();
  CHECK(cancelled == asio::error::operation_aborted);

  const auto m = collector.snapshot();
  CHECK(m.messages_received == 2);
  CHECK(m.messages_nacked == 2);
  CHECK(m.error_count == 3);  // two invalid subscribes, the unknown delivery
}
