#include <kincir/core/concepts.hpp>

#include <string>  // payloads
#include <vector>  // batches

#include "core/archetypes.hpp"
#include "support/catch.hpp"

using namespace kincir;

static_assert(Publisher<test::LoopbackBus>);
static_assert(Subscriber<test::LoopbackBus>);
static_assert(AckSubscriber<test::LoopbackBus>);
static_assert(AsyncPublisher<test::LoopbackBus>);
static_assert(AsyncSubscriber<test::LoopbackBus>);
static_assert(AckHandle<BasicAckHandle>);

static_assert(!Publisher<int>);
static_assert(!Subscriber<std::vector<Message>>);
static_assert(!AckHandle<Message>);

namespace {

// Generic code written against the concepts only, as batching and metrics are.
template <Publisher P>
std::error_code publish_all(P& publisher, std::string_view topic, std::vector<Message> batch) {
  std::error_code ec;
  publisher.publish(topic, std::move(batch), ec);
  return ec;
}

template <AckSubscriber S>
std::size_t drain_and_ack(S& subscriber) {
  std::size_t n = 0;
  while (subscriber.try_receive()) ++n;
  return n;
}

}  // namespace

TEST_CASE("generic code runs over a type modelling the concepts", "[concepts]") {
  test::LoopbackBus bus;
  bus.subscribe("t");
  std::vector<Message> batch;
  batch.emplace_back(std::string("a"));
  batch.emplace_back(std::string("b"));
  const std::error_code ec = publish_all(bus, "t", std::move(batch));
  CHECK_FALSE(ec);
  CHECK(drain_and_ack(bus) == 2);
  CHECK(publish_all(bus, "", {}) == errc::invalid_topic);
}

TEST_CASE("BasicAckHandle reports its delivery", "[concepts]") {
  const auto now = BasicAckHandle::clock::now();
  const Uuid id = Uuid::new_v4();
  const BasicAckHandle first("orders", id, 1, now, 42);
  CHECK(first.topic() == "orders");
  CHECK(first.message_id() == id);
  CHECK(first.delivery_count() == 1);
  CHECK_FALSE(first.is_retry());
  CHECK(first.timestamp() == now);
  CHECK(first.tag() == 42);
  CHECK(BasicAckHandle("orders", id, 2, now, 43).is_retry());
}
