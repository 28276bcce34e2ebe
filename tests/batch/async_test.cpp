#include <kincir/async.hpp>

#include "support/catch.hpp"

#include <asio/bind_executor.hpp>
#include <asio/io_context.hpp>
#include <asio/thread_pool.hpp>

#include <algorithm>     // std::all_of
#include <atomic>        // in-flight high-water marks
#include <chrono>        // sleeps
#include <stdexcept>     // a throwing handler
#include <string>        // payloads
#include <system_error>  // std::error_code
#include <thread>        // producers, consumers
#include <utility>       // std::move
#include <vector>        // messages

#include "test_doubles.hpp"

using namespace std::chrono_literals;
using kincir::AsyncMessageProcessor;
using kincir::Message;
using kincir::test::numbered;
using kincir::test::text_message;

namespace {

/// Tracks calls in flight and the most ever seen at once.
struct InFlight {
  std::atomic<int> now{0};
  std::atomic<int> high{0};

  void enter() {
    const int n = now.fetch_add(1, std::memory_order_acq_rel) + 1;
    int seen = high.load(std::memory_order_relaxed);
    while (n > seen && !high.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
    }
  }
  void leave() { now.fetch_sub(1, std::memory_order_acq_rel); }
};

}  // namespace

TEST_CASE("channel: messages come out in order; try_send fails when full", "[async][channel]") {
  AsyncMessageProcessor channel(2);
  CHECK(channel.capacity() == 2);
  channel.send_message(text_message("a"));
  CHECK(channel.try_send(text_message("b")));
  Message c = text_message("c");
  std::error_code ec;
  const bool sent = channel.try_send(std::move(c), ec);
  CHECK_FALSE(sent);
  CHECK(ec == kincir::errc::queue_full);
  CHECK(c.payload.view() == "c");  // NOLINT(bugprone-use-after-move): refused, still the caller's
  CHECK(channel.size() == 2);
  CHECK(channel.receive().payload.view() == "a");
  CHECK(channel.try_receive()->payload.view() == "b");
  CHECK_FALSE(channel.try_receive().has_value());
}

TEST_CASE("channel: close wakes blocked producers, consumers drain then see closed", "[async][channel][concurrency]") {
  AsyncMessageProcessor channel(1);
  channel.send_message(text_message("buffered"));
  constexpr int kProducers = 3;
  std::vector<std::error_code> results(kProducers);
  std::vector<std::string> kept(kProducers);
  std::atomic<int> started{0};
  std::vector<std::thread> producers;
  producers.reserve(kProducers);
  for (int i = 0; i < kProducers; ++i) {
    producers.emplace_back([&, i] {
      Message m = text_message("p" + std::to_string(i));
      started.fetch_add(1);
      channel.send_message(std::move(m), results[static_cast<std::size_t>(i)]);
      kept[static_cast<std::size_t>(i)] = std::string(m.payload.view());  // NOLINT(bugprone-use-after-move)
    });
  }
  while (started.load() < kProducers) std::this_thread::yield();
  std::this_thread::sleep_for(20ms);  // let them block on the full channel
  channel.close();
  for (auto& t : producers) t.join();
  for (int i = 0; i < kProducers; ++i) {
    CHECK(results[static_cast<std::size_t>(i)] == kincir::errc::closed);
    CHECK(kept[static_cast<std::size_t>(i)] == "p" + std::to_string(i));  // the message stayed with its sender
  }
  std::error_code ec;
  CHECK(channel.receive(ec).payload.view() == "buffered");
  CHECK(!ec);
  channel.receive(ec);
  CHECK(ec == kincir::errc::closed);
  CHECK_THROWS_AS(channel.send_message(text_message("late")), kincir::Error);
}

TEST_CASE("channel: several producers, process_messages sees every message once", "[async][channel][concurrency]") {
  AsyncMessageProcessor channel(8);
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 500;
  std::vector<int> seen(static_cast<std::size_t>(kProducers) * kPerProducer, 0);
  std::size_t processed = 0;
  std::thread consumer([&] {
    processed = channel.process_messages([&](Message&& m) { ++seen[std::stoul(std::string(m.payload.view()))]; });
  });
  {
    std::vector<std::jthread> producers;
    producers.reserve(kProducers);
    for (int p = 0; p < kProducers; ++p) {
      producers.emplace_back([&channel, p] {
        for (int i = 0; i < kPerProducer; ++i) channel.send_message(text_message(std::to_string(p * kPerProducer + i)));
      });
    }
  }
  channel.close();
  consumer.join();
  CHECK(processed == static_cast<std::size_t>(kProducers) * kPerProducer);
  CHECK(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
}

TEST_CASE("channel: process_messages stops at the first error the handler returns", "[async][channel]") {
  AsyncMessageProcessor channel(4);
  for (auto& m : numbered(4)) channel.send_message(std::move(m));
  channel.close();
  std::error_code ec;
  const auto n = channel.process_messages(
      [](Message&& m) -> std::error_code {
        if (m.payload.view() == "2") return kincir::errc::invalid_argument;
        return {};
      },
      ec);
  CHECK(n == 2);
  CHECK(ec == kincir::errc::invalid_argument);
  CHECK(channel.size() == 1);  // "3" is still there
}

TEST_CASE("channel: async_send and async_receive complete through the executor", "[async][channel][asio]") {
  asio::io_context io;
  AsyncMessageProcessor channel(1);

  // A receive waiting for a message gets it handed over directly.
  std::error_code receive_ec = kincir::errc::timeout;
  std::string received;
  channel.async_receive(asio::bind_executor(io, [&](std::error_code ec, const Message& m) {
    receive_ec = ec;
    received = std::string(m.payload.view());
  }));
  std::error_code send_ec = kincir::errc::timeout;
  channel.async_send(text_message("hello"), asio::bind_executor(io, [&](std::error_code ec) { send_ec = ec; }));
  CHECK(received.empty());  // never inside the initiating call
  io.run();
  io.restart();
  CHECK(!receive_ec);
  CHECK(received == "hello");
  CHECK(!send_ec);

  // A send into a full channel waits for room.
  channel.send_message(text_message("first"));
  bool second_done = false;
  channel.async_send(text_message("second"), asio::bind_executor(io, [&](std::error_code ec) {
                       CHECK(!ec);
                       second_done = true;
                     }));
  io.poll();
  io.restart();
  CHECK_FALSE(second_done);
  CHECK(channel.receive().payload.view() == "first");
  io.run();
  io.restart();
  CHECK(second_done);
  CHECK(channel.receive().payload.view() == "second");

  // Close completes a waiting receive with `closed`.
  channel.async_receive(asio::bind_executor(io, [&](std::error_code ec, const Message&) { receive_ec = ec; }));
  channel.close();
  io.run();
  CHECK(receive_ec == kincir::errc::closed);
}

TEST_CASE("channel: close fails a waiting async_send", "[async][channel][asio]") {
  asio::io_context io;
  AsyncMessageProcessor channel(1);
  channel.send_message(text_message("full"));
  std::error_code ec;
  channel.async_send(text_message("waiting"), asio::bind_executor(io, [&](std::error_code e) { ec = e; }));
  channel.close();
  io.run();
  CHECK(ec == kincir::errc::closed);
  CHECK(channel.receive().payload.view() == "full");
}

TEST_CASE("process_messages_parallel never exceeds its concurrency", "[async][parallel][concurrency]") {
  InFlight in_flight;
  std::atomic<int> sum{0};
  const auto outcome = kincir::process_messages_parallel(numbered(200), 3, [&](Message&& m) {
    in_flight.enter();
    sum.fetch_add(std::stoi(std::string(m.payload.view())), std::memory_order_relaxed);
    std::this_thread::sleep_for(100us);
    in_flight.leave();
  });
  CHECK(outcome.succeeded == 200);
  CHECK(outcome.failed == 0);
  CHECK(sum.load() == 199 * 200 / 2);
  CHECK(in_flight.high.load() >= 1);
  CHECK(in_flight.high.load() <= 3);
}

TEST_CASE("process_messages_parallel on an Asio executor never exceeds its concurrency",
          "[async][parallel][concurrency][asio]") {
  asio::thread_pool pool(4);
  InFlight in_flight;
  std::atomic<int> count{0};
  std::error_code ec;
  const auto outcome = kincir::process_messages_parallel(
      pool.get_executor(), numbered(200), 2,
      [&](Message&&) -> std::error_code {
        in_flight.enter();
        count.fetch_add(1, std::memory_order_relaxed);
        std::this_thread::sleep_for(100us);
        in_flight.leave();
        return {};
      },
      ec);
  pool.join();
  CHECK(!ec);
  CHECK(outcome.succeeded == 200);
  CHECK(count.load() == 200);
  CHECK(in_flight.high.load() <= 2);
}

TEST_CASE("process_messages_parallel reports the first error after started work finished",
          "[async][parallel][concurrency]") {
  std::atomic<int> running{0};
  std::error_code ec;
  const auto outcome = kincir::process_messages_parallel(
      numbered(1000), 4,
      [&](Message&& m) -> std::error_code {
        running.fetch_add(1);
        std::this_thread::sleep_for(50us);
        running.fetch_sub(1);
        if (m.payload.view() == "10") return kincir::errc::invalid_argument;
        return {};
      },
      ec);
  CHECK(ec == kincir::errc::invalid_argument);
  CHECK(outcome.failed == 1);
  CHECK(outcome.succeeded + outcome.failed + outcome.not_started == 1000);
  CHECK(outcome.not_started > 0);  // it stopped starting work
  CHECK(running.load() == 0);      // everything started had finished by the return

  SECTION("the throwing overload throws the handler's own exception") {
    CHECK_THROWS_AS(kincir::process_messages_parallel(numbered(20), 4,
                                                      [](Message&& m) {
                                                        if (m.payload.view() == "5") throw std::out_of_range("5");
                                                      }),
                    std::out_of_range);
  }
  SECTION("the error-code overload reports another exception as handler_exception and keeps it") {
    std::error_code thrown;
    auto failed = kincir::process_messages_parallel(
        numbered(20), 4,
        [](Message&& m) {
          if (m.payload.view() == "5") throw std::out_of_range("5");
        },
        thrown);
    CHECK(thrown == kincir::errc::handler_exception);
    CHECK(failed.failed == 1);
    CHECK_THROWS_AS(std::rethrow_exception(failed.exception), std::out_of_range);
  }
  SECTION("and kincir::Error for a returned error") {
    CHECK_THROWS_AS(kincir::process_messages_parallel(
                        numbered(20), 2, [](Message&&) -> std::error_code { return kincir::errc::closed; }),
                    kincir::Error);
  }
}
