#include <kincir/batch/processor.hpp>

#include "support/catch.hpp"

#include <kincir/memory/broker.hpp>
#include <kincir/memory/publisher.hpp>
#include <kincir/memory/subscriber.hpp>

#include <algorithm>     // std::sort
#include <atomic>        // counting receives
#include <chrono>        // timeouts
#include <memory>        // std::make_shared
#include <optional>      // receive_for results
#include <stdexcept>     // a failing handler
#include <stop_token>    // std::stop_source
#include <string>        // payloads
#include <system_error>  // std::error_code
#include <thread>        // the processing thread
#include <utility>       // std::move
#include <vector>        // batches

#include "test_doubles.hpp"

using namespace std::chrono_literals;
using kincir::BatchErrorPolicy;
using kincir::BatchProcessor;
using kincir::BatchProcessorOptions;
using kincir::Message;
using kincir::memory::InMemoryBroker;
using kincir::memory::InMemoryPublisher;
using kincir::test::payloads_of;
using kincir::test::text_message;

namespace {

std::shared_ptr<InMemoryBroker> make_broker() {
  return std::make_shared<InMemoryBroker>(InMemoryBroker::with_default_config());
}

void publish_numbered(const std::shared_ptr<InMemoryBroker>& broker, int count, const std::string& topic = "t") {
  InMemoryPublisher publisher(broker);
  std::vector<Message> batch;
  for (int i = 0; i < count; ++i) batch.push_back(text_message(std::to_string(i)));
  publisher.publish(topic, std::move(batch));
}

/// What most tests start from: a broker, and a processor over a new `Sub` of it (owned, made in
/// place) subscribed to topic "t", where `published` numbered messages ("0", "1", ...) wait.
template <class Sub>
struct ProcessorOnTopic {
  ProcessorOnTopic(BatchProcessorOptions options, int published)
      : broker(make_broker()), processor(std::in_place, options, broker) {
    processor.subscribe("t");
    if (published > 0) publish_numbered(broker, published);
  }

  std::shared_ptr<InMemoryBroker> broker;
  BatchProcessor<Sub> processor;
};

using PlainProcessor = ProcessorOnTopic<kincir::memory::InMemorySubscriber>;
using AckProcessor = ProcessorOnTopic<kincir::memory::InMemoryAckSubscriber>;

/// Forwards to an in-memory subscriber and counts what `receive_for` returned. Has only the
/// throwing `receive_for`, so the processor's fallback path is exercised too.
class CountingSubscriber {
 public:
  explicit CountingSubscriber(kincir::memory::InMemorySubscriber& inner) : inner_(inner) {}
  void subscribe(std::string_view topic) { inner_.subscribe(topic); }
  void subscribe(std::string_view topic, std::error_code& ec) { inner_.subscribe(topic, ec); }
  Message receive() { return inner_.receive(); }
  Message receive(std::error_code& ec) { return inner_.receive(ec); }
  std::optional<Message> try_receive() { return inner_.try_receive(); }
  template <class Rep, class Period>
  std::optional<Message> receive_for(std::chrono::duration<Rep, Period> timeout) {
    auto m = inner_.receive_for(timeout);
    if (m) received.fetch_add(1);
    return m;
  }
  std::atomic<int> received{0};

 private:
  kincir::memory::InMemorySubscriber& inner_;
};

}  // namespace

TEST_CASE("full batches of batch_size, then the rest after the timeout", "[batch][processor]") {
  PlainProcessor env({.batch_size = 10, .batch_timeout = 50ms}, 25);
  auto& processor = env.processor;
  static_assert(!decltype(env.processor)::kUsesAcks);
  std::stop_source stop;
  std::vector<std::size_t> sizes;
  std::vector<std::string> seen;
  const auto n = processor.process_batches(
      [&](std::vector<Message>&& batch) {
        sizes.push_back(batch.size());
        for (const auto& p : payloads_of(batch)) seen.push_back(p);
        if (seen.size() == 25) stop.request_stop();
      },
      stop.get_token());
  CHECK(n == 25);
  CHECK(sizes == std::vector<std::size_t>{10, 10, 5});
  REQUIRE(seen.size() == 25);
  for (int i = 0; i < 25; ++i) CHECK(seen[static_cast<std::size_t>(i)] == std::to_string(i));
}

TEST_CASE("a partial batch is handed over once batch_timeout has passed", "[batch][processor]") {
  PlainProcessor env({.batch_size = 100, .batch_timeout = 30ms}, 3);
  auto& processor = env.processor;
  std::stop_source stop;
  std::vector<std::size_t> sizes;
  const auto start = std::chrono::steady_clock::now();
  std::chrono::steady_clock::duration waited{};
  processor.process_batches(
      [&](std::vector<Message>&& batch) {
        waited = std::chrono::steady_clock::now() - start;
        sizes.push_back(batch.size());
        stop.request_stop();
      },
      stop.get_token());
  CHECK(sizes == std::vector<std::size_t>{3});
  CHECK(waited >= 30ms);  // it did wait for more before giving up on a full batch
}

TEST_CASE("a stop request ends an idle processor", "[batch][processor][concurrency]") {
  PlainProcessor env({.batch_size = 10, .batch_timeout = 1h, .stop_check_interval = 5ms}, 0);
  auto& processor = env.processor;
  std::stop_source stop;
  std::atomic<int> calls{0};
  std::size_t processed = 99;
  std::thread worker([&] {
    processed = processor.process_batches([&](std::vector<Message>&&) { calls.fetch_add(1); }, stop.get_token());
  });
  std::this_thread::sleep_for(20ms);
  stop.request_stop();
  worker.join();
  CHECK(processed == 0);
  CHECK(calls.load() == 0);
}

TEST_CASE("a stop request hands over what was already taken", "[batch][processor][concurrency]") {
  auto broker = make_broker();
  kincir::memory::InMemorySubscriber inner(broker);
  CountingSubscriber counting(inner);
  BatchProcessor processor(counting,
                           BatchProcessorOptions{.batch_size = 100, .batch_timeout = 1h, .stop_check_interval = 5ms});
  processor.subscribe("t");
  publish_numbered(broker, 3);
  std::stop_source stop;
  std::vector<std::vector<std::string>> batches;
  std::size_t processed = 0;
  std::thread worker([&] {
    processed = processor.process_batches([&](std::vector<Message>&& batch) { batches.push_back(payloads_of(batch)); },
                                          stop.get_token());
  });
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (counting.received.load() < 3 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  REQUIRE(counting.received.load() == 3);
  stop.request_stop();
  worker.join();
  CHECK(processed == 3);
  REQUIRE(batches.size() == 1);
  CHECK(batches[0] == std::vector<std::string>{"0", "1", "2"});
}

TEST_CASE("with an ack subscriber a failed batch is nacked and redelivered", "[batch][processor]") {
  AckProcessor env({.batch_size = 3, .batch_timeout = 20ms, .on_error = BatchErrorPolicy::skip}, 3);
  auto& processor = env.processor;
  static_assert(decltype(env.processor)::kUsesAcks);
  std::stop_source stop;
  std::vector<std::vector<std::string>> batches;
  int reported = 0;
  processor.set_error_handler([&](std::error_code, const std::exception_ptr& e, std::vector<Message>&) {
    if (e) ++reported;
  });
  int calls = 0;
  const auto n = processor.process_batches(
      [&](std::vector<Message>&& batch) {
        batches.push_back(payloads_of(batch));
        if (++calls == 1) throw std::runtime_error("first attempt fails");
        stop.request_stop();
      },
      stop.get_token());
  CHECK(n == 3);
  CHECK(reported == 1);
  CHECK(processor.failed_batches() == 1);
  CHECK(processor.discarded_messages() == 0);  // nacked and redelivered, not dropped
  CHECK(processor.last_exception() != nullptr);
  REQUIRE(batches.size() == 2);
  CHECK(batches[0] == std::vector<std::string>{"0", "1", "2"});
  CHECK(batches[1] == batches[0]);  // the same messages again
  // Acked after success: nothing comes back.
  CHECK_FALSE(processor.subscriber().try_receive().has_value());
}

TEST_CASE("policy stop rethrows the handler's exception after nacking", "[batch][processor]") {
  AckProcessor env({.batch_size = 10, .batch_timeout = 20ms, .on_error = BatchErrorPolicy::stop}, 2);
  auto& processor = env.processor;
  CHECK_THROWS_AS(processor.process_batches([](std::vector<Message>&&) { throw std::runtime_error("handler failed"); }),
                  std::runtime_error);
  // Redelivered to the next run.
  std::stop_source stop;
  std::vector<std::string> again;
  processor.process_batches(
      [&](std::vector<Message>&& batch) {
        again = payloads_of(batch);
        stop.request_stop();
      },
      stop.get_token());
  CHECK(again == std::vector<std::string>{"0", "1"});
}

TEST_CASE("without acks, under policy stop, a failed batch goes to the error handler and the error is returned",
          "[batch][processor]") {
  PlainProcessor env({.batch_size = 10, .batch_timeout = 20ms, .on_error = BatchErrorPolicy::stop}, 3);
  auto& processor = env.processor;
  std::vector<std::string> rescued;
  processor.set_error_handler(
      [&](std::error_code, const std::exception_ptr&, std::vector<Message>& batch) { rescued = payloads_of(batch); });
  std::error_code ec;
  const auto n = processor.process_batches(
      [](std::vector<Message>&&) -> std::error_code { return kincir::errc::invalid_argument; }, {}, ec);
  CHECK(n == 0);
  CHECK(ec == kincir::errc::invalid_argument);
  CHECK(rescued == std::vector<std::string>{"0", "1", "2"});
  CHECK(processor.failed_batches() == 1);
  CHECK(processor.last_error() == kincir::errc::invalid_argument);
  CHECK(processor.discarded_messages() == 3);  // the handler copied them but left them in the vector
}

TEST_CASE("without acks or an error handler a skipped batch is counted and its error kept", "[batch][processor]") {
  PlainProcessor env({.batch_size = 3, .batch_timeout = 1h, .on_error = BatchErrorPolicy::skip}, 6);
  auto& processor = env.processor;
  CHECK(processor.failed_batches() == 0);
  CHECK(!processor.last_error());
  std::stop_source stop;
  std::vector<std::vector<std::string>> batches;
  std::error_code ec;

  SECTION("the handler returns an error") {
    const auto n = processor.process_batches(
        [&](std::vector<Message>&& batch) -> std::error_code {
          batches.push_back(payloads_of(batch));
          if (batches.size() == 1) return kincir::errc::timeout;
          stop.request_stop();
          return {};
        },
        stop.get_token(), ec);
    CHECK(!ec);  // skipped: processing went on
    CHECK(n == 3);
    REQUIRE(batches.size() == 2);
    CHECK(batches[1] == std::vector<std::string>{"3", "4", "5"});
    CHECK(processor.failed_batches() == 1);
    CHECK(processor.discarded_messages() == 3);
    CHECK(processor.last_error() == kincir::errc::timeout);
    CHECK(processor.last_exception() == nullptr);
    processor.clear_last_error();
    CHECK(!processor.last_error());
    CHECK(processor.failed_batches() == 1);  // a count, not cleared
  }
  SECTION("the handler throws after moving some messages out") {
    std::vector<Message> kept;
    const auto n = processor.process_batches(
        [&](std::vector<Message>&& batch) {
          batches.push_back(payloads_of(batch));
          if (batches.size() == 1) {
            kept.push_back(std::move(batch.front()));
            batch.erase(batch.begin());
            throw std::runtime_error("first batch fails");
          }
          stop.request_stop();
        },
        stop.get_token(), ec);
    CHECK(!ec);
    CHECK(n == 3);
    CHECK(payloads_of(kept) == std::vector<std::string>{"0"});
    CHECK(processor.failed_batches() == 1);
    CHECK(processor.discarded_messages() == 2);  // "1" and "2": nobody took them
    CHECK(!processor.last_error());
    REQUIRE(processor.last_exception() != nullptr);
    CHECK_THROWS_AS(std::rethrow_exception(processor.last_exception()), std::runtime_error);
    processor.clear_last_error();
    CHECK(processor.last_exception() == nullptr);
  }
}

TEST_CASE("a receive error ends processing after handing over what was taken", "[batch][processor][concurrency]") {
  PlainProcessor env({.batch_size = 100, .batch_timeout = 1h, .stop_check_interval = 5ms}, 2);
  auto& processor = env.processor;
  std::error_code ec;
  std::size_t processed = 0;
  std::vector<std::size_t> sizes;
  std::thread worker([&] {
    processed = processor.process_batches([&](std::vector<Message>&& batch) { sizes.push_back(batch.size()); }, {}, ec);
  });
  std::this_thread::sleep_for(20ms);
  env.broker->shutdown();
  worker.join();
  CHECK(ec == kincir::errc::broker_shutdown);
  CHECK(processed == 2);
  CHECK(sizes == std::vector<std::size_t>{2});
}

TEST_CASE("two processors in one consumer group share a topic's messages", "[batch][processor]") {
  auto broker = make_broker();
  BatchProcessorOptions options{.batch_size = 4, .batch_timeout = 5ms};
  BatchProcessor first(kincir::memory::InMemorySubscriber(broker), options);
  BatchProcessor second(kincir::memory::InMemorySubscriber(broker), options);
  std::error_code ec;
  first.subscribe("t", "workers", ec);
  REQUIRE_FALSE(ec);
  second.subscribe("t", "workers");
  CHECK(first.subscriber().group() == "workers");
  publish_numbered(broker, 8);
  std::vector<std::string> seen;
  for (auto* processor : {&first, &second}) {
    while (auto m = processor->subscriber().try_receive()) seen.emplace_back(m->payload.view());
  }
  std::sort(seen.begin(), seen.end());
  CHECK(seen == std::vector<std::string>{"0", "1", "2", "3", "4", "5", "6", "7"});  // each once
}

TEST_CASE("by default a failing batch does not end processing, and the throwing overload ends quietly on shutdown",
          "[batch][processor][concurrency]") {
  AckProcessor env({.batch_size = 2, .batch_timeout = 10ms}, 4);
  auto& processor = env.processor;
  CHECK(processor.options().on_error == BatchErrorPolicy::skip);
  std::atomic<int> calls{0};
  std::atomic<bool> returned{false};
  std::size_t processed = 0;
  // Run as the examples do: the throwing overload on a thread of its own. An exception escaping it
  // would call std::terminate.
  std::thread worker([&] {
    processed = processor.process_batches([&](std::vector<Message>&&) {
      if (calls.fetch_add(1) == 0) throw std::runtime_error("first batch fails");
    });
    returned = true;
  });
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (processor.failed_batches() < 1 || calls.load() < 3) {
    REQUIRE(std::chrono::steady_clock::now() < give_up);
    std::this_thread::sleep_for(1ms);
  }
  env.broker->shutdown();
  worker.join();
  CHECK(returned.load());
  CHECK(processor.failed_batches() == 1);
  CHECK(processed == 4);  // the failed batch was redelivered and then succeeded
}

TEST_CASE("a batch never waits for more unsettled deliveries than the ack subscriber may hold", "[batch][processor]") {
  kincir::memory::BrokerConfig config;
  config.max_unacked = 8;
  config.cleanup_interval = 0ms;
  auto broker = std::make_shared<InMemoryBroker>(config);
  BatchProcessor processor(kincir::memory::InMemoryAckSubscriber(broker),
                           BatchProcessorOptions{.batch_size = 100, .batch_timeout = 1h});
  processor.subscribe("t");
  publish_numbered(broker, 24);
  std::stop_source stop;
  std::vector<std::size_t> sizes;
  const auto n = processor.process_batches(
      [&](std::vector<Message>&& batch) {
        sizes.push_back(batch.size());
        std::size_t total = 0;
        for (auto size : sizes) total += size;
        if (total == 24) stop.request_stop();
      },
      stop.get_token());  // with batch_timeout 1h this returns only if no batch waited for it
  CHECK(n == 24);
  CHECK(sizes == std::vector<std::size_t>{8, 8, 8});
}

TEST_CASE("the throwing overload reports broker_shutdown returned by the handler itself", "[batch][processor]") {
  AckProcessor env({.batch_size = 10, .batch_timeout = 20ms, .on_error = BatchErrorPolicy::stop}, 2);
  auto& processor = env.processor;
  // The handler's own output broker shut down: an error, although the input is still running.
  CHECK_THROWS_AS(processor.process_batches(
                      [](std::vector<Message>&&) -> std::error_code { return kincir::errc::broker_shutdown; }),
                  kincir::Error);
}
