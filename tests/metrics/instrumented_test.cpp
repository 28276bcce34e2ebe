#include <kincir/metrics/instrumented.hpp>

#include <chrono>     // receive_for
#include <optional>   // try_receive
#include <stdexcept>  // std::runtime_error
#include <string>     // payloads
#include <utility>    // std::move
#include <vector>     // batches

#include "core/archetypes.hpp"
#include "support/catch.hpp"

using namespace kincir;

namespace {

/// A publisher only: remembers what it got; topic "full" fails with queue_full, topic "boom"
/// makes the throwing overloads throw a std::runtime_error.
class RecordingPublisher {
 public:
  void publish(std::string_view topic, std::vector<Message>&& batch, std::error_code& ec) {
    ec.clear();
    if (topic == "full") {
      ec = errc::queue_full;
      return;
    }
    for (auto& m : batch) received.push_back(std::move(m));
  }
  void publish(std::string_view topic, std::vector<Message>&& batch) {
    if (topic == "boom") throw std::runtime_error("boom");
    std::error_code ec;
    publish(topic, std::move(batch), ec);
    throw_if(ec, "publish");
  }
  void publish(std::string_view topic, Message&& m, std::error_code& ec) {
    std::vector<Message> batch;
    batch.push_back(std::move(m));
    publish(topic, std::move(batch), ec);
  }
  void publish(std::string_view topic, Message&& m) {
    std::vector<Message> batch;
    batch.push_back(std::move(m));
    publish(topic, std::move(batch));
  }

  std::vector<Message> received;
};

/// A subscriber only (no acks), over the loopback bus.
class PlainSubscriber {
 public:
  explicit PlainSubscriber(test::LoopbackBus& bus) : bus_(&bus) {}
  void subscribe(std::string_view topic, std::error_code& ec) {
    if (topic.empty()) {
      ec = errc::invalid_topic;
      return;
    }
    bus_->subscribe(topic, ec);
  }
  void subscribe(std::string_view topic) {
    std::error_code ec;
    subscribe(topic, ec);
    throw_if(ec, "subscribe");
  }
  Message receive(std::error_code& ec) { return bus_->receive(ec); }
  Message receive() { return bus_->receive(); }
  std::optional<Message> try_receive() { return bus_->try_receive(); }
  std::optional<Message> receive_for(std::chrono::milliseconds timeout) { return bus_->receive_for(timeout); }

 private:
  test::LoopbackBus* bus_;
};

std::vector<Message> make_batch(int n) {
  std::vector<Message> batch;
  batch.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) batch.emplace_back(std::to_string(i));
  return batch;
}

}  // namespace

static_assert(Publisher<Instrumented<RecordingPublisher&>>);
static_assert(!Subscriber<Instrumented<RecordingPublisher&>>);
static_assert(Subscriber<Instrumented<PlainSubscriber>>);
static_assert(!Publisher<Instrumented<PlainSubscriber>>);
static_assert(!AckSubscriber<Instrumented<PlainSubscriber>>);
static_assert(Publisher<Instrumented<test::LoopbackBus&>>);
static_assert(Subscriber<Instrumented<test::LoopbackBus&>>);
static_assert(AckSubscriber<Instrumented<test::LoopbackBus&>>);
static_assert(AckSubscriber<Instrumented<test::LoopbackBus>>);

TEST_CASE("an instrumented publisher passes messages and errors through and records them", "[instrumented]") {
  MetricsCollector collector;
  RecordingPublisher inner;
  auto publisher = instrumented(inner, collector);

  auto batch = make_batch(3);
  const Uuid first = batch[0].uuid;
  publisher.publish("t", std::move(batch));
  Message single(std::string("x"));
  const Uuid single_id = single.uuid;
  std::error_code ec;
  publisher.publish("t", std::move(single), ec);
  CHECK_FALSE(ec);
  REQUIRE(inner.received.size() == 4);
  CHECK(inner.received[0].uuid == first);
  CHECK(inner.received[3].uuid == single_id);
  CHECK(inner.received[3].payload.view() == "x");

  publisher.publish("full", make_batch(2), ec);
  CHECK(ec == errc::queue_full);
  try {
    publisher.publish("full", Message(std::string("y")));
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(e.code() == errc::queue_full);
  }
  CHECK_THROWS_WITH(publisher.publish("boom", make_batch(1)), "boom");
  CHECK(inner.received.size() == 4);

  const auto m = collector.snapshot();
  CHECK(m.messages_published == 4);
  CHECK(m.publish_calls == 2);
  CHECK(m.publish_latency.count == 2);
  CHECK(m.error_count == 3);
  CHECK(m.messages_received == 0);
}

TEST_CASE("an instrumented subscriber passes messages and errors through and records them", "[instrumented]") {
  MetricsCollector collector;
  test::LoopbackBus bus;
  auto subscriber = instrumented(PlainSubscriber(bus), collector);
  subscriber.subscribe("t");
  std::error_code ec;
  subscriber.subscribe("", ec);
  CHECK(ec == errc::invalid_topic);
  CHECK_THROWS_AS(subscriber.subscribe(""), Error);
  subscriber.subscribe("t", ec);
  CHECK_FALSE(ec);

  auto batch = make_batch(4);
  const Uuid ids[] = {batch[0].uuid, batch[1].uuid, batch[2].uuid, batch[3].uuid};
  bus.publish("t", std::move(batch));

  CHECK(subscriber.receive().uuid == ids[0]);
  CHECK(subscriber.receive(ec).uuid == ids[1]);
  CHECK_FALSE(ec);
  const std::optional<Message> third = subscriber.try_receive();
  REQUIRE(third);
  CHECK(third->uuid == ids[2]);
  const std::optional<Message> fourth = subscriber.receive_for(std::chrono::milliseconds(1));
  REQUIRE(fourth);
  CHECK(fourth->uuid == ids[3]);

  // Empty: nothing to count, and no error for the non-failing forms.
  CHECK_FALSE(subscriber.try_receive());
  CHECK_FALSE(subscriber.receive_for(std::chrono::milliseconds(1)));
  const Message none = subscriber.receive(ec);
  CHECK(ec == errc::timeout);
  CHECK(none.uuid.is_nil());
  CHECK_THROWS_AS(subscriber.receive(), Error);

  const auto m = collector.snapshot();
  CHECK(m.messages_received == 4);
  CHECK(m.receive_calls == 4);
  CHECK(m.receive_latency.count == 4);
  CHECK(m.error_count == 4);  // two failed subscribes, two failed receives
}

TEST_CASE("an instrumented ack subscriber forwards settlement and counts it", "[instrumented]") {
  MetricsCollector collector;
  auto bus = instrumented(test::LoopbackBus{}, collector);
  bus.subscribe("t");
  bus.publish("t", make_batch(5));
  CHECK(bus.inner().try_receive().has_value());  // the wrapped object is reachable and owned

  std::error_code ec;
  auto [m1, h1] = bus.receive_with_ack();
  auto [m2, h2] = bus.receive_with_ack(ec);
  CHECK_FALSE(ec);
  CHECK(h1.tag() + 1 == h2.tag());
  CHECK(m1.uuid == h1.message_id());
  bus.ack(h1);
  bus.nack(h2, true, ec);
  CHECK_FALSE(ec);
  const std::vector<BasicAckHandle> both{h1, h2};
  bus.ack_batch(both);
  bus.nack_batch(both, false, ec);
  bus.ack(h1, ec);
  bus.nack(h1, false);
  bus.ack_batch(both, ec);
  bus.nack_batch(both, true);

  const auto m = collector.snapshot();
  CHECK(m.messages_published == 5);
  CHECK(m.messages_received == 2);
  CHECK(m.messages_acked == 1 + 2 + 1 + 2);
  CHECK(m.messages_nacked == 1 + 2 + 1 + 2);
  CHECK(m.error_count == 0);
}

TEST_CASE("sampled timing counts every call and times one in N", "[instrumented]") {
  MetricsCollector collector;
  test::LoopbackBus bus;
  auto wrapped = instrumented(bus, collector, InstrumentOptions{.time_every = 3});  // rounded up to 4
  wrapped.subscribe("t");
  for (int i = 0; i < 16; ++i) wrapped.publish("t", Message(std::string("m")));
  for (int i = 0; i < 16; ++i) REQUIRE(wrapped.try_receive());
  const auto m = collector.snapshot();
  CHECK(m.messages_published == 16);
  CHECK(m.publish_calls == 16);
  CHECK(m.publish_latency.count == 4);
  CHECK(m.messages_received == 16);
  CHECK(m.receive_latency.count == 4);
}
