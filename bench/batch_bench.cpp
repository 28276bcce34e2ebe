// Batching over the in-memory broker, and whether a MessagePool saves time against plain message
// construction.
//
// - BM_PublishBatch/<batch_size>: BatchPublisher::publish_batch of 10 000 messages (256-byte
//   shared payload) to a topic with one subscriber, in chunks of 1, 10, 100, 1000. Only the
//   publish is timed; the subscriber drains between iterations.
// - BM_AddThenFlush/<batch_size>: the same 10 000 messages through add() (flushing by size).
// - BM_Plain* / BM_Pool* / BM_MutexPool*: one message made and destroyed (or got and returned),
//   with and without one metadata entry; the mutex pool is the guide's design (one lock per
//   call), for comparison with MessagePool's per-thread cache.
#include <benchmark/benchmark.h>
#include <kincir/batch.hpp>
#include <kincir/kincir.hpp>
#include <kincir/pool.hpp>

#include <chrono>   // batch timeouts
#include <cstddef>  // std::size_t
#include <memory>   // std::make_shared
#include <mutex>    // the guide-style pool
#include <string>   // payload
#include <thread>   // start a thread so libstdc++ uses atomic reference counts
#include <utility>  // std::move, std::in_place
#include <vector>   // batches

namespace {

const bool kThreadsStarted = [] {
  std::thread([] {}).join();
  return true;
}();

constexpr std::size_t kMessages = 10'000;

const kincir::Bytes& shared_payload() {
  static const kincir::Bytes payload = kincir::Bytes::copy_from(std::string(256, 'x'));
  return payload;
}

std::vector<kincir::Message> make_messages() {
  std::vector<kincir::Message> out;
  out.reserve(kMessages);
  for (std::size_t i = 0; i < kMessages; ++i) out.emplace_back(shared_payload());
  return out;
}

struct BrokerFixture {
  std::shared_ptr<kincir::memory::InMemoryBroker> broker =
      std::make_shared<kincir::memory::InMemoryBroker>(kincir::memory::InMemoryBroker::with_default_config());
  kincir::memory::InMemorySubscriber subscriber{broker};

  BrokerFixture() { subscriber.subscribe("bench"); }

  std::size_t drain() {
    std::size_t n = 0;
    while (subscriber.poll(4096, [](const kincir::Message&) {}) != 0) ++n;
    return n;
  }
};

void BM_PublishBatch(benchmark::State& state) {
  BrokerFixture fixture;
  kincir::BatchPublisher<kincir::memory::InMemoryPublisher> batcher(
      std::in_place, kincir::BatchPublisherOptions{static_cast<std::size_t>(state.range(0)), {}, 0}, fixture.broker);
  for (auto _ : state) {
    state.PauseTiming();
    auto messages = make_messages();
    state.ResumeTiming();
    batcher.publish_batch("bench", std::move(messages));
    state.PauseTiming();
    fixture.drain();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kMessages));
}
BENCHMARK(BM_PublishBatch)->Arg(1)->Arg(10)->Arg(100)->Arg(1000)->UseRealTime();

void BM_AddThenFlush(benchmark::State& state) {
  BrokerFixture fixture;
  kincir::BatchPublisher<kincir::memory::InMemoryPublisher> batcher(
      std::in_place,
      kincir::BatchPublisherOptions{static_cast<std::size_t>(state.range(0)), std::chrono::seconds(10), 0},
      fixture.broker);
  for (auto _ : state) {
    state.PauseTiming();
    auto messages = make_messages();
    state.ResumeTiming();
    for (auto& m : messages) batcher.add("bench", std::move(m));
    batcher.flush();
    state.PauseTiming();
    fixture.drain();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kMessages));
}
BENCHMARK(BM_AddThenFlush)->Arg(1)->Arg(10)->Arg(100)->Arg(1000)->UseRealTime();

// --- pool vs plain construction -------------------------------------------------------------

/// The guide's pool: one mutex-protected vector.
class MutexPool {
 public:
  explicit MutexPool(std::size_t max_size) : max_size_(max_size) {}
  kincir::Message get_message(kincir::Bytes payload) {
    std::unique_lock lock(mutex_);
    if (pool_.empty()) {
      lock.unlock();
      return kincir::Message(std::move(payload));
    }
    kincir::Message m = std::move(pool_.back());
    pool_.pop_back();
    lock.unlock();
    m.uuid = kincir::Uuid::new_v4();
    m.payload = std::move(payload);
    return m;
  }
  void return_message(kincir::Message&& m) {
    m.payload = kincir::Bytes();
    m.metadata.clear();
    const std::lock_guard lock(mutex_);
    if (pool_.size() < max_size_) pool_.push_back(std::move(m));
  }

 private:
  std::mutex mutex_;
  std::vector<kincir::Message> pool_;
  std::size_t max_size_;
};

void BM_PlainMessage(benchmark::State& state) {
  for (auto _ : state) {
    kincir::Message m(kincir::Bytes::from_static("payload"));
    benchmark::DoNotOptimize(m);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PlainMessage)->Threads(1)->Threads(2);

void BM_PlainMessageWithMetadata(benchmark::State& state) {
  for (auto _ : state) {
    kincir::Message m(kincir::Bytes::from_static("payload"));
    m.with_metadata("id", "42");
    benchmark::DoNotOptimize(m);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PlainMessageWithMetadata)->Threads(1)->Threads(2);

kincir::MessagePool& shared_pool() {
  static kincir::MessagePool pool(1024);
  return pool;
}

void BM_PoolMessage(benchmark::State& state) {
  auto& pool = shared_pool();
  for (auto _ : state) {
    kincir::Message m = pool.get_message(kincir::Bytes::from_static("payload"));
    benchmark::DoNotOptimize(m);
    pool.return_message(std::move(m));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PoolMessage)->Threads(1)->Threads(2);

void BM_PoolMessageWithMetadata(benchmark::State& state) {
  auto& pool = shared_pool();
  for (auto _ : state) {
    kincir::Message m = pool.get_message(kincir::Bytes::from_static("payload"));
    m.with_metadata("id", "42");
    benchmark::DoNotOptimize(m);
    pool.return_message(std::move(m));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PoolMessageWithMetadata)->Threads(1)->Threads(2);

MutexPool& shared_mutex_pool() {
  static MutexPool pool(1024);
  return pool;
}

void BM_MutexPoolMessageWithMetadata(benchmark::State& state) {
  auto& pool = shared_mutex_pool();
  for (auto _ : state) {
    kincir::Message m = pool.get_message(kincir::Bytes::from_static("payload"));
    m.with_metadata("id", "42");
    benchmark::DoNotOptimize(m);
    pool.return_message(std::move(m));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MutexPoolMessageWithMetadata)->Threads(1)->Threads(2);

}  // namespace

BENCHMARK_MAIN();
