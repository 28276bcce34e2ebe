// The performance guide's "Efficient Async Patterns": a producer/consumer channel
// (AsyncMessageProcessor) and bounded parallel processing (process_messages_parallel), here
// with plain threads; kincir/async.hpp also offers async_send/async_receive for Asio.
//
//   async_patterns [message_count] [concurrency] [work_ms]
#include <kincir/async.hpp>

#include <atomic>   // in-flight count
#include <chrono>   // simulated work
#include <cstdio>   // std::printf
#include <cstdlib>  // std::strtoul
#include <string>   // payloads
#include <thread>   // producers
#include <vector>   // messages, producers

int main(int argc, char** argv) {
  const std::size_t count = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1000;
  const std::size_t concurrency = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 10;
  const auto work = std::chrono::milliseconds(argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 10);

  // Producer/consumer: two producers, a channel of 64, one consumer until close.
  kincir::AsyncMessageProcessor processor(64);
  std::size_t consumed = 0;
  std::thread consumer([&] { consumed = processor.process_messages([](kincir::Message&&) {}); });
  {
    std::vector<std::jthread> producers;
    producers.reserve(2);
    for (int p = 0; p < 2; ++p) {
      producers.emplace_back([&processor, count, p] {
        for (std::size_t i = 0; i < count / 2; ++i) {
          processor.send_message(kincir::Message("from producer " + std::to_string(p)));  // waits when full
        }
      });
    }
  }
  processor.close();  // the consumer drains what is left, then returns
  consumer.join();
  std::printf("Channel: consumed %zu messages\n", consumed);

  // Bounded parallel processing.
  std::vector<kincir::Message> messages;
  for (std::size_t i = 0; i < count; ++i) messages.emplace_back("Message " + std::to_string(i));
  std::atomic<std::size_t> in_flight{0};
  std::atomic<std::size_t> most{0};
  const auto start = std::chrono::steady_clock::now();
  const kincir::ParallelOutcome outcome =
      kincir::process_messages_parallel(std::move(messages), concurrency, [&](kincir::Message&&) {
        const std::size_t now = in_flight.fetch_add(1) + 1;
        std::size_t seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        std::this_thread::sleep_for(work);  // simulated processing
        in_flight.fetch_sub(1);
      });
  const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
  std::printf("Processed %zu messages, at most %zu at a time (limit %zu), in %.0f ms\n", outcome.succeeded, most.load(),
              concurrency, took.count());
  return outcome.succeeded == count && most.load() <= concurrency ? 0 : 1;
}
