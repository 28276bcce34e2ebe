// What the router costs over a hand-written receive/ack loop, on the in-memory broker.
//
// Each iteration publishes 10 000 messages (1 KiB shared payload, one metadata entry) to a topic
// and waits until a consumer on its own thread has handled and acked all of them; items/s is
// messages through the consumer.
// - BM_HandLoop: the consumer is `receive_with_ack_for` + `ack` in a loop.
// - BM_Router/0: a one-handler router (consumer handler, no middleware).
// - BM_Router/1: the same with CorrelationId + Retry + Recoverer (the pipeline example's set, less
//   the poison queue, which costs nothing until a message fails); /2: Retry + Recoverer only;
//   /3: CorrelationId only (it adds metadata to every input that has none).
// - BM_HandLoopPublish / BM_RouterPublish: the handler also publishes one output per input to a
//   second topic (publish, then ack), drained by a third thread.
#include <benchmark/benchmark.h>
#include <kincir/kincir.hpp>
#include <kincir/router.hpp>

#include <atomic>   // handled counters
#include <chrono>   // poll intervals
#include <cstddef>  // std::size_t
#include <cstdint>  // counters
#include <memory>   // std::make_shared
#include <string>   // payload
#include <thread>   // consumers
#include <utility>  // std::move
#include <vector>   // batches

namespace {

constexpr std::size_t kMessages = 10'000;

const kincir::Bytes& shared_payload() {
  static const kincir::Bytes payload = kincir::Bytes::copy_from(std::string(1024, 'x'));
  return payload;
}

std::vector<kincir::Message> make_messages() {
  std::vector<kincir::Message> out;
  out.reserve(kMessages);
  for (std::size_t i = 0; i < kMessages; ++i) out.push_back(kincir::Message(shared_payload()).with_metadata("id", "1"));
  return out;
}

void wait_for(const std::atomic<std::uint64_t>& counter, std::uint64_t target) {
  while (counter.load(std::memory_order_acquire) < target) std::this_thread::yield();
}

struct Broker {
  std::shared_ptr<kincir::memory::InMemoryBroker> broker = std::make_shared<kincir::memory::InMemoryBroker>();
  kincir::memory::InMemoryPublisher publisher{broker};
};

/// Drains `topic` on a thread, counting (the output side of the publishing workloads).
class Sink {
 public:
  Sink(const std::shared_ptr<kincir::memory::InMemoryBroker>& broker, const char* topic) : subscriber_(broker) {
    subscriber_.subscribe(topic);
    thread_ = std::jthread([this](const std::stop_token& st) {
      while (!st.stop_requested()) {
        count_.fetch_add(subscriber_.poll(4096, [](const kincir::Message&) {}), std::memory_order_release);
        std::this_thread::yield();
      }
    });
  }
  [[nodiscard]] const std::atomic<std::uint64_t>& count() const noexcept { return count_; }

 private:
  kincir::memory::InMemorySubscriber subscriber_;
  std::atomic<std::uint64_t> count_{0};
  std::jthread thread_;
};

template <bool kPublish>
void hand_loop(benchmark::State& state) {
  Broker b;
  kincir::memory::InMemoryAckSubscriber subscriber(b.broker);
  subscriber.subscribe("in");
  std::unique_ptr<Sink> sink;
  if constexpr (kPublish) sink = std::make_unique<Sink>(b.broker, "out");
  std::atomic<std::uint64_t> handled{0};
  std::jthread consumer([&](const std::stop_token& st) {
    kincir::memory::InMemoryPublisher out(b.broker);
    while (!st.stop_requested()) {
      std::error_code ec;
      auto d = subscriber.receive_with_ack_for(std::chrono::milliseconds(50), ec);
      if (!d) continue;
      if constexpr (kPublish) out.publish("out", kincir::Message(d->first), ec);
      subscriber.ack(d->second, ec);
      handled.fetch_add(1, std::memory_order_release);
    }
  });
  std::uint64_t target = 0;
  for (auto _ : state) {
    b.publisher.publish("in", make_messages());
    target += kMessages;
    wait_for(handled, target);
    if constexpr (kPublish) wait_for(sink->count(), target);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(target));
}

template <bool kPublish>
void router_loop(benchmark::State& state) {
  Broker b;
  kincir::memory::InMemoryAckSubscriber subscriber(b.broker);
  std::unique_ptr<Sink> sink;
  if constexpr (kPublish) sink = std::make_unique<Sink>(b.broker, "out");
  std::atomic<std::uint64_t> handled{0};
  kincir::Router router;
  const auto set = state.range(0);
  if (set == 1 || set == 3) router.add_middleware(kincir::middleware::CorrelationId());
  if (set == 1 || set == 2) {
    router.add_middleware(kincir::middleware::Retry()).add_middleware(kincir::middleware::Recoverer());
  }
  kincir::memory::InMemoryPublisher out(b.broker);
  if constexpr (kPublish) {
    router.add_handler("bench", "in", subscriber, "out", out, [&](const kincir::Message& m) {
      handled.fetch_add(1, std::memory_order_release);
      return kincir::Message(m);
    });
  } else {
    router.add_consumer_handler("bench", "in", subscriber,
                                [&](const kincir::Message&) { handled.fetch_add(1, std::memory_order_release); });
  }
  std::jthread runner([&] { router.run(); });
  router.running().get();
  std::uint64_t target = 0;
  for (auto _ : state) {
    b.publisher.publish("in", make_messages());
    target += kMessages;
    wait_for(handled, target);
    if constexpr (kPublish) wait_for(sink->count(), target);
  }
  router.close();
  state.SetItemsProcessed(static_cast<std::int64_t>(target));
}

void BM_HandLoop(benchmark::State& state) { hand_loop<false>(state); }
void BM_Router(benchmark::State& state) { router_loop<false>(state); }
void BM_HandLoopPublish(benchmark::State& state) { hand_loop<true>(state); }
void BM_RouterPublish(benchmark::State& state) { router_loop<true>(state); }

}  // namespace

BENCHMARK(BM_HandLoop)->UseRealTime();
BENCHMARK(BM_Router)->Arg(0)->Arg(1)->Arg(2)->Arg(3)->UseRealTime();
BENCHMARK(BM_HandLoopPublish)->UseRealTime();
BENCHMARK(BM_RouterPublish)->Arg(0)->Arg(1)->UseRealTime();

BENCHMARK_MAIN();
