// The performance guide's two in-memory workloads, on kincir's broker, Google Benchmark's way:
//   simple:     100 000 x 1 KiB messages, one publish of the batch, then 100 000 receive()
//   concurrent: 10 publishers x 10 000 single publishes, 5 subscribers each receiving all 100 000
// Times are measured by hand around the part the guide times (message construction excluded).
#include <benchmark/benchmark.h>
#include <kincir/kincir.hpp>

#include <malloc.h>  // mallinfo2: bytes in use
#include <chrono>    // manual timing
#include <memory>    // std::make_shared
#include <string>    // payloads
#include <thread>    // concurrent workload
#include <vector>    // batches

namespace {

using clock_type = std::chrono::steady_clock;

// libstdc++ takes non-atomic shortcuts until a thread has been started; measure the real thing.
const bool kThreadsStarted = [] {
  std::thread([] {}).join();
  return true;
}();

/// Heap bytes in use (glibc), so a measurement is not hidden by memory freed earlier and reused.
double heap_in_use() {
  const struct mallinfo2 info = mallinfo2();
  return static_cast<double>(info.uordblks + info.hblkhd);
}

std::vector<kincir::Message> guide_batch(int count, std::size_t size) {
  std::vector<kincir::Message> messages;
  messages.reserve(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i)
    messages.push_back(kincir::Message(std::vector<std::uint8_t>(size, 0)).with_metadata("id", std::to_string(i)));
  return messages;
}

void BM_SimplePublish(benchmark::State& state) {
  const int count = static_cast<int>(state.range(0));
  double extra_memory = 0;
  for (auto _ : state) {
    auto broker = std::make_shared<kincir::memory::InMemoryBroker>();
    kincir::memory::InMemoryPublisher publisher(broker);
    kincir::memory::InMemorySubscriber subscriber(broker);
    subscriber.subscribe("benchmark");
    auto messages = guide_batch(count, 1024);
    const double before = heap_in_use();
    const auto start = clock_type::now();
    publisher.publish("benchmark", std::move(messages));
    const auto stop = clock_type::now();
    extra_memory = std::max(extra_memory, heap_in_use() - before);
    state.SetIterationTime(std::chrono::duration<double>(stop - start).count());
  }
  state.SetItemsProcessed(state.iterations() * count);
  state.counters["extra_MB"] = extra_memory / 1e6;
}
BENCHMARK(BM_SimplePublish)->Arg(100'000)->UseManualTime()->Unit(benchmark::kMillisecond);

void BM_SimpleReceive(benchmark::State& state) {
  const int count = static_cast<int>(state.range(0));
  for (auto _ : state) {
    auto broker = std::make_shared<kincir::memory::InMemoryBroker>();
    kincir::memory::InMemoryPublisher publisher(broker);
    kincir::memory::InMemorySubscriber subscriber(broker);
    subscriber.subscribe("benchmark");
    publisher.publish("benchmark", guide_batch(count, 1024));
    const auto start = clock_type::now();
    for (int i = 0; i < count; ++i) benchmark::DoNotOptimize(subscriber.receive());
    const auto stop = clock_type::now();
    state.SetIterationTime(std::chrono::duration<double>(stop - start).count());
  }
  state.SetItemsProcessed(state.iterations() * count);
}
BENCHMARK(BM_SimpleReceive)->Arg(100'000)->UseManualTime()->Unit(benchmark::kMillisecond);

void BM_Concurrent(benchmark::State& state) {
  const int publishers = static_cast<int>(state.range(0));
  const int per_publisher = static_cast<int>(state.range(1));
  const int subscribers = static_cast<int>(state.range(2));
  const int total = publishers * per_publisher;
  for (auto _ : state) {
    auto broker = std::make_shared<kincir::memory::InMemoryBroker>();
    std::vector<kincir::memory::InMemorySubscriber> subs;
    for (int s = 0; s < subscribers; ++s) {
      subs.emplace_back(broker);
      subs.back().subscribe("high-throughput");
    }
    // Payloads as in the guide ("Publisher p - Message i"), built before the clock starts.
    std::vector<std::vector<kincir::Message>> payloads(static_cast<std::size_t>(publishers));
    for (int p = 0; p < publishers; ++p)
      for (int i = 0; i < per_publisher; ++i)
        payloads[static_cast<std::size_t>(p)].push_back(
            kincir::Message("Publisher " + std::to_string(p) + " - Message " + std::to_string(i)));

    std::vector<std::thread> threads;
    const auto start = clock_type::now();
    for (auto& sub : subs) {
      threads.emplace_back([&sub, total] {
        for (int i = 0; i < total; ++i) benchmark::DoNotOptimize(sub.receive());
      });
    }
    for (int p = 0; p < publishers; ++p) {
      threads.emplace_back([&, p] {
        kincir::memory::InMemoryPublisher publisher(broker);
        for (auto& m : payloads[static_cast<std::size_t>(p)]) publisher.publish("high-throughput", std::move(m));
      });
    }
    for (auto& t : threads) t.join();
    const auto stop = clock_type::now();
    state.SetIterationTime(std::chrono::duration<double>(stop - start).count());
  }
  state.SetItemsProcessed(state.iterations() * total);
  state.counters["deliveries_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * total * subscribers, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Concurrent)->Args({10, 10'000, 5})->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
