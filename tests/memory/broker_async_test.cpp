#include <kincir/memory/async.hpp>  // async_receive
#include <kincir/memory/subscriber.hpp>

#include <algorithm>                        // std::count
#include <asio/bind_cancellation_slot.hpp>  // cancelling one receive
#include <asio/bind_executor.hpp>           // handler executors
#include <asio/cancellation_signal.hpp>     // cancelling one receive
#include <asio/co_spawn.hpp>                // coroutine test
#include <asio/detached.hpp>                // coroutine test
#include <asio/io_context.hpp>              // the executor
#include <asio/strand.hpp>                  // associated executor check
#include <asio/thread_pool.hpp>             // a multi-threaded executor
#include <asio/use_awaitable.hpp>           // coroutine test
#include <asio/use_future.hpp>              // future test
#include <chrono>                           // waits
#include <functional>                       // the receive loop
#include <future>                           // std::promise
#include <optional>                         // results
#include <string>                           // payloads
#include <thread>                           // io_context thread
#include <vector>                           // seen counts

#include <kincir/memory/broker.hpp>
#include <kincir/memory/publisher.hpp>

#include "memory/broker_test_support.hpp"
#include "support/catch.hpp"

using namespace std::chrono_literals;
using kincir::Message;
using kincir::test::quiet_config;
using namespace kincir::memory;

TEST_CASE("async_receive with a callback completes on the io_context, never inline", "[broker][async]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemorySubscriber subscriber(broker);
  subscriber.subscribe("t");
  publisher.publish("t", Message(std::string("ready")));

  asio::io_context io;
  bool inside_initiation = true;
  std::optional<std::string> got;
  std::error_code result = kincir::errc::timeout;
  subscriber.async_receive(asio::bind_executor(io, [&](std::error_code ec, const Message& m) {
    CHECK_FALSE(inside_initiation);
    CHECK(io.get_executor().running_in_this_thread());
    result = ec;
    got = std::string(m.payload.view());
  }));
  inside_initiation = false;
  CHECK_FALSE(got.has_value());
  io.run();
  CHECK_FALSE(result);
  CHECK(got == "ready");
}

TEST_CASE("async_receive waits for a publish from another thread", "[broker][async]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemorySubscriber subscriber(broker);
  subscriber.subscribe("t");

  asio::io_context io;
  auto strand = asio::make_strand(io);
  int received = 0;
  std::function<void()> next;
  next = [&] {
    subscriber.async_receive(asio::bind_executor(strand, [&](std::error_code ec, const Message& m) {
      REQUIRE_FALSE(ec);
      CHECK(strand.running_in_this_thread());
      CHECK(std::stoi(std::string(m.payload.view())) == received);
      if (++received < 200) next();
    }));
  };
  next();
  std::thread producer([&] {
    for (int i = 0; i < 200; ++i) {
      publisher.publish("t", Message(std::to_string(i)));
      if (i % 50 == 0) std::this_thread::sleep_for(2ms);
    }
  });
  io.run();
  producer.join();
  CHECK(received == 200);
}

// clang 14 with libstdc++ 12 has no coroutine support Asio recognises; g++ builds run this test.
#if defined(ASIO_HAS_CO_AWAIT)
TEST_CASE("async_receive works with use_future and use_awaitable", "[broker][async]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemorySubscriber subscriber(broker);
  subscriber.subscribe("t");
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });

  auto future = subscriber.async_receive(asio::bind_executor(io, asio::use_future));
  publisher.publish("t", Message(std::string("for the future")));
  CHECK(future.get().payload.view() == "for the future");

  std::promise<std::string> from_coroutine;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        Message m = co_await subscriber.async_receive(asio::use_awaitable);
        from_coroutine.set_value(std::string(m.payload.view()));
      },
      asio::detached);
  publisher.publish("t", Message(std::string("for the coroutine")));
  CHECK(from_coroutine.get_future().get() == "for the coroutine");

  guard.reset();
  runner.join();
}
#endif  // ASIO_HAS_CO_AWAIT

TEST_CASE("async_receive is cancellable and ends on shutdown", "[broker][async]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemorySubscriber subscriber(broker);
  subscriber.subscribe("t");
  asio::io_context io;

  asio::cancellation_signal signal;
  std::error_code cancelled;
  subscriber.async_receive(asio::bind_cancellation_slot(
      signal.slot(), asio::bind_executor(io, [&](std::error_code ec, const Message&) { cancelled = ec; })));
  io.poll();
  signal.emit(asio::cancellation_type::terminal);
  io.run();
  io.restart();
  CHECK(cancelled == asio::error::operation_aborted);

  // The subscription still works after a cancelled receive.
  std::error_code after_shutdown;
  int calls = 0;
  subscriber.async_receive(asio::bind_executor(io, [&](std::error_code ec, const Message&) {
    after_shutdown = ec;
    ++calls;
  }));
  io.poll();
  CHECK(calls == 0);
  broker.shutdown();
  io.run();
  CHECK(calls == 1);
  CHECK(after_shutdown == kincir::errc::broker_shutdown);
}

TEST_CASE("destroying a subscriber aborts its pending async_receive", "[broker][async]") {
  InMemoryBroker broker(quiet_config());
  asio::io_context io;
  std::error_code result;
  {
    InMemorySubscriber subscriber(broker);
    subscriber.subscribe("t");
    subscriber.async_receive(asio::bind_executor(io, [&](std::error_code ec, const Message&) { result = ec; }));
    io.poll();
  }
  io.run();
  CHECK(result == asio::error::operation_aborted);
  CHECK(broker.topic_info("t")->subscribers == 0);
}

TEST_CASE("async_receive on a multi-threaded executor delivers each message once", "[broker][async]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemorySubscriber subscriber(broker);
  subscriber.subscribe("t");
  constexpr int kCount = 2000;
  asio::thread_pool pool(2);
  std::vector<int> seen(kCount, 0);  // written only by the chain, one handler at a time
  std::promise<void> done;
  std::function<void()> next;
  int received = 0;
  next = [&] {
    subscriber.async_receive(asio::bind_executor(pool, [&](std::error_code ec, const Message& m) {
      if (ec) return done.set_value();
      ++seen[static_cast<std::size_t>(std::stoi(std::string(m.payload.view())))];
      if (++received == kCount) return done.set_value();
      next();
    }));
  };
  next();
  std::vector<std::thread> publishers;
  for (int p = 0; p < 2; ++p) {
    publishers.emplace_back([&, p] {
      for (int i = p; i < kCount; i += 2) {
        publisher.publish("t", Message(std::to_string(i)));
        if (i % 100 == 0) std::this_thread::sleep_for(1ms);
      }
    });
  }
  for (auto& t : publishers) t.join();
  done.get_future().wait();
  pool.join();
  CHECK(received == kCount);
  CHECK(std::count(seen.begin(), seen.end(), 1) == kCount);
}

TEST_CASE("a requeued delivery wakes a pending async_receive", "[broker][async][ack]") {
  InMemoryBroker broker(quiet_config());
  InMemoryPublisher publisher(broker);
  InMemoryAckSubscriber subscriber(broker);
  subscriber.subscribe("t");
  publisher.publish("t", Message(std::string("again")));
  auto d = subscriber.receive_with_ack();
  asio::io_context io;
  std::optional<std::string> got;
  subscriber.async_receive(asio::bind_executor(io, [&](std::error_code ec, const Message& m) {
    if (!ec) got = std::string(m.payload.view());
  }));
  io.poll();
  CHECK_FALSE(got.has_value());
  subscriber.nack(d.second, true);
  io.run_for(2s);
  CHECK(got == "again");
}
