// Uses kincir's public API the way an application would; exits non-zero if anything is off.
// Also built with -fsanitize=thread -Werror (consumption.tsan_werror): the broker's paths are
// instantiated here, so their headers must compile cleanly there.
#include <kincir/kincir.hpp>

#include <cstdio>  // std::printf
#include <string>  // payload
#include <thread>  // a publisher thread

namespace {

bool broker_round_trip() {
  kincir::memory::InMemoryBroker broker;
  kincir::memory::InMemorySubscriber subscriber(broker);
  subscriber.subscribe("orders");
  kincir::memory::InMemoryAckSubscriber worker(broker);
  worker.subscribe("orders", "workers");
  std::thread producer([&broker] {
    kincir::memory::InMemoryPublisher publisher(broker);
    for (int i = 0; i < 100; ++i) publisher.publish("orders", kincir::Message(std::to_string(i)));
  });
  bool ok = true;
  for (int i = 0; i < 100; ++i) {
    const kincir::Message m = subscriber.receive();
    ok = ok && m.payload.view() == std::to_string(i);
    auto [delivery, handle] = worker.receive_with_ack();
    ok = ok && delivery.payload.view() == std::to_string(i);
    worker.ack(handle);
  }
  producer.join();
  // Leaving a topic and publishing with drop_oldest take the ring's other paths (maintenance
  // requested on leave, overtaking readers).
  worker.unsubscribe();
  kincir::memory::BrokerConfig overwrite;
  overwrite.overflow_policy = kincir::memory::OverflowPolicy::drop_oldest;
  overwrite.max_queue_size = 4;
  kincir::memory::InMemoryBroker lossy(overwrite);
  kincir::memory::InMemorySubscriber slow(lossy);
  slow.subscribe("t");
  kincir::memory::InMemoryPublisher(lossy).publish("t", kincir::Message(std::string("x")));
  ok = ok && slow.receive().payload.view() == "x";
  return ok;
}

}  // namespace

int main() {
  const kincir::Message m = kincir::Message(std::string("hello")).with_metadata("id", "1");
  const bool ok = m.payload.view() == "hello" && m.metadata.get("id") == "1" && m.uuid.version() == 4 &&
                  kincir::Uuid::parse(m.uuid.to_string()) == m.uuid && broker_round_trip();
  std::printf("kincir %s consumer: %s\n", KINCIR_VERSION_STRING, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
