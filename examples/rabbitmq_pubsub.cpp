// RabbitMQ publish/subscribe: one publisher with confirms, two fan-out subscribers (each sees
// every message) and a consumer group of two (each message goes to one member, settled with
// acks); the connection recovers by itself if it is lost, and reports its state changes. Needs
// a broker: rabbitmq_pubsub [amqp-uri] [messages]
// (default amqp://guest:guest@localhost:5672).
#include <kincir/rabbitmq.hpp>

#include <cstdio>     // std::printf
#include <cstdlib>    // std::atoi
#include <exception>  // std::exception
#include <string>     // payloads
#include <vector>     // batches

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  const std::string uri = argc > 1 ? argv[1] : "amqp://guest:guest@localhost:5672";
  const int count = argc > 2 ? std::atoi(argv[2]) : 100;
  try {
    auto config = kincir::rabbitmq::RabbitMQConfig::for_testing();
    config.apply_uri(uri);
    // Reconnection is on by default; this callback (on the connection's handler thread) only
    // shows the state changes: connected, and recovering / recovered / failed after a loss.
    config.recovery.on_state = [](const kincir::rabbitmq::RecoveryEvent& e) {
      std::printf("connection %s%s%s\n", std::string(kincir::rabbitmq::to_string(e.state)).c_str(), e.error ? ": " : "",
                  e.error ? e.error.message().c_str() : "");
    };
    auto connection = kincir::rabbitmq::Connection::open(config);
    const std::string topic = "kincir.example." + kincir::Uuid::new_v4().to_string().substr(0, 8);

    // Subscribe first: a fan-out subscriber sees what is published after it subscribed.
    kincir::rabbitmq::RabbitMQSubscriber audit_a(connection);
    kincir::rabbitmq::RabbitMQSubscriber audit_b(connection);
    audit_a.subscribe(topic);
    audit_b.subscribe(topic);
    kincir::rabbitmq::RabbitMQSubscriber worker_1(connection);
    kincir::rabbitmq::RabbitMQSubscriber worker_2(connection);
    worker_1.subscribe(topic, "workers");
    worker_2.subscribe(topic, "workers");

    kincir::rabbitmq::RabbitMQPublisher publisher(connection);
    std::vector<kincir::Message> batch;
    for (int i = 0; i < count; ++i)
      batch.push_back(kincir::Message(std::to_string(i)).with_metadata("order", std::to_string(i)));
    publisher.publish(topic, std::move(batch));  // returns once the broker confirmed every message
    std::printf("published %d messages, all confirmed\n", count);

    int fan_out = 0;
    for (auto* s : {&audit_a, &audit_b})
      while (s->receive_for(500ms)) ++fan_out;
    int worked = 0;
    for (;;) {
      bool any = false;
      for (auto* w : {&worker_1, &worker_2}) {
        if (auto delivery = w->receive_with_ack_for(300ms)) {
          w->ack(delivery->second);
          ++worked;
          any = true;
        }
      }
      if (!any) break;
    }
    std::printf("fan-out subscribers received %d (2 x %d), the group %d\n", fan_out, count, worked);
    if (fan_out != 2 * count || worked != count) return 1;
    std::printf("every subscriber received every message, the group each once\n");
    connection->close();
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  return 0;
}
