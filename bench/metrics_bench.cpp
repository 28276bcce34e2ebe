// Cost of recording into a MetricsCollector: one record single-threaded and with two threads
// on one collector, next to a mutex-protected collector like the performance guide's, and the
// per-call overhead of the instrumented decorator.
#include <benchmark/benchmark.h>
#include <kincir/metrics.hpp>

#include <atomic>        // the shared-atomic baseline
#include <chrono>        // durations, clock reads
#include <cstdint>       // std::uint64_t
#include <mutex>         // the guide-style baseline
#include <string_view>   // topics
#include <system_error>  // std::error_code
#include <thread>        // start a thread so libstdc++ uses atomic reference counts
#include <vector>        // batches

namespace {

const bool kThreadsStarted = [] {
  std::thread([] {}).join();
  return true;
}();

using std::chrono::nanoseconds;

kincir::MetricsCollector& shared_collector() {
  static kincir::MetricsCollector collector;
  return collector;
}

void BM_RecordPublish(benchmark::State& state) {
  auto& collector = shared_collector();
  std::int64_t i = 0;
  for (auto _ : state) {
    collector.record_publish(nanoseconds(i & 4095));
    ++i;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RecordPublish)->Threads(1)->Threads(2);

void BM_RecordError(benchmark::State& state) {
  auto& collector = shared_collector();
  for (auto _ : state) collector.record_error();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RecordError)->Threads(1)->Threads(2);

void BM_NamedCounterAdd(benchmark::State& state) {
  static const auto counter = shared_collector().counter("bench_events");
  for (auto _ : state) counter.add();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_NamedCounterAdd)->Threads(1)->Threads(2);

void BM_NamedHistogramRecord(benchmark::State& state) {
  static const auto histogram = shared_collector().histogram("bench_step");
  std::int64_t i = 0;
  for (auto _ : state) {
    histogram.record(nanoseconds(i & 4095));
    ++i;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_NamedHistogramRecord)->Threads(1)->Threads(2);

// The guide's collector: one lock around the whole metrics struct (a mutex instead of tokio's
// RwLock), for comparison.
class GuideStyleCollector {
 public:
  void record_publish(nanoseconds d) {
    const std::lock_guard lock(mutex_);
    ++published_;
    total_ += d;
  }

 private:
  std::mutex mutex_;
  std::uint64_t published_ = 0;
  nanoseconds total_{};
};

void BM_GuideStyleMutexRecordPublish(benchmark::State& state) {
  static GuideStyleCollector collector;
  std::int64_t i = 0;
  for (auto _ : state) {
    collector.record_publish(nanoseconds(i & 4095));
    ++i;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_GuideStyleMutexRecordPublish)->Threads(1)->Threads(2);

// What a record would cost with one shared atomic per counter (a contended cache line once
// two threads record): the design the per-thread shards avoid.
void BM_SharedAtomicFetchAdd(benchmark::State& state) {
  alignas(kincir::kCacheLineSize) static std::atomic<std::uint64_t> counter{0};
  for (auto _ : state) counter.fetch_add(1, std::memory_order_relaxed);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SharedAtomicFetchAdd)->Threads(1)->Threads(2);

void BM_SteadyClockNow(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(std::chrono::steady_clock::now());
}
BENCHMARK(BM_SteadyClockNow);

void BM_Snapshot(benchmark::State& state) {
  auto& collector = shared_collector();
  for (auto _ : state) benchmark::DoNotOptimize(collector.snapshot());
}
BENCHMARK(BM_Snapshot);

// A publisher that does nothing: what is left is the decorator's own cost per call.
struct NullPublisher {
  void publish(std::string_view, std::vector<kincir::Message>&& batch, std::error_code& ec) {
    ec.clear();
    benchmark::DoNotOptimize(batch.data());
  }
  void publish(std::string_view topic, std::vector<kincir::Message>&& batch) {
    std::error_code ec;
    publish(topic, std::move(batch), ec);
  }
  void publish(std::string_view, kincir::Message&& m, std::error_code& ec) {
    ec.clear();
    benchmark::DoNotOptimize(&m);
  }
  void publish(std::string_view topic, kincir::Message&& m) {
    std::error_code ec;
    publish(topic, std::move(m), ec);
  }
};

template <class P>
void publish_loop(benchmark::State& state, P& publisher) {
  for (auto _ : state) {
    std::error_code ec;
    publisher.publish("t", kincir::Message(), ec);
    benchmark::DoNotOptimize(ec);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_NullPublish(benchmark::State& state) {
  NullPublisher publisher;
  publish_loop(state, publisher);
}
BENCHMARK(BM_NullPublish);

void BM_InstrumentedNullPublish(benchmark::State& state) {
  NullPublisher inner;
  auto publisher =
      kincir::instrumented(inner, shared_collector(), {.time_every = static_cast<std::uint32_t>(state.range(0))});
  publish_loop(state, publisher);
}
BENCHMARK(BM_InstrumentedNullPublish)->ArgName("time_every")->Arg(1)->Arg(16)->Arg(64);

}  // namespace

BENCHMARK_MAIN();
