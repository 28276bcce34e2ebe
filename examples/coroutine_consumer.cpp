// A coroutine consumer: one Asio coroutine per topic awaits `async_receive`, and Ctrl-C (SIGINT) or
// SIGTERM ends them cleanly — the signal handler unsubscribes, which completes each pending
// receive with `asio::error::operation_aborted`.
//
//   coroutine_consumer [messages per topic]   (default 1000; then it raises SIGINT itself, as if
//                                              Ctrl-C had been pressed, so the program ends)

#include <kincir/kincir.hpp>
#include <kincir/memory/async.hpp>  // InMemorySubscriber::async_receive (needs standalone Asio)

#include <asio/async_result.hpp>  // ASIO_HAS_CO_AWAIT
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/use_awaitable.hpp>

#include <atomic>        // counts read by the producer thread
#include <csignal>       // SIGINT, std::raise
#include <cstdio>        // std::printf
#include <cstdlib>       // std::atoi
#include <string>        // payloads
#include <system_error>  // std::system_error
#include <thread>        // the producer

#if defined(ASIO_HAS_CO_AWAIT)
namespace {

/// Receives from `subscriber` until its receive is aborted; counts what arrives.
asio::awaitable<void> consume(kincir::memory::InMemorySubscriber& subscriber, std::atomic<int>& received) {
  for (;;) {
    try {
      const kincir::Message m = co_await subscriber.async_receive(asio::use_awaitable);
      if (!m.payload.empty()) received.fetch_add(1);
    } catch (const std::system_error& e) {
      // Unsubscribed (we are stopping): a pending receive is aborted, a later one finds no topic.
      if (e.code() == asio::error::operation_aborted || e.code() == kincir::errc::not_subscribed) co_return;
      std::printf("receive failed: %s\n", e.what());
      co_return;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 1000;
  if (count < 1) {
    std::fprintf(stderr, "usage: coroutine_consumer [messages per topic >= 1]\n");
    return 2;
  }
  kincir::memory::InMemoryBroker broker;
  kincir::memory::InMemorySubscriber orders(broker);
  kincir::memory::InMemorySubscriber payments(broker);
  orders.subscribe("orders");
  payments.subscribe("payments");

  asio::io_context io;
  std::atomic<int> order_count{0};
  std::atomic<int> payment_count{0};
  asio::co_spawn(io, consume(orders, order_count), asio::detached);
  asio::co_spawn(io, consume(payments, payment_count), asio::detached);

  // Ctrl-C or SIGTERM: leave both topics; each pending receive completes with operation_aborted.
  // The handler runs on the io_context's thread, the subscribers' owner.
  int stopped_by = 0;
  std::atomic<bool> stopping{false};
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](std::error_code ec, int signal) {
    if (ec) return;
    stopped_by = signal;
    stopping = true;
    orders.unsubscribe();
    payments.unsubscribe();
  });

  std::thread producer([&] {
    kincir::memory::InMemoryPublisher publisher(broker);
    for (int i = 0; i < count && !stopping.load(); ++i) {
      publisher.publish("orders", kincir::Message("order " + std::to_string(i)));
      publisher.publish("payments", kincir::Message("payment " + std::to_string(i)));
    }
    // A real Ctrl-C may come first; otherwise stop once everything arrived.
    while (!stopping.load() && (order_count.load() < count || payment_count.load() < count)) std::this_thread::yield();
    if (!stopping.load()) std::raise(SIGINT);  // as if Ctrl-C had been pressed
  });

  io.run();  // returns once both coroutines ended and the signal was handled
  producer.join();
  std::printf("received %d orders and %d payments; stopped by %s\n", order_count.load(), payment_count.load(),
              stopped_by == SIGINT ? "SIGINT" : "something else");
  return stopped_by != 0 ? 0 : 1;  // ended by a signal, as it should
}
#else
int main() {
  std::printf("coroutine_consumer needs a compiler and standard library with which Asio enables C++20 coroutines\n");
  return 0;
}
#endif
