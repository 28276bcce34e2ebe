#include <kincir/batch/publisher.hpp>

#include "support/catch.hpp"

#include <kincir/memory/broker.hpp>
#include <kincir/memory/publisher.hpp>
#include <kincir/memory/subscriber.hpp>

#include <algorithm>  // std::sort
#include <atomic>     // counting handler calls
#include <chrono>     // timeouts
#include <memory>     // std::make_shared
#include <string>     // payloads
#include <thread>     // concurrent adds
#include <utility>    // std::move
#include <vector>     // batches

#include "test_doubles.hpp"

using namespace std::chrono_literals;
using kincir::BatchPublisher;
using kincir::BatchPublisherOptions;
using kincir::Message;
using kincir::test::RecordingPublisher;
using kincir::test::text_message;

namespace {

std::vector<Message> numbered(int count, int from = 0) {
  std::vector<Message> out;
  for (int i = from; i < from + count; ++i) out.push_back(text_message(std::to_string(i)));
  return out;
}

std::vector<std::string> numbers(int count, int from = 0) {
  std::vector<std::string> out;
  for (int i = from; i < from + count; ++i) out.push_back(std::to_string(i));
  return out;
}

std::vector<std::string> payloads_of(const std::vector<Message>& messages) {
  std::vector<std::string> out;
  for (const auto& m : messages) out.emplace_back(m.payload.view());
  return out;
}

}  // namespace

TEST_CASE("publish_batch sends in chunks of batch_size, in order", "[batch][publisher]") {
  RecordingPublisher recorder;
  BatchPublisher batcher(recorder, 10, 0ms);
  static_assert(std::is_same_v<decltype(batcher), BatchPublisher<RecordingPublisher&>>);
  auto messages = numbered(25);
  const std::size_t sent = batcher.publish_batch("t", std::move(messages));
  CHECK(sent == 25);
  CHECK(messages.empty());  // NOLINT(bugprone-use-after-move): cleared on success
  CHECK(recorder.sizes() == std::vector<std::size_t>{10, 10, 5});
  CHECK(recorder.payloads() == numbers(25));
}

TEST_CASE("publish_batch over the in-memory broker delivers everything in order", "[batch][publisher]") {
  auto broker = std::make_shared<kincir::memory::InMemoryBroker>(kincir::memory::InMemoryBroker::with_default_config());
  kincir::memory::InMemorySubscriber subscriber(broker);
  subscriber.subscribe("batch-topic");
  BatchPublisher<kincir::memory::InMemoryPublisher> batcher(std::in_place, BatchPublisherOptions{7, 0ms, 0}, broker);
  CHECK(batcher.publish_batch("batch-topic", numbered(50)) == 50);
  std::vector<std::string> got;
  while (auto m = subscriber.try_receive()) got.emplace_back(m->payload.view());
  CHECK(got == numbers(50));
}

TEST_CASE("publish_batch failure leaves the unsent messages with the caller", "[batch][publisher]") {
  RecordingPublisher recorder;
  recorder.fail_after(1);  // the second chunk fails
  BatchPublisher batcher(recorder, 10, 0ms);
  auto messages = numbered(25);
  std::error_code ec;
  const std::size_t sent = batcher.publish_batch("t", std::move(messages), ec);
  CHECK(sent == 10);
  CHECK(ec == kincir::errc::queue_full);
  // NOLINTNEXTLINE(bugprone-use-after-move): on failure the vector holds the unsent messages
  CHECK(payloads_of(messages) == numbers(15, 10));  // exactly the unsent ones, in order
  CHECK(recorder.payloads() == numbers(10));

  SECTION("the throwing overload throws kincir::Error and also keeps them") {
    bool threw = false;
    try {
      batcher.publish_batch("t", std::move(messages));
    } catch (const kincir::Error&) {
      threw = true;
    }
    CHECK(threw);
    CHECK(payloads_of(messages) == numbers(15, 10));  // NOLINT(bugprone-use-after-move): the unsent ones
  }
  SECTION("a single-chunk failure leaves the batch untouched") {
    auto small = numbered(3);
    batcher.publish_batch("t", std::move(small), ec);
    CHECK(ec);
    CHECK(payloads_of(small) == numbers(3));  // NOLINT(bugprone-use-after-move): left as it was
  }
}

TEST_CASE("add flushes a topic when its buffer reaches batch_size", "[batch][publisher]") {
  RecordingPublisher recorder;
  BatchPublisher batcher(recorder, 5, 0ms);
  for (int i = 0; i < 4; ++i) batcher.add("a", text_message(std::to_string(i)));
  batcher.add("b", text_message("b0"));
  CHECK(recorder.calls() == 0);
  CHECK(batcher.pending() == 5);
  CHECK(batcher.pending("a") == 4);
  batcher.add("a", text_message("4"));  // fifth for "a": flushed by this call
  CHECK(recorder.sizes() == std::vector<std::size_t>{5});
  CHECK(recorder.payloads() == numbers(5));
  CHECK(batcher.pending("a") == 0);
  CHECK(batcher.pending("b") == 1);
  batcher.flush();
  CHECK(recorder.payloads().back() == "b0");
  CHECK(recorder.topics().back() == "b");
  CHECK(batcher.pending() == 0);
}

TEST_CASE("the timer flushes an old buffer without further adds", "[batch][publisher][concurrency]") {
  RecordingPublisher recorder;
  BatchPublisher batcher(recorder, 100, 20ms);
  batcher.add("t", text_message("0"));
  batcher.add("t", text_message("1"));
  batcher.add("t", text_message("2"));
  REQUIRE(recorder.wait_for_messages(3));
  CHECK(recorder.payloads() == numbers(3));
  CHECK(batcher.pending() == 0);
  // And again for a second round: the timer keeps working after going idle.
  batcher.add("u", text_message("3"));
  REQUIRE(recorder.wait_for_messages(4));
  CHECK(recorder.topics().back() == "u");
}

TEST_CASE("destruction flushes what is buffered", "[batch][publisher]") {
  RecordingPublisher recorder;
  {
    BatchPublisher batcher(recorder, 100, 1h);
    for (int i = 0; i < 3; ++i) batcher.add("t", text_message(std::to_string(i)));
    batcher.add("u", text_message("3"));
    CHECK(recorder.calls() == 0);
  }
  auto payloads = recorder.payloads();
  std::sort(payloads.begin(), payloads.end());
  CHECK(payloads == numbers(4));
}

TEST_CASE("add reports a failed flush and keeps the messages", "[batch][publisher]") {
  RecordingPublisher recorder;
  recorder.set_failing(true);
  BatchPublisher batcher(recorder, 2, 0ms);
  std::error_code ec;
  batcher.add("t", text_message("0"), ec);
  CHECK(!ec);
  batcher.add("t", text_message("1"), ec);  // reaches batch_size: flush fails
  CHECK(ec == kincir::errc::queue_full);
  CHECK(batcher.pending("t") == 2);
  CHECK_THROWS_AS(batcher.flush(), kincir::Error);
  CHECK(batcher.pending("t") == 2);

  SECTION("the messages go out, in order, once the publisher recovers") {
    recorder.set_failing(false);
    batcher.add("t", text_message("2"), ec);  // three buffered >= batch_size: flushed
    CHECK(!ec);
    CHECK(recorder.payloads() == numbers(3));
  }
  SECTION("take_pending hands them back") {
    auto taken = batcher.take_pending("t");
    CHECK(payloads_of(taken) == numbers(2));
    CHECK(batcher.pending() == 0);
    recorder.set_failing(false);  // nothing left for the destructor
  }
}

TEST_CASE("add refuses a message when max_buffered are stuck", "[batch][publisher]") {
  RecordingPublisher recorder;
  recorder.set_failing(true);
  BatchPublisher batcher(recorder, BatchPublisherOptions{2, 0ms, 4});
  std::error_code ec;
  for (int i = 0; i < 4; ++i) batcher.add("t", text_message(std::to_string(i)), ec);
  CHECK(batcher.pending("t") == 4);
  Message fifth = text_message("4");
  batcher.add("t", std::move(fifth), ec);
  CHECK(ec == kincir::errc::queue_full);
  CHECK(fifth.payload.view() == "4");  // NOLINT(bugprone-use-after-move): not accepted, still the caller's
  CHECK(batcher.pending("t") == 4);
  recorder.set_failing(false);
  batcher.add("t", std::move(fifth), ec);  // NOLINT(bugprone-use-after-move): it was not taken
  CHECK(!ec);
  batcher.flush();
  CHECK(recorder.payloads() == numbers(5));
}

TEST_CASE("a failing timer flush is reported and retried; nothing is lost", "[batch][publisher][concurrency]") {
  RecordingPublisher recorder;
  recorder.set_failing(true, kincir::errc::broker_shutdown);
  BatchPublisher batcher(recorder, 100, 10ms);
  std::atomic<int> reports{0};
  std::atomic<std::size_t> reported_unsent{0};
  batcher.set_error_handler([&](std::error_code ec, std::string_view topic, std::vector<Message>& unsent) {
    if (ec == kincir::errc::broker_shutdown && topic == "t") reported_unsent.store(unsent.size());
    reports.fetch_add(1);
  });
  batcher.add("t", text_message("0"));
  batcher.add("t", text_message("1"));
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (reports.load() < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  REQUIRE(reports.load() >= 2);  // retried one timeout after the first failure
  CHECK(reported_unsent.load() == 2);
  CHECK(batcher.last_error() == kincir::errc::broker_shutdown);
  CHECK(batcher.pending("t") == 2);
  recorder.set_failing(false);
  REQUIRE(recorder.wait_for_messages(2));
  CHECK(recorder.payloads() == numbers(2));
}

TEST_CASE("destruction hands unsendable messages to the error handler", "[batch][publisher]") {
  RecordingPublisher recorder;
  recorder.set_failing(true);
  std::vector<Message> rescued;
  {
    BatchPublisher batcher(recorder, 100, 1h);
    batcher.set_error_handler(
        [&](std::error_code, std::string_view, std::vector<Message>& unsent) { rescued = std::move(unsent); });
    for (int i = 0; i < 3; ++i) batcher.add("t", text_message(std::to_string(i)));
  }
  CHECK(payloads_of(rescued) == numbers(3));
}

TEST_CASE("concurrent adds keep every message and each thread's order", "[batch][publisher][concurrency]") {
  auto broker = std::make_shared<kincir::memory::InMemoryBroker>(kincir::memory::InMemoryBroker::with_default_config());
  kincir::memory::InMemorySubscriber subscriber(broker);
  subscriber.subscribe("t");
  constexpr int kThreads = 4;
  constexpr int kPerThread = 1000;
  {
    BatchPublisher<kincir::memory::InMemoryPublisher> batcher(std::in_place, BatchPublisherOptions{64, 1ms, 0}, broker);
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&batcher, t] {
        for (int i = 0; i < kPerThread; ++i)
          batcher.add("t", text_message(std::to_string(t) + ":" + std::to_string(i)));
      });
    }
  }
  std::vector<int> next(kThreads, 0);
  int total = 0;
  while (auto m = subscriber.try_receive()) {
    const auto text = std::string(m->payload.view());
    const auto colon = text.find(':');
    const int t = std::stoi(text.substr(0, colon));
    const int i = std::stoi(text.substr(colon + 1));
    CHECK(i == next[static_cast<std::size_t>(t)]);
    next[static_cast<std::size_t>(t)] = i + 1;
    ++total;
  }
  CHECK(total == kThreads * kPerThread);
}
