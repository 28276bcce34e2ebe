// Costs of the core types: id generation, message construction, payload sharing.
#include <benchmark/benchmark.h>
#include <kincir/core/message.hpp>

#include <string>  // payloads
#include <thread>  // start a thread so libstdc++ uses atomic reference counts
#include <vector>  // payloads

namespace {

// libstdc++ takes non-atomic shortcuts until a thread has been started; measure the real thing.
const bool kThreadsStarted = [] {
  std::thread([] {}).join();
  return true;
}();

void BM_UuidNewV4(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(kincir::Uuid::new_v4());
}
BENCHMARK(BM_UuidNewV4);

void BM_UuidToString(benchmark::State& state) {
  const auto id = kincir::Uuid::new_v4();
  for (auto _ : state) benchmark::DoNotOptimize(id.to_string());
}
BENCHMARK(BM_UuidToString);

void BM_MessageFromVector1KiB(benchmark::State& state) {
  for (auto _ : state) {
    kincir::Message m(std::vector<std::uint8_t>(1024));
    benchmark::DoNotOptimize(m);
  }
}
BENCHMARK(BM_MessageFromVector1KiB);

void BM_MessageWithMetadata(benchmark::State& state) {
  for (auto _ : state) {
    auto m = kincir::Message(kincir::Bytes::from_static(std::string_view("payload"))).with_metadata("id", "12345");
    benchmark::DoNotOptimize(m);
  }
}
BENCHMARK(BM_MessageWithMetadata);

void BM_MessageCopy(benchmark::State& state) {
  const kincir::Message m = kincir::Message(std::vector<std::uint8_t>(1024)).with_metadata("id", "1");
  for (auto _ : state) {
    kincir::Message copy = m;
    benchmark::DoNotOptimize(copy);
  }
}
BENCHMARK(BM_MessageCopy);

}  // namespace

BENCHMARK_MAIN();
