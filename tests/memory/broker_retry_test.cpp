// Per-subscription retry and dead-lettering (SubscriptionOptions: max_deliveries,
// dead_letter_topic, requeue_delay), the reason a nack gives, and their validation.
#include <kincir/memory/broker.hpp>
#include <kincir/memory/publisher.hpp>
#include <kincir/memory/subscriber.hpp>

#include <chrono>        // requeue delays
#include <string>        // reasons
#include <system_error>  // std::error_code
#include <vector>        // handles

#include "memory/broker_test_support.hpp"
#include "support/capturing_logger.hpp"
#include "support/catch.hpp"

using namespace std::chrono_literals;
using kincir::Message;
using kincir::test::CapturingLogger;
using kincir::test::number;
using kincir::test::quiet_config;
using kincir::test::text;
using namespace kincir::memory;

namespace {

/// Receives and nacks for requeue until the message is no longer redelivered; returns how many
/// deliveries it had.
std::uint32_t nack_until_gone(InMemoryAckSubscriber& subscriber, std::string_view reason = {}) {
  std::uint32_t deliveries = 0;
  while (auto d = subscriber.receive_with_ack_for(200ms)) {
    deliveries = d->second.delivery_count();
    subscriber.nack(d->second, true, reason);
  }
  return deliveries;
}

}  // namespace

TEST_CASE("each subscription retries and dead-letters by its own options", "[broker][ack][retry]") {
  BrokerConfig c = quiet_config();
  c.max_deliveries = 4;
  c.dead_letter_topic = "broker.dead";
  InMemoryBroker broker(c);
  InMemoryPublisher publisher(broker);
  InMemorySubscriber broker_dead(broker);
  InMemorySubscriber own_dead(broker);
  broker_dead.subscribe("broker.dead");
  own_dead.subscribe("own.dead");

  InMemoryAckSubscriber defaults(broker);  // the broker's values
  InMemoryAckSubscriber custom(broker);
  SubscriptionOptions options;
  options.max_deliveries = 2;
  options.dead_letter_topic = "own.dead";
  defaults.subscribe("t");
  custom.subscribe("t", options);
  publisher.publish("t", text("poison"));

  CHECK(nack_until_gone(defaults) == 4);
  CHECK(nack_until_gone(custom) == 2);
  const auto from_defaults = broker_dead.receive_for(1s);
  const auto from_custom = own_dead.receive_for(1s);
  REQUIRE(from_defaults.has_value());
  REQUIRE(from_custom.has_value());
  CHECK(from_defaults->metadata.get("x-delivery-count") == "4");
  CHECK(from_custom->metadata.get("x-delivery-count") == "2");
  CHECK_FALSE(broker_dead.try_receive().has_value());  // each went to its own topic only
  CHECK_FALSE(own_dead.try_receive().has_value());
  const auto info = broker.topic_info("t");
  CHECK(info->redelivered == 3 + 1);
  CHECK(info->dead_lettered == 2);

  // Subscribing again without options goes back to the broker's values.
  custom.subscribe("t");
  publisher.publish("t", text("poison again"));
  CHECK(nack_until_gone(custom) == 4);
  CHECK(nack_until_gone(defaults) == 4);
  CHECK(broker_dead.receive_for(1s).has_value());
  CHECK(broker_dead.receive_for(1s).has_value());
}

TEST_CASE(
    "a nack's reason, the cause, the source topic and the delivery count end up in the "
    "dead-lettered message",
    "[broker][ack][retry]") {
  BrokerConfig c = quiet_config();
  c.dead_letter_topic = "dead";
  InMemoryBroker broker(c);
  InMemoryPublisher publisher(broker);
  InMemoryAckSubscriber subscriber(broker);
  InMemoryAckSubscriber dead(broker);
  SubscriptionOptions options;
  options.max_deliveries = 2;
  subscriber.subscribe("orders", options);
  SubscriptionOptions dead_options;
  dead_options.dead_letter_topic = "dead.dead";
  dead.subscribe("dead", dead_options);
  InMemorySubscriber dead_dead(broker);
  dead_dead.subscribe("dead.dead");

  Message original = text("1");
  original.metadata.set("id", "42");
  publisher.publish("orders", std::move(original));
  publisher.publish("orders", kincir::test::numbered(2, 2));

  SECTION("rejected with a reason") {
    auto d = subscriber.receive_with_ack();
    std::error_code ec;
    subscriber.nack(d.second, false, "malformed JSON at byte 17", ec);
    CHECK_FALSE(ec);
    auto dl = dead.receive_with_ack();
    CHECK(number(dl.first) == 1);
    CHECK(dl.first.uuid == d.first.uuid);
    CHECK(dl.first.metadata.get("id") == "42");  // the message's own metadata is kept
    CHECK(dl.first.metadata.get("x-kincir-death-reason") == "malformed JSON at byte 17");
    CHECK(dl.first.metadata.get("x-kincir-death-cause") == "rejected");
    CHECK(dl.first.metadata.get("x-original-topic") == "orders");
    CHECK(dl.first.metadata.get("x-delivery-count") == "1");

    // Dead-lettered again without a reason: the earlier reason does not stay.
    dead.nack(dl.second, false);
    const auto twice = dead_dead.receive_for(1s);
    REQUIRE(twice.has_value());
    CHECK_FALSE(twice->metadata.get("x-kincir-death-reason").has_value());
    CHECK(twice->metadata.get("x-kincir-death-cause") == "rejected");
    CHECK(twice->metadata.get("x-original-topic") == "dead");
  }
  SECTION("past max_deliveries: the last nack's reason counts") {
    auto d = subscriber.receive_with_ack();
    subscriber.nack(d.second, true, "first try");
    auto again = subscriber.receive_with_ack();
    REQUIRE(again.second.delivery_count() == 2);
    CHECK_FALSE(again.first.metadata.get("x-kincir-death-reason").has_value());  // requeued as it was
    subscriber.nack(again.second, true, "timeout calling the payment service");
    auto dl = dead.receive_with_ack();
    CHECK(dl.first.metadata.get("x-kincir-death-reason") == "timeout calling the payment service");
    CHECK(dl.first.metadata.get("x-kincir-death-cause") == "delivery-limit");
    CHECK(dl.first.metadata.get("x-delivery-count") == "2");
    dead.ack(dl.second);
  }
  SECTION("nack_batch gives every message the same reason") {
    std::vector<kincir::BasicAckHandle> handles;
    for (int i = 0; i < 3; ++i) handles.push_back(subscriber.receive_with_ack().second);
    subscriber.nack_batch(handles, false, "batch failed");
    for (int i = 0; i < 3; ++i) {
      auto dl = dead.receive_with_ack();
      CHECK(number(dl.first) == i + 1);
      CHECK(dl.first.metadata.get("x-kincir-death-reason") == "batch failed");
      dead.ack(dl.second);
    }
  }
}

TEST_CASE("an empty dead_letter_topic option drops where the broker would dead-letter, and says so",
          "[broker][ack][retry][visibility]") {
  CapturingLogger log;
  BrokerConfig c = quiet_config();
  c.dead_letter_topic = "dead";
  c.logger = &log;
  InMemoryBroker broker(c);
  InMemorySubscriber dead(broker);
  dead.subscribe("dead");
  InMemoryAckSubscriber subscriber(broker);
  SubscriptionOptions options;
  options.dead_letter_topic = "";
  subscriber.subscribe("work", options);
  InMemoryPublisher(broker).publish("work", text("poison"));
  auto [message, handle] = subscriber.receive_with_ack();
  subscriber.nack(handle, false, "cannot parse");

  CHECK_FALSE(dead.receive_for(50ms).has_value());
  const auto info = broker.topic_info("work");
  CHECK(info->dropped == 1);
  CHECK(info->dead_lettered == 0);
  const auto reports = log.matching("message dropped after a nack without requeue: no dead_letter_topic");
  REQUIRE(reports.size() == 1);
  CHECK(reports[0].has("topic=work"));
  CHECK(reports[0].has("deliveries=1"));
  CHECK(reports[0].has("reason=cannot parse"));
}

TEST_CASE("a delayed requeue holds back neither the topic nor other messages", "[broker][ack][retry]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemoryAckSubscriber subscriber(broker);
  SubscriptionOptions options;
  options.requeue_delay = 100ms;
  subscriber.subscribe("t", options);
  publisher.publish("t", kincir::test::numbered(3));

  auto first = subscriber.receive_with_ack();
  REQUIRE(number(first.first) == 0);
  const auto nacked = std::chrono::steady_clock::now();
  subscriber.nack(first.second, true);
  // The newer messages come first, at once; the requeued one is not deliverable yet.
  for (int expected = 1; expected <= 2; ++expected) {
    auto next = subscriber.try_receive();
    if (std::chrono::steady_clock::now() - nacked >= 100ms) break;  // a slow machine: nothing to tell
    REQUIRE(next.has_value());
    CHECK(number(*next) == expected);
  }
  if (std::chrono::steady_clock::now() - nacked < 100ms) {
    CHECK_FALSE(subscriber.try_receive().has_value());
    CHECK(broker.topic_info("t")->subscriber_info.at(0).lag == 1);  // the delayed delivery counts
  }
  auto again = subscriber.receive_with_ack_for(5s);
  REQUIRE(again.has_value());
  CHECK(std::chrono::steady_clock::now() - nacked >= 100ms);
  CHECK(again->first.uuid == first.first.uuid);
  CHECK(again->second.delivery_count() == 2);
  subscriber.ack(again->second);
  CHECK(broker.topic_info("t")->redelivered == 1);
}

TEST_CASE("the broker's requeue_delay is the default; a subscription sets its own", "[broker][ack][retry]") {
  BrokerConfig c = quiet_config();
  c.requeue_delay = 24h;  // as good as never, for this test
  InMemoryBroker broker(c);
  InMemoryPublisher publisher(broker);
  InMemoryAckSubscriber delayed(broker);
  InMemoryAckSubscriber at_once(broker);
  delayed.subscribe("t", "g");
  SubscriptionOptions options;
  options.requeue_delay = 0ms;
  at_once.subscribe("u", "g", options);
  publisher.publish("t", text("t"));
  publisher.publish("u", text("u"));

  auto d = delayed.receive_with_ack();
  delayed.nack(d.second, true);
  CHECK_FALSE(delayed.receive_with_ack_for(20ms).has_value());
  CHECK(broker.topic_info("t")->subscriber_info.at(0).lag == 1);

  auto u = at_once.receive_with_ack();
  at_once.nack(u.second, true);
  auto again = at_once.receive_with_ack_for(5s);
  REQUIRE(again.has_value());
  CHECK(again->second.delivery_count() == 2);
  at_once.ack(again->second);

  // A group member that leaves with a delayed delivery leaves it to the group; the last member
  // drops it, counted.
  delayed.unsubscribe();
  CHECK(broker.topic_info("t")->dropped == 1);
}

TEST_CASE("delayed requeues in a group become deliverable in the order they are due", "[broker][ack][retry]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemoryAckSubscriber slow(broker);
  InMemoryAckSubscriber fast(broker);
  SubscriptionOptions slow_options;
  slow_options.requeue_delay = 150ms;
  SubscriptionOptions fast_options;
  fast_options.requeue_delay = 1ms;
  slow.subscribe("t", "g", slow_options);
  fast.subscribe("t", "g", fast_options);
  publisher.publish("t", kincir::test::numbered(2));
  auto a = slow.receive_with_ack();
  auto b = fast.receive_with_ack();
  slow.nack(a.second, true);  // the settling member's delay decides
  fast.nack(b.second, true);
  auto first_back = slow.receive_with_ack_for(5s);
  REQUIRE(first_back.has_value());
  CHECK(number(first_back->first) == number(b.first));  // due first, although nacked second
  auto second_back = fast.receive_with_ack_for(5s);
  REQUIRE(second_back.has_value());
  CHECK(number(second_back->first) == number(a.first));
  slow.ack(first_back->second);
  fast.ack(second_back->second);
}

TEST_CASE("SubscriptionOptions out of range are rejected, naming the field and its range", "[broker][ack][config]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemoryAckSubscriber subscriber(broker);
  subscriber.subscribe("kept");

  SubscriptionOptions bad;
  std::string expected;
  SECTION("max_deliveries") {
    bad.max_deliveries = 0;
    expected = "max_deliveries must be at least 1";
  }
  SECTION("negative requeue_delay") {
    bad.requeue_delay = -1ms;
    expected = "requeue_delay must be in [0, 24 h]";
  }
  SECTION("requeue_delay over a day") {
    bad.requeue_delay = 24h + 1ms;
    expected = "requeue_delay must be in [0, 24 h]";
  }
  SECTION("dead_letter_topic") {
    bad.dead_letter_topic = std::string(300, 'x');
    expected = "dead_letter_topic must be empty or a valid topic name (1-255 bytes, no NUL)";
  }
  std::error_code ec;
  std::string reason;
  CHECK_FALSE(bad.validate(ec, &reason));
  CHECK(ec == kincir::errc::invalid_argument);
  CHECK(reason == expected);

  subscriber.subscribe("other", bad, ec);
  CHECK(ec == kincir::errc::invalid_argument);
  try {
    subscriber.subscribe("other", "g", bad);
    FAIL("subscribe accepted invalid options");
  } catch (const kincir::Error& e) {
    CHECK(e.code() == kincir::errc::invalid_argument);
    CHECK(std::string(e.what()).find(expected) != std::string::npos);
  }
  // The previous subscription is kept.
  CHECK(subscriber.topic() == "kept");
  publisher.publish("kept", text("still here"));
  CHECK(subscriber.receive_for(1s).has_value());
}

TEST_CASE("BrokerConfig::requeue_delay is validated", "[broker][config]") {
  BrokerConfig config;
  config.requeue_delay = -1ms;
  std::error_code ec;
  std::string reason;
  CHECK_FALSE(config.validate(ec, &reason));
  CHECK(reason == "requeue_delay must be in [0, 24 h]");
  try {
    InMemoryBroker broker(config);
    FAIL("the broker accepted a negative requeue_delay");
  } catch (const kincir::Error& e) {
    CHECK(std::string(e.what()).find("requeue_delay must be in [0, 24 h]") != std::string::npos);
  }
  config.requeue_delay = BrokerConfig::kMaxRequeueDelay;
  CHECK(config.validate(ec));
}
