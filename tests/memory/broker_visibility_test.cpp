// What the broker makes visible about waits and losses a user would otherwise not see: messages
// dropped for want of a subscriber, publishers held back by a slow subscriber (and which one),
// dead-lettered messages dropped because the dead-letter topic has no subscriber. Each is counted
// in `stats()` and reported through `BrokerConfig::logger`.

#include <kincir/memory/broker.hpp>
#include <kincir/memory/publisher.hpp>
#include <kincir/memory/subscriber.hpp>

#include <chrono>        // report intervals, bounded waits
#include <cstdint>       // ids
#include <memory>        // a subscriber that goes away
#include <optional>      // the report naming the idle subscriber
#include <string>        // field values
#include <system_error>  // validation
#include <thread>        // the blocked publisher
#include <vector>        // publishers

#include "memory/broker_test_support.hpp"
#include "support/capturing_logger.hpp"
#include "support/catch.hpp"

using kincir::memory::BrokerConfig;
using kincir::memory::InMemoryAckSubscriber;
using kincir::memory::InMemoryBroker;
using kincir::memory::InMemoryPublisher;
using kincir::memory::InMemorySubscriber;
using kincir::memory::TopicInfo;
using kincir::test::CapturingLogger;
using kincir::test::numbered;
using kincir::test::quiet_config;
using namespace std::chrono_literals;

namespace {

TopicInfo topic_info(const InMemoryBroker& broker, const std::string& name) {
  for (const auto& t : broker.stats().per_topic) {
    if (t.name == name) return t;
  }
  FAIL("no topic " << name);
  return {};
}

/// A broker on the quiet configuration that reports to its own logger; `tweak(BrokerConfig&)`
/// adjusts the configuration before the broker is made.
struct LoggedBroker {
  template <class Tweak>
  explicit LoggedBroker(Tweak tweak) : broker(configure(log, tweak)) {}

  CapturingLogger log;  // first: it outlives the broker
  InMemoryBroker broker;

 private:
  template <class Tweak>
  static BrokerConfig configure(CapturingLogger& logger, Tweak& tweak) {
    BrokerConfig config = quiet_config();
    config.logger = &logger;
    tweak(config);
    return config;
  }
};

/// Polls `done` for up to ten seconds.
template <class F>
bool eventually(F done) {
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

}  // namespace

TEST_CASE("messages published before anyone subscribed are counted and reported once per interval",
          "[broker][visibility]") {
  LoggedBroker env([](BrokerConfig& c) { c.stall_report_interval = std::chrono::hours(1); });
  CapturingLogger& log = env.log;
  InMemoryBroker& broker = env.broker;
  InMemoryPublisher publisher(broker);

  publisher.publish("orders", numbered(3));
  publisher.publish("orders", numbered(2));

  const TopicInfo info = topic_info(broker, "orders");
  CHECK(info.dropped_no_subscriber == 5);
  CHECK(info.dropped == 5);
  CHECK(broker.stats().dropped_no_subscriber == 5);
  const auto records = log.matching("no subscriber");
  REQUIRE(records.size() == 1);  // the second drop falls within the report interval
  CHECK(records[0].level == kincir::LogLevel::warn);
  CHECK(records[0].has("topic=orders"));
  CHECK(records[0].has("dropped=3"));

  // Once someone subscribes, nothing more is dropped or reported.
  InMemorySubscriber subscriber(broker);
  subscriber.subscribe("orders");
  publisher.publish("orders", numbered(1));
  CHECK(topic_info(broker, "orders").dropped_no_subscriber == 5);
  CHECK(subscriber.receive_for(1s).has_value());
}

TEST_CASE("without a logger the drops are still counted, also with statistics off", "[broker][visibility]") {
  BrokerConfig config = quiet_config();
  config.enable_statistics = false;
  InMemoryBroker broker(config);
  InMemoryPublisher publisher(broker);
  publisher.publish("t", numbered(4));
  const TopicInfo info = topic_info(broker, "t");
  CHECK(info.dropped_no_subscriber == 4);
  CHECK(info.dropped == 0);  // the statistics counters are off
}

TEST_CASE("a publisher waiting on a full topic is counted and reported with the subscriber holding it back",
          "[broker][visibility]") {
  LoggedBroker env([](BrokerConfig& c) {
    c.max_queue_size = 4;
    c.stall_report_interval = 20ms;
  });
  CapturingLogger& log = env.log;
  InMemoryBroker& broker = env.broker;
  InMemorySubscriber fast(broker);
  InMemorySubscriber idle(broker);
  fast.subscribe("jobs");
  idle.subscribe("jobs");
  InMemoryPublisher publisher(broker);

  std::thread producer([&] { publisher.publish("jobs", numbered(10)); });
  // The fast subscriber keeps up; the idle one holds the topic full.
  for (int i = 0; i < 4; ++i) REQUIRE(fast.receive_for(5s).has_value());

  REQUIRE(eventually([&] { return topic_info(broker, "jobs").publishers_blocked == 1; }));
  REQUIRE(eventually([&] { return !log.matching("publisher waiting").empty(); }));

  const TopicInfo info = topic_info(broker, "jobs");
  std::uint64_t idle_id = 0;
  for (const auto& s : info.subscriber_info) {
    if (s.lag == 4) idle_id = s.id;
  }
  REQUIRE(idle_id != 0);
  CHECK(info.slowest_subscriber == idle_id);
  CHECK(info.publisher_waits >= 1);
  const auto health = broker.check_health();
  CHECK(health.publishers_blocked == 1);
  CHECK(health.worst_subscriber == idle_id);
  CHECK(health.worst_topic == "jobs");

  // Reports repeat every interval while the publisher waits. One made before the fast subscriber
  // caught up (a loaded machine) may name it, as both lagged 4 then: wait for one naming the idle
  // subscriber, which every report made from now on does.
  const std::string names_idle = "slowest_subscriber=" + std::to_string(idle_id);
  std::optional<CapturingLogger::Record> report;
  REQUIRE(eventually([&] {
    for (const auto& r : log.matching("publisher waiting")) {
      if (r.has(names_idle)) report = r;
    }
    return report.has_value();
  }));
  CHECK(report->level == kincir::LogLevel::warn);
  CHECK(report->has("topic=jobs"));
  CHECK(report->has("capacity=4"));

  // The publish completes once the idle subscriber reads; nothing is lost.
  int received = 0;
  while (received < 10) {
    if (!idle.receive_for(5s)) break;
    ++received;
    if (received <= 6) (void)fast.receive_for(5s);
  }
  producer.join();
  CHECK(received == 10);
  CHECK(topic_info(broker, "jobs").publishers_blocked == 0);
}

TEST_CASE("a dead-lettered message dropped for want of a dead-letter subscriber is counted and reported",
          "[broker][visibility]") {
  LoggedBroker env([](BrokerConfig& c) {
    c.max_deliveries = 1;
    c.dead_letter_topic = "dead";
  });
  CapturingLogger& log = env.log;
  InMemoryBroker& broker = env.broker;
  InMemoryAckSubscriber subscriber(broker);
  subscriber.subscribe("work");
  InMemoryPublisher publisher(broker);
  publisher.publish("work", kincir::test::text("poison"));

  auto [message, handle] = subscriber.receive_with_ack();
  subscriber.nack(handle, true);  // past max_deliveries: dead-lettered

  CHECK(topic_info(broker, "dead").dropped_no_subscriber == 1);
  const auto records = log.matching("dead-letter topic has no subscriber");
  REQUIRE(records.size() == 1);
  CHECK(records[0].has("topic=dead"));
}

TEST_CASE("a publisher waiting when the last subscriber leaves counts its messages as dropped, not published",
          "[broker][visibility]") {
  LoggedBroker env([](BrokerConfig& c) { c.max_queue_size = 4; });
  CapturingLogger& log = env.log;
  InMemoryBroker& broker = env.broker;
  InMemoryPublisher publisher(broker);
  auto subscriber = std::make_unique<InMemorySubscriber>(broker);
  subscriber->subscribe("t");
  publisher.publish("t", numbered(4));  // full
  std::thread producer([&] { publisher.publish("t", numbered(3)); });
  REQUIRE(eventually([&] { return topic_info(broker, "t").publishers_blocked == 1; }));
  subscriber.reset();  // the only subscriber leaves; the publish completes for nobody
  producer.join();
  const TopicInfo info = topic_info(broker, "t");
  CHECK(info.published == 4);
  CHECK(info.dropped_no_subscriber == 3);
  CHECK(info.publishers_blocked == 0);
  CHECK(!log.matching("left while a publisher waited").empty());
}

TEST_CASE("the broker's totals keep the counters of topics removed as idle", "[broker][visibility]") {
  BrokerConfig config = quiet_config();
  InMemoryBroker broker(config);
  InMemoryPublisher publisher(broker);
  publisher.publish("nobody", numbered(7));
  REQUIRE(broker.stats().dropped_no_subscriber == 7);
  broker.run_maintenance();  // removes the idle topic
  const auto stats = broker.stats();
  CHECK(stats.topics == 0);
  CHECK(stats.dropped_no_subscriber == 7);
  CHECK(stats.dropped == 7);
  CHECK(stats.published == 0);
}

TEST_CASE("stall reports are one per topic per interval, however many publishers wait", "[broker][visibility]") {
  LoggedBroker env([](BrokerConfig& c) {
    c.max_queue_size = 2;
    c.stall_report_interval = 50ms;
  });
  CapturingLogger& log = env.log;
  InMemoryBroker& broker = env.broker;
  InMemorySubscriber idle(broker);
  idle.subscribe("t");
  InMemoryPublisher publisher(broker);
  publisher.publish("t", numbered(2));  // full
  std::vector<std::thread> producers;
  std::vector<InMemoryPublisher> publishers;
  for (int i = 0; i < 4; ++i) publishers.emplace_back(broker);
  for (auto& p : publishers) {
    producers.emplace_back([&p] {
      std::error_code ec;  // broker_shutdown at the end
      p.publish("t", numbered(1), ec);
    });
  }
  REQUIRE(eventually([&] { return topic_info(broker, "t").publishers_blocked == 4; }));
  std::this_thread::sleep_for(400ms);
  const auto reports = log.matching("publisher waiting").size();
  CHECK(reports >= 2);
  CHECK(reports <= 10);  // about 400 / 50 plus the first; four publishers would give 4x that
  CHECK(topic_info(broker, "t").slowest_subscriber != 0);
  broker.shutdown();
  for (auto& t : producers) t.join();
  CHECK(topic_info(broker, "t").publishers_blocked == 0);
}

TEST_CASE("slowest_subscriber is 0 while nobody lags", "[broker][visibility]") {
  InMemoryBroker broker(quiet_config());
  InMemorySubscriber a(broker);
  InMemorySubscriber b(broker);
  a.subscribe("t");
  b.subscribe("t");
  CHECK(topic_info(broker, "t").slowest_subscriber == 0);
  CHECK(broker.check_health().worst_subscriber == 0);
  InMemoryPublisher(broker).publish("t", numbered(1));
  (void)a.receive_for(1s);
  std::uint64_t b_id = 0;
  for (const auto& s : topic_info(broker, "t").subscriber_info) {
    if (s.lag == 1) b_id = s.id;
  }
  REQUIRE(b_id != 0);
  CHECK(topic_info(broker, "t").slowest_subscriber == b_id);
}

TEST_CASE("a receive waiting on a full ack window is reported", "[broker][visibility]") {
  LoggedBroker env([](BrokerConfig& c) {
    c.max_unacked = 2;
    c.stall_report_interval = 20ms;
  });
  CapturingLogger& log = env.log;
  InMemoryBroker& broker = env.broker;
  InMemoryAckSubscriber subscriber(broker);
  subscriber.subscribe("t");
  InMemoryPublisher(broker).publish("t", numbered(3));
  auto first = subscriber.receive_with_ack();
  auto second = subscriber.receive_with_ack();
  CHECK_FALSE(subscriber.receive_with_ack_for(150ms).has_value());  // the window is full
  const auto reports = log.matching("ack window is full");
  REQUIRE(!reports.empty());
  CHECK(reports.front().has("topic=t"));
  CHECK(reports.front().has("unacked=2"));
  subscriber.ack(first.second);
  CHECK(subscriber.receive_with_ack_for(1s).has_value());  // one slot open again
}

TEST_CASE("a message dropped after max_deliveries with nowhere to go is reported", "[broker][visibility]") {
  std::string dead_letter_topic;
  SECTION("no dead-letter topic") {}
  SECTION("the dead-letter topic is the message's own topic") { dead_letter_topic = "work"; }
  LoggedBroker env([&](BrokerConfig& c) {
    c.max_deliveries = 1;
    c.dead_letter_topic = dead_letter_topic;
  });
  CapturingLogger& log = env.log;
  InMemoryBroker& broker = env.broker;
  InMemoryAckSubscriber subscriber(broker);
  subscriber.subscribe("work");
  InMemoryPublisher(broker).publish("work", kincir::test::text("poison"));
  auto [message, handle] = subscriber.receive_with_ack();
  subscriber.nack(handle, true);
  const auto reports = log.matching("dropped after max_deliveries");
  REQUIRE(reports.size() == 1);
  CHECK(reports[0].has("topic=work"));
  CHECK(reports[0].has("deliveries=1"));
}

TEST_CASE("stall_report_interval is validated", "[broker][visibility][config]") {
  BrokerConfig config;
  config.stall_report_interval = 9ms;
  std::error_code ec;
  std::string reason;
  CHECK_FALSE(config.validate(ec, &reason));
  CHECK(ec == kincir::errc::invalid_argument);
  CHECK(reason.find("stall_report_interval") != std::string::npos);
  CHECK_THROWS(InMemoryBroker(config));
}
