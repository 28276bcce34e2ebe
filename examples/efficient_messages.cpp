// The performance guide's "Memory-Efficient Message Handling": zero-copy payloads and a message
// pool. What the guide calls EfficientMessage is kincir::Message itself: its payload is a shared,
// immutable kincir::Bytes.
//
//   efficient_messages [message_count]
#include <kincir/kincir.hpp>
#include <kincir/pool.hpp>

#include <cstdint>  // std::uint8_t
#include <cstdio>   // std::printf
#include <cstdlib>  // std::strtoul
#include <memory>   // std::make_shared
#include <string>   // payloads
#include <vector>   // payloads

int main(int argc, char** argv) {
  const std::size_t count = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1000;

  // Three ways to make a payload without copying it after creation.
  const kincir::Message from_static(kincir::Bytes::from_static("static data: no allocation, no reference count"));
  const kincir::Message from_slice(kincir::Bytes::copy_from(std::string_view("copied once, then shared")));
  const kincir::Message adopted(std::vector<std::uint8_t>(4096, 0x2a));  // the vector's storage is adopted
  std::printf("from_static: %zu bytes, shared by %zu (static data is not counted)\n", from_static.payload.size(),
              from_static.payload.use_count());
  std::printf("from_slice: %zu bytes; adopted vector: %zu bytes\n", from_slice.payload.size(), adopted.payload.size());

  // A zero-copy view of part of a payload.
  const kincir::Bytes header = adopted.payload.slice(0, 16);
  std::printf("slice of 16 bytes shares the 4096-byte buffer: %s\n",
              header.data() == adopted.payload.data() ? "yes" : "no");

  // Fan-out: every subscriber gets the same buffer.
  auto broker = std::make_shared<kincir::memory::InMemoryBroker>(kincir::memory::InMemoryBroker::with_default_config());
  kincir::memory::InMemoryPublisher publisher(broker);
  kincir::memory::InMemorySubscriber first(broker);
  kincir::memory::InMemorySubscriber second(broker);
  first.subscribe("efficient");
  second.subscribe("efficient");
  const kincir::Bytes body = kincir::Bytes::copy_from(std::string(1024, 'p'));
  publisher.publish("efficient", kincir::Message(body));
  const kincir::Message a = first.receive();
  const kincir::Message b = second.receive();
  if (a.payload.data() == body.data() && b.payload.data() == body.data())
    std::printf("fan-out shared one buffer between %zu holders\n", body.use_count());

  // The pool: shells (their metadata storage) are reused; payloads are released on return.
  kincir::MessagePool message_pool(1000);
  std::size_t reused_ids = 0;
  for (std::size_t i = 0; i < count; ++i) {
    kincir::Message message = message_pool.get_message(kincir::Bytes::copy_from(std::string("Pooled message")));
    message.with_metadata("seq", std::to_string(i));
    if (!message.uuid.is_nil()) ++reused_ids;  // every message still gets its own id
    message_pool.return_message(std::move(message));
  }
  std::printf("pool: %zu messages through %zu cached shell(s) on this thread\n", reused_ids,
              message_pool.thread_cached());
  std::printf("(see docs/batching.md for whether pooling beats plain construction)\n");
  return 0;
}
