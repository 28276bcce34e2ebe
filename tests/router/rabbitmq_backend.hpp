// The RabbitMQ backend of the conformance suite (conformance_test.cpp): kincir's RabbitMQ adapter
// against a real broker, the throw-away node that the CTest fixture rabbitmq.broker_start starts
// (tests/rabbitmq/broker.sh), named by node_uri() (rabbitmq/broker_ctl.hpp: KINCIR_RABBITMQ_URI, or
// the port in KINCIR_RABBITMQ_PORT, read at test time); KINCIR_RABBITMQ_CTL is the command that
// runs rabbitmqctl against it (reconnect() needs it).
//
// Each fixture opens one connection, named uniquely so that reconnect() can have the broker close
// exactly that one, shared by the publishers and subscribers it hands out. The mapping is the
// adapter's default (exchange per topic, fanout): a subscriber without a group gets an exclusive
// auto-delete queue of its own, a group gets the durable queue `<topic>.<group>`, which outlives its
// members. Messages are persistent, exchanges and group queues durable, as in production; they get
// fresh names per fixture, so runs never meet each other's leftovers.
#pragma once

#include <kincir/core/uuid.hpp>
#include <kincir/rabbitmq/connection.hpp>
#include <kincir/rabbitmq/publisher.hpp>
#include <kincir/rabbitmq/subscriber.hpp>

#include "rabbitmq/broker_ctl.hpp"
#include "router/backends.hpp"
#include "support/catch.hpp"

#include <atomic>       // unique topic names
#include <chrono>       // bounded waits
#include <memory>       // the connection
#include <string>       // names
#include <string_view>  // names
#include <thread>       // polling

namespace kincir::test {

/// kincir's RabbitMQ adapter on a real broker, one connection per fixture.
///
/// Features, and why:
/// - ordering: one publisher's messages reach a queue, and its one consumer, in publish order
///   (nothing fails in these tests; a redelivery or a republish after a recovery may overtake).
/// - persistent: exchanges and group queues are durable, messages persistent (delivery-mode 2): confirmed
///   messages survive their subscribers and a broker restart (the adapter's fault tests restart
///   and kill the node; this suite does not).
/// - groups: a group is one shared queue whose consumers compete.
/// - requeue: `nack(h, true)` is basic.nack(requeue): the broker delivers the message again.
/// - delivery_count: classic queues report only `redelivered`: the adapter says 1, or 2 for any
///   redelivery — exact counts past 2 need quorum queues, which cannot be the exclusive queue of a
///   subscriber without a group. The suite checks 2 on the first redelivery, which holds.
/// - receives_before_subscribe: true for a group whose queue was declared before the publish (a
///   group's queue outlives its members; the suite's test subscribes the group first). A
///   subscriber without a group sees only what is published after it subscribed (its queue is
///   its own and is created by subscribe).
/// - reconnect: the adapter recovers a connection the broker closed (320 via
///   `rabbitmqctl close_connection`): publishers republish, subscribers consume again.
///
/// Known defects (kDefects): none. A router ends when the connection is closed for good (the
/// subscriber's final error is `receive_condition::ended`) and leaves its subscriptions when it
/// closes (`unsubscribe()`: the consumer's prefetch goes back to the queue).
class RabbitMQBackend {
 public:
  static constexpr std::string_view kName = "rabbitmq";
  static constexpr BackendFeatures kFeatures{.ordering = true,
                                             .persistent = true,
                                             .groups = true,
                                             .requeue = true,
                                             .delivery_count = true,
                                             .receives_before_subscribe = true,
                                             .reconnect = true};
  static constexpr KnownDefects kDefects{};
  using publisher_type = rabbitmq::RabbitMQPublisher;
  using subscriber_type = rabbitmq::RabbitMQSubscriber;

  RabbitMQBackend() : name_("kincir-conformance-" + short_id()), connection_(rabbitmq::Connection::open(config())) {}
  RabbitMQBackend(const RabbitMQBackend&) = delete;
  RabbitMQBackend& operator=(const RabbitMQBackend&) = delete;
  ~RabbitMQBackend() {
    std::error_code ignored;
    connection_->close(ignored);
  }

  publisher_type publisher() { return publisher_type(connection_); }
  subscriber_type subscriber() { return subscriber_type(connection_); }
  std::string topic(std::string_view stem) {
    static std::atomic<int> next{0};
    return "conformance." + std::string(stem) + "." + prefix_ + "-" + std::to_string(next.fetch_add(1));
  }
  /// Closes the connection (connection.close, not recoverable): every client on it ends.
  void shutdown() {
    std::error_code ignored;
    connection_->close(ignored);
  }
  /// Has the broker close this fixture's connection (320 CONNECTION_FORCED, as a broker restart
  /// or an operator would) and waits, bounded, until the adapter recovered it. False if no
  /// connection could be closed or it did not come back.
  bool reconnect() {
    const auto before = connection_->recovery_stats().recovered;
    if (kincir::test::close_connections_named(name_, "kincir conformance: reconnect") == 0) return false;
    const auto until = std::chrono::steady_clock::now() + kPatience;
    while (connection_->recovery_stats().recovered == before) {
      if (std::chrono::steady_clock::now() >= until) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
  }

  [[nodiscard]] const std::shared_ptr<rabbitmq::Connection>& connection() const noexcept { return connection_; }

 private:
  static std::string short_id() { return Uuid::new_v4().to_string().substr(0, 8); }

  rabbitmq::RabbitMQConfig config() const {
    rabbitmq::RabbitMQConfig c = rabbitmq::RabbitMQConfig::for_testing();
    c.apply_uri(node_uri());
    c.connection.connection_name = name_;
    c.topology.durable_exchanges = true;
    c.topology.durable_queues = true;
    c.persistent = true;
    return c;
  }

  std::string name_;
  std::string prefix_ = short_id();
  std::shared_ptr<rabbitmq::Connection> connection_;
};

}  // namespace kincir::test
