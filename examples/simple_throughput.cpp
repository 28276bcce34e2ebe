// The performance guide's "Simple Throughput Test": publish 100 000 messages of 1 KiB in one
// batch, then receive them one by one, timing both halves.
//
//   simple_throughput [message_count] [message_size]
//
// Differences from the guide's Rust: no async runtime is needed (publish and receive are plain
// calls), and the broker is shared through std::shared_ptr instead of Arc.
#include <kincir/kincir.hpp>

#include <chrono>   // timing
#include <cstdio>   // std::printf
#include <cstdlib>  // std::strtoul
#include <memory>   // std::make_shared
#include <string>   // metadata values
#include <vector>   // the batch

int main(int argc, char** argv) {
  const std::size_t message_count = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 100'000;
  const std::size_t message_size = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 1024;

  auto broker = std::make_shared<kincir::memory::InMemoryBroker>(kincir::memory::InMemoryBroker::with_default_config());
  kincir::memory::InMemoryPublisher publisher(broker);
  kincir::memory::InMemorySubscriber subscriber(broker);
  subscriber.subscribe("benchmark");

  std::vector<kincir::Message> messages;
  messages.reserve(message_count);
  for (std::size_t i = 0; i < message_count; ++i) {
    messages.push_back(
        kincir::Message(std::vector<std::uint8_t>(message_size, 0)).with_metadata("id", std::to_string(i)));
  }
  std::printf("Starting throughput test with %zu messages of %zu bytes each\n", message_count, message_size);

  using clock = std::chrono::steady_clock;
  auto start = clock::now();
  publisher.publish("benchmark", std::move(messages));
  const std::chrono::duration<double> publish_time = clock::now() - start;
  std::printf("Publish throughput: %.2f messages/second\n", static_cast<double>(message_count) / publish_time.count());

  start = clock::now();
  std::size_t checked = 0;
  for (std::size_t i = 0; i < message_count; ++i) {
    const kincir::Message m = subscriber.receive();
    checked += m.payload.size() == message_size ? 1 : 0;
  }
  const std::chrono::duration<double> receive_time = clock::now() - start;
  std::printf("Receive throughput: %.2f messages/second\n", static_cast<double>(message_count) / receive_time.count());
  std::printf("Received %zu of %zu messages intact\n", checked, message_count);
  return checked == message_count ? 0 : 1;
}
