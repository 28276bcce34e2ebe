// InMemorySubscriber::async_receive exists only where <kincir/memory/async.hpp> is included: the
// in-memory headers include nothing of Asio, and the error names what is missing.
// expect: initiate_async_receive
#include <asio/io_context.hpp>
#include <kincir/memory/broker.hpp>
#include <kincir/memory/subscriber.hpp>
#include <system_error>

#ifndef KINCIR_BREAK
#include <kincir/memory/async.hpp>
#endif

int main() {
  kincir::memory::InMemoryBroker broker;
  kincir::memory::InMemorySubscriber subscriber(broker);
  subscriber.subscribe("t");
  asio::io_context io;
  subscriber.async_receive([](std::error_code, const kincir::Message&) {});
}
