/// @file
/// How kincir's model maps onto AMQP: topics to exchanges, routing keys and queues
/// (`TopologyConfig`), and messages to basic properties and back (`uuid` ↔ `message-id`,
/// metadata ↔ string headers, the publish time ↔ `timestamp`).
#pragma once

#include <kincir/config.hpp>

#include <kincir/core/message.hpp>              // Message
#include <kincir/core/uuid.hpp>                 // Uuid parsing
#include <kincir/rabbitmq/amqp/content.hpp>     // Delivery
#include <kincir/rabbitmq/amqp/methods.hpp>     // declare and bind methods
#include <kincir/rabbitmq/amqp/properties.hpp>  // BasicProperties
#include <kincir/rabbitmq/config.hpp>           // TopologyConfig, RabbitMQConfig

#include <chrono>       // timestamps
#include <cstdint>      // sequence numbers, counts
#include <string>       // names
#include <string_view>  // topics

namespace kincir::rabbitmq {

/// The header that carries a publisher's sequence number on mandatory publishes, so that a
/// `basic.return` is matched to its publish.
inline constexpr std::string_view kSequenceHeader = "x-kincir-seq";

/// The header (value "true") of a message republished after a connection recovery because its
/// first publish was never confirmed: it may have arrived already. A kincir subscriber sees it
/// as metadata of the same name; deduplicate by the message's uuid (`message-id`).
inline constexpr std::string_view kPossibleDuplicateHeader = "x-kincir-possible-duplicate";

/// Where a publish to a topic goes.
struct Route {
  std::string exchange;
  std::string routing_key;
};

/// The exchange and routing key for `topic`.
inline Route route_for(const TopologyConfig& t, std::string_view topic) {
  if (t.layout == Layout::queue_per_topic) return {"", std::string(topic)};
  if (!t.exchange.empty()) return {t.exchange, std::string(topic)};
  return {std::string(topic), t.routing_key};
}

/// The exchange.declare for `topic` (the explicit exchange if one is configured).
inline amqp::ExchangeDeclare exchange_declaration(const TopologyConfig& t, std::string_view topic) {
  amqp::ExchangeDeclare m;
  m.exchange = t.exchange.empty() ? std::string(topic) : t.exchange;
  m.type = t.exchange_type;
  m.durable = t.durable_exchanges;
  return m;
}

/// The queue a subscriber consumes from: queue-per-topic: the topic's queue; a group: the
/// durable `TOPIC.GROUP` (the topic, a dot, the group); otherwise an exclusive, auto-delete,
/// server-named queue.
inline amqp::QueueDeclare queue_declaration(const TopologyConfig& t, std::string_view topic, std::string_view group) {
  amqp::QueueDeclare m;
  m.arguments = t.queue_arguments;
  if (t.layout == Layout::queue_per_topic) {
    m.queue = std::string(topic);
    m.durable = t.durable_queues;
  } else if (!group.empty()) {
    m.queue = std::string(topic) + "." + std::string(group);
    m.durable = t.durable_queues;
  } else {
    m.exclusive = true;
    m.auto_delete = true;
  }
  return m;
}

/// The basic properties of a message: `message-id` (the uuid), `timestamp` (now), its metadata
/// as string headers, persistence, the sequence header when `seq` is not 0, and the
/// possible-duplicate header for a republished message.
inline amqp::BasicProperties properties_for(const Message& m, const RabbitMQConfig& cfg, std::uint64_t seq,
                                            bool possible_duplicate = false) {
  amqp::BasicProperties p;
  if (!m.uuid.is_nil()) p.message_id = m.uuid.to_string();
  p.timestamp = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  if (cfg.persistent) p.delivery_mode = 2;
  if (!m.metadata.empty() || seq != 0 || possible_duplicate) {
    amqp::FieldTable headers;
    headers.entries().reserve(m.metadata.size() + 2);
    for (const auto& [k, v] : m.metadata)
      if (k != kPossibleDuplicateHeader)
        headers.entries().push_back(amqp::FieldEntry{std::string(k), amqp::FieldValue(v)});
    if (seq != 0) headers.set(kSequenceHeader, static_cast<std::int64_t>(seq));
    if (possible_duplicate) headers.set(kPossibleDuplicateHeader, std::string("true"));
    p.headers = std::move(headers);
  }
  return p;
}

namespace detail {

/// An integer header value of any integer type, or `fallback`.
inline std::uint64_t integer_value(const amqp::FieldValue* v, std::uint64_t fallback) {
  if (v == nullptr) return fallback;
  std::uint64_t out = fallback;
  std::visit(
      [&out](const auto& x) {
        using T = std::remove_cvref_t<decltype(x)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          if constexpr (std::is_signed_v<T>) {
            if (x >= 0) out = static_cast<std::uint64_t>(static_cast<std::int64_t>(x));
          } else {
            out = static_cast<std::uint64_t>(x);
          }
        }
      },
      v->variant());
  return out;
}

}  // namespace detail

/// The sequence header of a returned message (0 if absent).
inline std::uint64_t sequence_of(const amqp::BasicProperties& p) {
  if (!p.headers) return 0;
  return detail::integer_value(p.headers->find(kSequenceHeader), 0);
}

/// How many times a message has been delivered, this time included: `x-delivery-count` + 1
/// (quorum queues count earlier deliveries), else 2 if `redelivered`, else 1.
inline std::uint32_t delivery_count_of(const amqp::Delivery& d) {
  if (d.properties.headers) {
    const auto* v = d.properties.headers->find("x-delivery-count");
    if (v != nullptr) {
      const std::uint64_t n = detail::integer_value(v, 0);
      return static_cast<std::uint32_t>(n >= 0xFFFFFFFEu ? 0xFFFFFFFFu : n + 1);
    }
  }
  return d.redelivered ? 2 : 1;
}

/// The kincir message of a delivery: the body (shared, not copied), the uuid from
/// `message-id` (a fresh one if it is not a UUID), string headers as metadata (kincir's own
/// `x-kincir-` headers left out, except `x-kincir-possible-duplicate`).
inline Message message_of(amqp::Delivery& d) {
  Message m;
  m.payload = std::move(d.body);
  std::error_code ec;
  if (d.properties.message_id) m.uuid = Uuid::parse(*d.properties.message_id, ec);
  if (!d.properties.message_id || ec) m.uuid = Uuid::new_v4();
  if (d.properties.headers) {
    for (const auto& entry : *d.properties.headers) {
      const auto* s = entry.value.get_if<std::string>();
      if (s == nullptr || (entry.name.rfind("x-kincir-", 0) == 0 && entry.name != kPossibleDuplicateHeader)) continue;
      m.metadata.set(entry.name, *s);
    }
  }
  return m;
}

}  // namespace kincir::rabbitmq
