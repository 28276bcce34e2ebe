// A pool of RabbitMQ publishers (the performance guide's connection pool): at most N connections,
// each publisher borrowed as a PooledPublisher that goes back to the pool when it goes out of
// scope. Several threads share the pool; one more call borrows asynchronously.
// Needs a broker: connection_pool [amqp-uri] [messages-per-thread]
// (default amqp://guest:guest@localhost:5672).
#include <kincir/rabbitmq.hpp>

#include <asio/use_future.hpp>  // get_publisher(asio::use_future)

#include <atomic>     // message counter
#include <cstdio>     // std::printf
#include <cstdlib>    // std::atoi
#include <exception>  // std::exception
#include <string>     // payloads
#include <thread>     // publishing threads
#include <vector>     // threads

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  const std::string uri = argc > 1 ? argv[1] : "amqp://guest:guest@localhost:5672";
  const int per_thread = argc > 2 ? std::atoi(argv[2]) : 50;
  constexpr int kThreads = 4;
  constexpr std::size_t kMaxConnections = 2;  // fewer than threads: some wait their turn
  try {
    auto config = kincir::rabbitmq::RabbitMQConfig::for_testing();
    config.apply_uri(uri);
    kincir::rabbitmq::RabbitMQConnectionPool pool(config, kMaxConnections, 10s);
    const std::string topic = "kincir.example.pool." + kincir::Uuid::new_v4().to_string().substr(0, 8);
    kincir::rabbitmq::RabbitMQSubscriber subscriber(config);
    subscriber.subscribe(topic);

    std::atomic<int> published{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < per_thread; ++i) {
          auto publisher = pool.get_publisher();  // waits while all connections are in use
          publisher.get().publish(topic, kincir::Message("thread " + std::to_string(t) + " #" + std::to_string(i)));
          published.fetch_add(1);
        }  // each iteration gives its publisher back
      });
    }
    for (auto& t : threads) t.join();

    // The asynchronous form: the completion gets the publisher (here through a future).
    {
      auto publisher = pool.get_publisher(asio::use_future).get();
      publisher->publish(topic, kincir::Message(std::string("async")));
      published.fetch_add(1);
    }

    int received = 0;
    while (subscriber.receive_for(500ms)) ++received;
    std::printf(
        "%d threads published %d messages through at most %zu pooled connections (%zu idle now); "
        "received %d\n",
        kThreads, published.load(), pool.max_connections(), pool.idle(), received);
    if (received != published.load() || pool.idle() > kMaxConnections) return 1;
    std::printf("every pooled publish arrived\n");
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  return 0;
}
