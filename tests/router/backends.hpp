// Backends for the conformance suite (conformance_test.cpp). A backend fixture provides fresh
// publishers and ack subscribers on one broker, a way to shut the broker down, and declares what
// it guarantees; tests needing a guarantee it lacks are skipped with the reason.
//
// A fixture is a default-constructible type with:
//   static constexpr std::string_view kName;
//   static constexpr kincir::test::BackendFeatures kFeatures;
//   static constexpr kincir::test::KnownDefects kDefects;
//   using publisher_type = ...;   // models kincir::Publisher
//   using subscriber_type = ...;  // models kincir::AckSubscriber, subscribe(topic, group[, ec])
//   publisher_type publisher();
//   subscriber_type subscriber();
//   std::string topic(std::string_view stem);  // a name no other test uses
//   void shutdown();                           // closes the broker (or connection) under the clients
//   bool reconnect();  // drops the connection, waits until it is restored (kFeatures.reconnect)
//
// The fixtures: MemoryBackend below; RabbitMQBackend in rabbitmq_backend.hpp (needs a broker).
#pragma once

#include <kincir/memory/broker.hpp>
#include <kincir/memory/publisher.hpp>
#include <kincir/memory/subscriber.hpp>

#include "router/support.hpp"

#include <atomic>       // unique topic names
#include <memory>       // the broker
#include <string>       // topic names
#include <string_view>  // names

namespace kincir::test {

/// What a backend guarantees.
struct BackendFeatures {
  /// Messages of one publisher on one topic arrive in publication order.
  bool ordering = false;
  /// Messages survive the subscribers (and the broker process) going away.
  bool persistent = false;
  /// Consumer groups: each message goes to one member of each group.
  bool groups = false;
  /// `nack(handle, true)` redelivers.
  bool requeue = false;
  /// Handles report the delivery count (2 on the first redelivery).
  bool delivery_count = false;
  /// A group's subscriber receives what was published to the topic while no member was
  /// subscribed, once the group had subscribed before (a broker that keeps the group's queue).
  bool receives_before_subscribe = false;
  /// The client reconnects after the connection drops.
  bool reconnect = false;
};

/// Conformance cases a backend is known to fail. None is known today. To declare one, add a
/// `std::string_view` field named after the defect, set it in the fixture's `kDefects` to the
/// description (symptom, where it lies), and have the case check `KINCIR_HAS_DEFECT(field)`: it
/// warns with the description (`KINCIR_WARN_DEFECT`) and checks what it still can (or is
/// skipped). A known defect is never silent, and fixing it means removing the field.
struct KnownDefects {};

/// kincir's in-memory broker, one per fixture.
class MemoryBackend {
 public:
  static constexpr std::string_view kName = "memory";
  static constexpr BackendFeatures kFeatures{.ordering = true,
                                             .persistent = false,
                                             .groups = true,
                                             .requeue = true,
                                             .delivery_count = true,
                                             .receives_before_subscribe = false,
                                             .reconnect = false};
  static constexpr KnownDefects kDefects{};
  using publisher_type = memory::InMemoryPublisher;
  using subscriber_type = memory::InMemoryAckSubscriber;

  MemoryBackend() : broker_(std::make_shared<memory::InMemoryBroker>(quiet_broker_config())) {}

  publisher_type publisher() { return publisher_type(broker_); }
  subscriber_type subscriber() { return subscriber_type(broker_); }
  std::string topic(std::string_view stem) {
    static std::atomic<int> next{0};
    return std::string(stem) + "-" + std::to_string(next.fetch_add(1));
  }
  void shutdown() { broker_->shutdown(); }
  bool reconnect() { return false; }

 private:
  std::shared_ptr<memory::InMemoryBroker> broker_;
};

}  // namespace kincir::test
