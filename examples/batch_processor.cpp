// The performance guide's "Batch Message Processing": a BatchProcessor hands the handler up to
// 100 messages at a time, or whatever arrived within 500 ms. Here a producer thread publishes in
// bursts, so both paths show: full batches, and a partial one after the timeout.
//
//   batch_processor [message_count]
//
// Differences from the guide: the processor waits on the subscriber (no 100 ms polling) and
// stops through a std::stop_token instead of looping forever.
#include <kincir/batch.hpp>
#include <kincir/kincir.hpp>

#include <chrono>      // batch timeout, pauses between bursts
#include <cstdio>      // std::printf
#include <cstdlib>     // std::strtoul
#include <memory>      // std::make_shared
#include <stop_token>  // std::stop_source
#include <string>      // payloads
#include <thread>      // the producer
#include <vector>      // batches

int main(int argc, char** argv) {
  const std::size_t count =
      argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1050;  // not a multiple of 100: the last batch is partial

  auto broker = std::make_shared<kincir::memory::InMemoryBroker>(kincir::memory::InMemoryBroker::with_default_config());
  kincir::BatchProcessor batch_processor(kincir::memory::InMemorySubscriber(broker),
                                         100,                              // process 100 messages at a time
                                         std::chrono::milliseconds(500));  // or every 500 ms
  batch_processor.subscribe("batch-topic");

  std::jthread producer([&] {
    kincir::memory::InMemoryPublisher publisher(broker);
    for (std::size_t i = 0; i < count; ++i) {
      publisher.publish("batch-topic", kincir::Message("message " + std::to_string(i)));
      if (i % 250 == 249) std::this_thread::sleep_for(std::chrono::milliseconds(20));  // bursts
    }
  });

// GCC 12 false positive (GCC bug 109339): std::stop_source's constructor passes *this, not
// yet constructed, to a parameter it never reads, and GCC reports -Wmaybe-uninitialized there.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
  std::stop_source stop;
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic pop
#endif
  std::size_t batches = 0;
  std::size_t seen = 0;
  const auto start = std::chrono::steady_clock::now();
  const std::size_t processed = batch_processor.process_batches(
      [&](std::vector<kincir::Message>&& batch) {
        std::printf("Processing batch of %zu messages (first: %.*s)\n", batch.size(),
                    static_cast<int>(batch.front().payload.size()),
                    reinterpret_cast<const char*>(batch.front().payload.data()));
        ++batches;
        seen += batch.size();
        if (seen >= count) stop.request_stop();
      },
      stop.get_token());
  const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
  std::printf("Processed %zu messages in %zu batches (%.0f ms)\n", processed, batches, took.count());
  return processed == count ? 0 : 1;
}
