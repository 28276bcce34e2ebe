// The performance guide's "Efficient Batch Publishing": publish 50 000 messages in batches of
// 1000 through a BatchPublisher over the in-memory broker. Then what the guide leaves out:
// buffering single messages with add(), flushed by size and, for the last few, by the timer.
//
//   batch_publisher [message_count]
//
// Differences from the guide: no sleep between chunks (the broker applies back-pressure itself)
// and the library does not print; the timing is done here.
#include <kincir/batch.hpp>
#include <kincir/kincir.hpp>

#include <chrono>   // timing, batch timeout
#include <cstdio>   // std::printf
#include <cstdlib>  // std::strtoul
#include <memory>   // std::make_shared
#include <string>   // payloads
#include <thread>   // waiting for the timer
#include <utility>  // std::in_place
#include <vector>   // the batch

int main(int argc, char** argv) {
  const std::size_t count = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 50'000;
  constexpr std::size_t kBatchSize = 1000;

  auto broker = std::make_shared<kincir::memory::InMemoryBroker>(kincir::memory::InMemoryBroker::with_default_config());
  kincir::memory::InMemorySubscriber subscriber(broker);
  subscriber.subscribe("batch-topic");

  // Owns its publisher, built in place (an InMemoryPublisher is not movable).
  kincir::BatchPublisher<kincir::memory::InMemoryPublisher> batch_publisher(
      std::in_place, kincir::BatchPublisherOptions{kBatchSize, std::chrono::milliseconds(100), 0}, broker);

  std::vector<kincir::Message> messages;
  messages.reserve(count);
  for (std::size_t i = 0; i < count; ++i) messages.emplace_back("Batch message " + std::to_string(i));

  const auto start = std::chrono::steady_clock::now();
  const std::size_t published = batch_publisher.publish_batch("batch-topic", std::move(messages));
  const std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - start;
  std::printf("Published %zu messages in %zu batches (%.0f us)\n", published, (count + kBatchSize - 1) / kBatchSize,
              took.count());

  // Single messages: add() buffers them; every kBatchSize-th add flushes, and the timer sends the
  // remainder 100 ms after it was buffered, with no further call.
  const std::size_t singles = kBatchSize * 2 + 50;
  for (std::size_t i = 0; i < singles; ++i)
    batch_publisher.add("batch-topic", kincir::Message("single " + std::to_string(i)));
  std::printf("add(): %zu messages, %zu still buffered\n", singles, batch_publisher.pending());

  std::size_t received = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (received < count + singles && std::chrono::steady_clock::now() < deadline) {
    if (subscriber.receive_for(std::chrono::milliseconds(10))) ++received;
  }
  std::printf("Received %zu of %zu messages, %zu buffered\n", received, count + singles, batch_publisher.pending());
  if (received == count + singles)
    std::printf("every message delivered, the last %zu by the timer\n", singles % kBatchSize);
  return received == count + singles ? 0 : 1;
}
