// InMemoryAckSubscriber::async_receive_with_ack exists only where <kincir/memory/async.hpp> is
// included, like async_receive, and the error names what is missing.
// expect: initiate_async_receive_with_ack
#include <asio/io_context.hpp>
#include <kincir/memory/broker.hpp>
#include <kincir/memory/subscriber.hpp>
#include <system_error>

#ifndef KINCIR_BREAK
#include <kincir/memory/async.hpp>
#endif

int main() {
  kincir::memory::InMemoryBroker broker;
  kincir::memory::InMemoryAckSubscriber subscriber(broker);
  subscriber.subscribe("t");
  asio::io_context io;
  subscriber.async_receive_with_ack([](std::error_code, const kincir::Message&, const kincir::BasicAckHandle&) {});
}
