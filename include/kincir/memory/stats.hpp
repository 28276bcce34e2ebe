/// @file
/// Snapshots the in-memory broker reports: `BrokerStats`, `TopicInfo`, `SubscriberInfo`,
/// `HealthStatus`.
#pragma once

#include <kincir/config.hpp>

#include <chrono>   // snapshot times
#include <cstdint>  // counters
#include <string>   // names
#include <vector>   // per-topic and per-subscriber lists

namespace kincir::memory {

/// One subscriber of a topic, as seen by `topic_info` and `stats`.
struct SubscriberInfo {
  std::uint64_t id = 0;    ///< Unique within the broker.
  std::string group;       ///< Empty for an independent subscriber.
  std::uint64_t lag = 0;   ///< Messages published but not yet received by it (or its group).
  std::uint64_t lost = 0;  ///< Messages it skipped because `drop_oldest` overtook it.
  std::uint64_t delivered = 0;
  std::uint64_t unacked = 0;  ///< Outstanding deliveries of an ack-mode subscriber.
};

/// Counters of one topic. Counters are zero when statistics are disabled, except
/// `dropped_no_subscriber`, `publisher_waits` and `publishers_blocked`, which are always kept.
struct TopicInfo {
  std::string name;
  std::size_t subscribers = 0;  ///< Subscribers, counting each group member.
  std::size_t groups = 0;
  std::uint64_t published = 0;    ///< Messages accepted by `publish`.
  std::uint64_t delivered = 0;    ///< Messages handed to subscribers (each subscriber counts).
  std::uint64_t dropped = 0;      ///< Published without a subscriber, overtaken, or dropped after `max_deliveries`.
  std::uint64_t expired = 0;      ///< Skipped at delivery because their TTL had passed.
  std::uint64_t redelivered = 0;  ///< Deliveries after a `nack` with requeue.
  std::uint64_t dead_lettered = 0;
  std::uint64_t queue_depth = 0;  ///< Messages the slowest subscriber has still to receive.
  /// Messages published while the topic had no subscriber (also counted in `dropped` when
  /// statistics are on; kept even with statistics off, like the two publisher counters below:
  /// they are on slow paths).
  std::uint64_t dropped_no_subscriber = 0;
  /// Publishes that found the topic full (`OverflowPolicy::block`) and had to wait for room (a
  /// batch larger than `max_queue_size` is published, and counted, in pieces of that size).
  std::uint64_t publisher_waits = 0;
  /// Publishers waiting for room right now, held back by `slowest_subscriber`.
  std::uint64_t publishers_blocked = 0;
  /// Id of the subscriber with the largest lag (the one a full topic waits for); 0 if nobody lags.
  std::uint64_t slowest_subscriber = 0;
  std::vector<SubscriberInfo> subscriber_info;
};

/// The whole broker. The totals also count the topics that no longer exist (deleted, or removed
/// by the maintenance pass as idle: a topic without subscribers); `per_topic` lists the live ones.
struct BrokerStats {
  std::size_t topics = 0;
  std::size_t subscribers = 0;
  std::uint64_t published = 0;
  std::uint64_t delivered = 0;
  std::uint64_t dropped = 0;
  std::uint64_t expired = 0;
  std::uint64_t redelivered = 0;
  std::uint64_t dead_lettered = 0;
  std::uint64_t queue_depth = 0;  ///< Sum over topics.
  std::uint64_t dropped_no_subscriber = 0;
  std::uint64_t publisher_waits = 0;
  std::uint64_t publishers_blocked = 0;
  std::vector<TopicInfo> per_topic;
};

enum class HealthState {
  unknown,    ///< Health monitoring is disabled, or no maintenance pass has run yet.
  healthy,    ///< Every subscriber is less than half a queue behind.
  degraded,   ///< Some subscriber is at least half a queue behind (publishers may soon block).
  unhealthy,  ///< Some subscriber is a full queue behind, or the broker is shut down.
};

struct HealthStatus {
  HealthState state = HealthState::unknown;
  std::size_t topics = 0;
  std::size_t subscribers = 0;
  std::uint64_t max_lag = 0;             ///< Largest subscriber lag.
  std::string worst_topic;               ///< Topic of that subscriber.
  std::uint64_t worst_subscriber = 0;    ///< Id of that subscriber (see `SubscriberInfo::id`); 0 if nobody lags.
  std::uint64_t publishers_blocked = 0;  ///< Publishers waiting for room, over every topic.
  std::chrono::system_clock::time_point checked_at{};
};

[[nodiscard]] constexpr const char* to_string(HealthState s) noexcept {
  switch (s) {
    case HealthState::unknown: return "unknown";
    case HealthState::healthy: return "healthy";
    case HealthState::degraded: return "degraded";
    case HealthState::unhealthy: return "unhealthy";
  }
  return "invalid";
}

}  // namespace kincir::memory
