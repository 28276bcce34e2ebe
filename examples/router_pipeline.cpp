// A two-stage order pipeline on kincir's router: "validate" reads raw orders, retries what
// fails, sends what keeps failing to a poison topic, and publishes valid orders; "ship" consumes
// them. A correlation id follows every order from stage to stage. Ctrl-C (SIGINT) or SIGTERM
// closes the router gracefully: the orders in progress finish, nothing is lost.
//
//   router_pipeline [order_count]    (every 10th order is malformed)
//
// Without a signal it stops by itself once every order is shipped or poisoned.
#include <kincir/kincir.hpp>
#include <kincir/log/fmt_logger.hpp>
#include <kincir/router.hpp>

#include <atomic>     // counters shared with the handlers
#include <chrono>     // retry intervals, waiting
#include <cstdio>     // std::printf
#include <cstdlib>    // std::strtoul
#include <memory>     // std::make_shared
#include <stdexcept>  // a malformed order throws
#include <string>     // payloads
#include <thread>     // the router's thread

namespace mw = kincir::middleware;

int main(int argc, char** argv) {
  const std::size_t count = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 20;

  auto broker = std::make_shared<kincir::memory::InMemoryBroker>();
  kincir::memory::InMemoryPublisher publisher(broker);
  kincir::memory::InMemoryAckSubscriber raw_orders(broker);
  kincir::memory::InMemoryAckSubscriber valid_orders(broker);
  kincir::memory::InMemorySubscriber poisoned_orders(broker);
  poisoned_orders.subscribe("orders.poison");

  kincir::FmtLogger logger(kincir::LogLevel::warn);  // retries and poisonings, to stderr
  kincir::RouterConfig config;
  config.logger = &logger;
  config.close_timeout = std::chrono::seconds(5);
  kincir::Router router(config);

  // Outermost first: correlation id, then poison queue (sees the failure left after the
  // retries), then retry, then recoverer (exceptions become failures with their what()).
  mw::RetryOptions retry;
  retry.max_retries = 2;
  retry.initial_interval = std::chrono::milliseconds(5);
  router.add_middleware(mw::CorrelationId())
      .add_middleware(mw::PoisonQueue(publisher, "orders.poison"))
      .add_middleware(mw::Retry(retry))
      .add_middleware(mw::Recoverer());

  router.add_handler("validate", "orders", raw_orders, "orders.valid", publisher, [](const kincir::Message& order) {
    const std::string text(order.payload.view());
    if (text.find("malformed") != std::string::npos) throw std::invalid_argument("order has no quantity");
    return kincir::Message("valid " + text);
  });

  std::atomic<std::size_t> shipped{0};
  std::atomic<std::size_t> correlated{0};
  router.add_consumer_handler("ship", "orders.valid", valid_orders, [&](const kincir::Message& order) {
    if (mw::correlation_id(order)) ++correlated;
    ++shipped;
  });

  kincir::SignalStop signals;
  std::thread runner([&] { router.run(signals.token()); });
  router.running().get();  // every handler is subscribed: nothing published now is missed

  for (std::size_t i = 0; i < count; ++i) {
    const bool malformed = i % 10 == 9;
    publisher.publish("orders", kincir::Message((malformed ? "malformed order " : "order ") + std::to_string(i)));
  }

  std::size_t poisoned = 0;
  while (shipped.load() + poisoned < count && !signals.token().stop_requested()) {
    if (poisoned_orders.receive_for(std::chrono::milliseconds(10))) ++poisoned;
  }
  const bool clean = router.close();  // no-op after Ctrl-C: the stop token already closed it
  runner.join();

  if (signals.signal() != 0) std::printf("Signal %d: router closed gracefully\n", signals.signal());
  std::printf("shipped %zu, poisoned %zu of %zu orders; %zu shipped with a correlation id; closed %s\n", shipped.load(),
              poisoned, count, correlated.load(), clean ? "cleanly" : "with orders requeued");
  return shipped.load() + poisoned == count ? 0 : 1;
}
