// InMemoryAckSubscriber::async_receive_with_ack: completion, the ack window, cancellation (a
// delivery is never lost nor taken twice), deliveries whose handler never runs, delayed requeues.
#include <kincir/memory/async.hpp>  // async_receive_with_ack
#include <kincir/memory/subscriber.hpp>

#include <algorithm>                        // std::max
#include <asio/bind_cancellation_slot.hpp>  // cancelling one receive
#include <asio/bind_executor.hpp>           // handler executors
#include <asio/cancellation_signal.hpp>     // cancelling one receive
#include <asio/co_spawn.hpp>                // coroutine test
#include <asio/detached.hpp>                // coroutine test
#include <asio/executor_work_guard.hpp>     // keeps the runner's io_context going
#include <asio/io_context.hpp>              // the executor
#include <asio/use_awaitable.hpp>           // coroutine test
#include <asio/use_future.hpp>              // future test
#include <atomic>                           // the publisher's progress
#include <chrono>                           // waits
#include <future>                           // results from the runner thread
#include <optional>                         // results
#include <set>                              // numbers seen
#include <string>                           // payloads
#include <thread>                           // io_context and publisher threads
#include <tuple>                            // use_future's result
#include <vector>                           // handles

#include <kincir/memory/broker.hpp>
#include <kincir/memory/publisher.hpp>

#include "memory/broker_test_support.hpp"
#include "support/catch.hpp"

using namespace std::chrono_literals;
using kincir::BasicAckHandle;
using kincir::Message;
using kincir::test::number;
using kincir::test::quiet_config;
using kincir::test::text;
using namespace kincir::memory;

static_assert(kincir::AsyncAckSubscriber<InMemoryAckSubscriber>);
static_assert(!kincir::AsyncAckSubscriber<InMemorySubscriber>);  // no acks, no async_receive_with_ack

namespace {

/// What one async_receive_with_ack completed with.
struct AckDelivery {
  std::error_code ec;
  Message message;
  BasicAckHandle handle;
  int calls = 0;
};

auto record_into(AckDelivery& out) {
  return [&out](std::error_code ec, Message m, BasicAckHandle h) {
    out.ec = ec;
    out.message = std::move(m);
    out.handle = std::move(h);
    ++out.calls;
  };
}

}  // namespace

TEST_CASE("async_receive_with_ack completes with the message and a handle to settle", "[broker][async][ack]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemoryAckSubscriber subscriber(broker);
  subscriber.subscribe("t");
  publisher.publish("t", text("ready"));

  asio::io_context io;
  AckDelivery got;
  bool inside_initiation = true;
  subscriber.async_receive_with_ack(asio::bind_executor(io, [&](std::error_code ec, Message m, BasicAckHandle h) {
    CHECK_FALSE(inside_initiation);
    record_into(got)(ec, std::move(m), std::move(h));
  }));
  inside_initiation = false;
  CHECK(got.calls == 0);
  io.run();
  REQUIRE(got.calls == 1);
  CHECK_FALSE(got.ec);
  CHECK(got.message.payload.view() == "ready");
  CHECK(got.handle.topic() == "t");
  CHECK(got.handle.message_id() == got.message.uuid);
  CHECK(got.handle.delivery_count() == 1);
  CHECK(broker.topic_info("t")->subscriber_info.at(0).unacked == 1);  // outstanding until settled

  subscriber.nack(got.handle, true);  // redelivered, to the next asynchronous receive too
  AckDelivery again;
  subscriber.async_receive_with_ack(asio::bind_executor(io, record_into(again)));
  io.restart();
  io.run();
  REQUIRE(again.calls == 1);
  CHECK(again.message.uuid == got.message.uuid);
  CHECK(again.handle.delivery_count() == 2);
  subscriber.ack(again.handle);
  std::error_code ec;
  subscriber.ack(again.handle, ec);
  CHECK(ec == kincir::errc::unknown_delivery);
  CHECK(broker.topic_info("t")->subscriber_info.at(0).unacked == 0);
}

TEST_CASE("async_receive_with_ack waits for a publish and reports terminal errors", "[broker][async][ack]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemoryAckSubscriber subscriber(broker);
  asio::io_context io;

  AckDelivery unsubscribed;
  subscriber.async_receive_with_ack(asio::bind_executor(io, record_into(unsubscribed)));
  io.run();
  CHECK(unsubscribed.ec == kincir::errc::not_subscribed);

  subscriber.subscribe("t");
  AckDelivery later;
  subscriber.async_receive_with_ack(asio::bind_executor(io, record_into(later)));
  io.restart();
  io.poll();
  CHECK(later.calls == 0);
  std::thread producer([&] { publisher.publish("t", text("later")); });
  io.run();
  producer.join();
  REQUIRE(later.calls == 1);
  CHECK(later.message.payload.view() == "later");
  subscriber.ack(later.handle);

  AckDelivery at_shutdown;
  subscriber.async_receive_with_ack(asio::bind_executor(io, record_into(at_shutdown)));
  io.restart();
  io.poll();
  broker.shutdown();
  io.run();
  CHECK(at_shutdown.ec == kincir::errc::broker_shutdown);
  CHECK(at_shutdown.handle.delivery_count() == 0);  // nothing delivered: an empty handle
}

TEST_CASE("async_receive_with_ack waits while the ack window is full", "[broker][async][ack]") {
  BrokerConfig c = quiet_config();
  c.max_unacked = 2;
  InMemoryBroker broker(c);
  InMemoryPublisher publisher(broker);
  InMemoryAckSubscriber subscriber(broker);
  subscriber.subscribe("t");
  publisher.publish("t", kincir::test::numbered(3));
  asio::io_context io;

  AckDelivery first;
  AckDelivery second;
  subscriber.async_receive_with_ack(asio::bind_executor(io, record_into(first)));
  io.run();
  io.restart();
  subscriber.async_receive_with_ack(asio::bind_executor(io, record_into(second)));
  io.run();
  io.restart();
  REQUIRE(first.calls + second.calls == 2);

  AckDelivery third;
  subscriber.async_receive_with_ack(asio::bind_executor(io, record_into(third)));
  io.poll();
  CHECK(third.calls == 0);  // the message is there, the window is not
  CHECK(broker.topic_info("t")->subscriber_info.at(0).lag == 1);
  std::thread settler([&] { subscriber.ack(first.handle); });  // from another thread
  io.run();
  settler.join();
  REQUIRE(third.calls == 1);
  CHECK_FALSE(third.ec);
  CHECK(number(third.message) == 2);

  // A shutdown opens a full window: the pending receive ends instead of waiting for ever.
  AckDelivery fourth;
  subscriber.async_receive_with_ack(asio::bind_executor(io, record_into(fourth)));
  io.restart();
  io.poll();
  CHECK(fourth.calls == 0);
  broker.shutdown();
  io.run();
  CHECK(fourth.ec == kincir::errc::broker_shutdown);
}

TEST_CASE("cancelling async_receive_with_ack before a delivery takes nothing", "[broker][async][ack]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemoryAckSubscriber subscriber(broker);
  subscriber.subscribe("t");
  asio::io_context io;

  asio::cancellation_signal signal;
  AckDelivery cancelled;
  subscriber.async_receive_with_ack(
      asio::bind_cancellation_slot(signal.slot(), asio::bind_executor(io, record_into(cancelled))));
  io.poll();
  signal.emit(asio::cancellation_type::terminal);
  io.run();
  REQUIRE(cancelled.calls == 1);
  CHECK(cancelled.ec == asio::error::operation_aborted);
  CHECK(cancelled.handle.delivery_count() == 0);

  publisher.publish("t", text("after"));
  auto d = subscriber.receive_with_ack();
  CHECK(d.first.payload.view() == "after");
  CHECK(d.second.delivery_count() == 1);  // never delivered before
  subscriber.ack(d.second);
}

TEST_CASE("a cancellation after async_receive_with_ack took a delivery is too late", "[broker][async][ack]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemoryAckSubscriber subscriber(broker);
  subscriber.subscribe("t");
  publisher.publish("t", text("taken"));
  asio::io_context io;

  asio::cancellation_signal signal;
  AckDelivery got;
  // The message is there: the initiating call takes it and posts the completion...
  subscriber.async_receive_with_ack(
      asio::bind_cancellation_slot(signal.slot(), asio::bind_executor(io, record_into(got))));
  // ...so this cancellation, before the handler ran, finds the operation done.
  signal.emit(asio::cancellation_type::terminal);
  io.run();
  REQUIRE(got.calls == 1);
  CHECK_FALSE(got.ec);
  CHECK(got.message.payload.view() == "taken");
  subscriber.ack(got.handle);
  CHECK_FALSE(subscriber.try_receive().has_value());
  CHECK(broker.topic_info("t")->subscriber_info.at(0).unacked == 0);
}

TEST_CASE("cancellations racing publishes never lose or duplicate a delivery", "[broker][async][ack]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemoryAckSubscriber subscriber(broker);
  subscriber.subscribe("t");
  constexpr int kCount = 500;

  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  std::atomic<bool> published{false};
  std::thread producer([&] {
    for (int i = 0; i < kCount; ++i) {
      publisher.publish("t", text(std::to_string(i)));
      if (i % 8 == 0) std::this_thread::yield();
    }
    published = true;
  });

  std::multiset<int> seen;
  int aborted = 0;
  std::uint32_t max_count = 0;
  const auto give_up = std::chrono::steady_clock::now() + 60s;  // a lost delivery ends the loop here
  // Each receive is cancelled right after it starts, from this thread, while the runner attempts
  // it and the producer publishes: the cancellation lands before, during or after a take.
  while ((!published.load() || seen.size() < static_cast<std::size_t>(kCount)) &&
         std::chrono::steady_clock::now() < give_up) {
    asio::cancellation_signal signal;
    std::promise<AckDelivery> result;
    subscriber.async_receive_with_ack(asio::bind_cancellation_slot(
        signal.slot(), asio::bind_executor(io, [&result](std::error_code ec, Message m, BasicAckHandle h) {
          result.set_value(AckDelivery{ec, std::move(m), std::move(h), 1});
        })));
    signal.emit(asio::cancellation_type::terminal);
    AckDelivery d = result.get_future().get();
    if (d.ec == asio::error::operation_aborted) {
      ++aborted;
      CHECK(d.handle.delivery_count() == 0);
      if (published.load()) {  // whatever is left arrives without a cancellation racing it
        auto rest = subscriber.receive_with_ack_for(10ms);
        if (!rest) continue;
        seen.insert(number(rest->first));
        max_count = std::max(max_count, rest->second.delivery_count());
        subscriber.ack(rest->second);
      }
      continue;
    }
    REQUIRE_FALSE(d.ec);
    seen.insert(number(d.message));
    max_count = std::max(max_count, d.handle.delivery_count());
    subscriber.ack(d.handle);
  }
  producer.join();
  guard.reset();
  runner.join();

  CHECK(seen.size() == static_cast<std::size_t>(kCount));
  for (int i = 0; i < kCount; ++i) CHECK(seen.count(i) == 1);
  CHECK(max_count == 1);  // nothing was taken, dropped by a cancellation and redelivered
  const auto info = broker.topic_info("t");
  CHECK(info->subscriber_info.at(0).unacked == 0);
  CHECK(info->dropped == 0);
  INFO("receives cancelled before they took anything: " << aborted);
}

TEST_CASE("a delivery whose handler never ran goes back to the group when its member leaves", "[broker][async][ack]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemoryAckSubscriber gone(broker);
  InMemoryAckSubscriber other(broker);
  gone.subscribe("t", "workers");
  other.subscribe("t", "workers");
  publisher.publish("t", text("orphan"));
  {
    asio::io_context io;
    int calls = 0;
    gone.async_receive_with_ack(
        asio::bind_executor(io, [&](std::error_code, const Message&, const BasicAckHandle&) { ++calls; }));
    CHECK(calls == 0);
    CHECK(broker.topic_info("t")->subscriber_info.at(0).unacked +
              broker.topic_info("t")->subscriber_info.at(1).unacked ==
          1);
  }  // destroyed with the completion still queued: the handler never runs
  gone.unsubscribe();
  auto d = other.receive_with_ack_for(2s);
  REQUIRE(d.has_value());
  CHECK(d->first.payload.view() == "orphan");
  CHECK(d->second.delivery_count() == 2);
  other.ack(d->second);
}

TEST_CASE("a delayed requeue wakes a pending async_receive_with_ack when it is due", "[broker][async][ack]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemoryAckSubscriber subscriber(broker);
  SubscriptionOptions options;
  options.requeue_delay = 30ms;
  subscriber.subscribe("t", options);
  publisher.publish("t", text("retry me"));
  auto first = subscriber.receive_with_ack();
  const auto nacked = std::chrono::steady_clock::now();
  subscriber.nack(first.second, true);

  asio::io_context io;
  AckDelivery again;
  subscriber.async_receive_with_ack(asio::bind_executor(io, record_into(again)));
  io.run_for(5s);  // nothing publishes: only the broker's delayed wake can complete it
  REQUIRE(again.calls == 1);
  CHECK_FALSE(again.ec);
  CHECK(std::chrono::steady_clock::now() - nacked >= 30ms);  // not before its delay
  CHECK(again.message.uuid == first.first.uuid);
  CHECK(again.handle.delivery_count() == 2);
  subscriber.ack(again.handle);
}

// clang 14 with libstdc++ 12 has no coroutine support Asio recognises; g++ builds run this test.
#if defined(ASIO_HAS_CO_AWAIT)
TEST_CASE("async_receive_with_ack works with use_future and use_awaitable", "[broker][async][ack]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemoryAckSubscriber subscriber(broker);
  subscriber.subscribe("t");
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });

  auto future = subscriber.async_receive_with_ack(asio::bind_executor(io, asio::use_future));
  publisher.publish("t", text("for the future"));
  auto [message, handle] = future.get();
  CHECK(message.payload.view() == "for the future");
  subscriber.ack(handle);

  std::promise<std::uint32_t> from_coroutine;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto [m, h] = co_await subscriber.async_receive_with_ack(asio::use_awaitable);
        subscriber.ack(h);
        from_coroutine.set_value(h.delivery_count());
      },
      asio::detached);
  publisher.publish("t", text("for the coroutine"));
  CHECK(from_coroutine.get_future().get() == 1);

  guard.reset();
  runner.join();
}
#endif  // ASIO_HAS_CO_AWAIT
