/// @file
/// `kincir::memory::BrokerConfig`: every knob of the in-memory broker, with presets.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>
#include <kincir/log.hpp>

#include <chrono>        // TTL and cleanup interval
#include <cstddef>       // std::size_t
#include <cstdint>       // std::uint32_t
#include <optional>      // SubscriptionOptions: unset fields take the broker's value
#include <string>        // dead-letter topic
#include <string_view>   // topic validation
#include <system_error>  // std::error_code

namespace kincir::memory {

/// What `publish` does when the slowest subscriber of a topic is `max_queue_size` messages behind.
enum class OverflowPolicy {
  block,        ///< Wait for room (default): nothing is ever lost.
  reject,       ///< Fail the whole batch with `errc::queue_full`; nothing of it is published.
  drop_oldest,  ///< Publish anyway; a lagging subscriber skips ahead and counts what it lost.
};

/// Configuration of an `InMemoryBroker`. The fields the performance guide names come first.
/// `validate` rejects inconsistent values; the broker's constructor calls it.
struct BrokerConfig {
  /// Most messages a topic holds for its slowest subscriber (rounded up to a power of two).
  /// Memory is taken on demand, so a large value costs nothing until a backlog builds up.
  std::size_t max_queue_size = std::size_t{1} << 20;
  /// true: one total order per topic, also within a consumer group (members take one message at a
  /// time). false: group members take messages in batches, which is faster but lets members
  /// process out of publication order. Independent subscribers always see publication order.
  bool enable_message_ordering = true;
  /// Expire messages older than `default_ttl` at delivery (they are skipped and counted).
  bool enable_ttl = false;
  std::chrono::milliseconds default_ttl{std::chrono::minutes(5)};
  /// Compute `health()` in the background maintenance pass; off, `health()` reports
  /// `HealthState::unknown`.
  bool enable_health_monitoring = true;
  /// Period of the maintenance thread (expires redelivery queues, drops idle topics that have no
  /// subscriber, refreshes health). Zero: no maintenance thread.
  std::chrono::milliseconds cleanup_interval{std::chrono::seconds(60)};
  /// Most subscribers (group members count one each) a topic accepts.
  std::size_t max_subscribers_per_topic = 1000;
  /// Count published, delivered, dropped, expired... messages. Off, the hot paths count nothing.
  bool enable_statistics = true;

  /// Most topics the broker holds.
  std::size_t max_topics = 10'000;
  OverflowPolicy overflow_policy = OverflowPolicy::block;
  /// Most deliveries not yet acked per ack-mode subscriber; receive waits when it is reached.
  std::size_t max_unacked = 1000;
  /// A message nacked for requeue after this many deliveries goes to `dead_letter_topic`, or is
  /// dropped and counted when that is empty. The default of every ack subscription; a subscription
  /// may set its own (`SubscriptionOptions`).
  std::uint32_t max_deliveries = 5;
  /// Where a message goes when it is nacked without requeue or after `max_deliveries` (empty:
  /// dropped and counted). The default of every ack subscription.
  std::string dead_letter_topic;
  /// How long a message nacked for requeue waits before it can be delivered again (0: at once).
  /// Other messages are delivered meanwhile. The default of every ack subscription.
  std::chrono::milliseconds requeue_delay{0};

  /// Where the broker reports what would otherwise go unseen (each at `LogLevel::warn`): a
  /// publisher waiting for room longer than `stall_report_interval` (with the subscriber holding it
  /// back), messages dropped because their topic has no subscriber, a dead-lettered message
  /// dropped because the dead-letter topic has no subscriber or no room. Null (the default):
  /// nothing is logged; the same events are counted in `stats()` either way. The logger must
  /// outlive the broker and every publisher and subscriber of it.
  Logger* logger = nullptr;
  /// How long a publisher may wait for room before it is reported through `logger`, and the
  /// interval between repeated reports on one topic (at most one stall report and one drop report
  /// per topic per interval, however many publishers wait). At least 10 ms.
  std::chrono::milliseconds stall_report_interval{std::chrono::seconds(2)};

  /// The guide's defaults (the fields above as initialised).
  [[nodiscard]] static BrokerConfig with_default_config() { return {}; }

  /// Throughput first: no TTL, no health monitoring, no statistics, unordered groups, a rare
  /// maintenance pass.
  [[nodiscard]] static BrokerConfig for_high_performance() {
    BrokerConfig c;
    c.enable_message_ordering = false;
    c.enable_ttl = false;
    c.enable_health_monitoring = false;
    c.enable_statistics = false;
    c.cleanup_interval = std::chrono::minutes(5);
    return c;
  }

  /// Small and observable: short queues, statistics and health on, frequent maintenance, few
  /// deliveries before dead-lettering.
  [[nodiscard]] static BrokerConfig for_testing() {
    BrokerConfig c;
    c.max_queue_size = 1024;
    c.cleanup_interval = std::chrono::milliseconds(10);
    c.max_subscribers_per_topic = 64;
    c.max_topics = 100;
    c.max_unacked = 64;
    c.max_deliveries = 3;
    return c;
  }

  /// Largest `max_queue_size` accepted (2^32 messages).
  static constexpr std::size_t kMaxQueueSize = std::size_t{1} << 32;
  /// Longest `default_ttl` accepted (100 years: deadlines are kept in nanoseconds).
  static constexpr std::chrono::milliseconds kMaxTtl{std::chrono::hours(24) * 365 * 100};
  /// Longest `cleanup_interval` accepted (one year).
  static constexpr std::chrono::milliseconds kMaxCleanupInterval{std::chrono::hours(24) * 365};
  /// Longest `requeue_delay` accepted (one day).
  static constexpr std::chrono::milliseconds kMaxRequeueDelay{std::chrono::hours(24)};

  /// Checks the values; sets `ec` to `errc::invalid_argument` and returns false if one is out of
  /// range. `reason`, when given, receives which field is wrong and its allowed range.
  bool validate(std::error_code& ec, std::string* reason = nullptr) const;
};

/// Retry and dead-lettering of one ack subscription (`InMemoryAckSubscriber::subscribe(topic,
/// group, options)`). A field left unset takes the broker's value (`BrokerConfig`), so
/// `SubscriptionOptions{}` is the same as subscribing without options.
struct SubscriptionOptions {
  /// Deliveries before a message nacked for requeue is dead-lettered (at least 1).
  std::optional<std::uint32_t> max_deliveries;
  /// Where a rejected or exhausted message goes; an empty string: nowhere (dropped and counted),
  /// whatever the broker's default is.
  std::optional<std::string> dead_letter_topic;
  /// How long a message nacked for requeue waits before it can be delivered again (0 to 24 h).
  std::optional<std::chrono::milliseconds> requeue_delay;

  /// Checks the values that are set; sets `ec` to `errc::invalid_argument` and returns false if
  /// one is out of range. `reason`, when given, receives which field is wrong and its allowed
  /// range (the same sentences as `BrokerConfig::validate`).
  bool validate(std::error_code& ec, std::string* reason = nullptr) const;
};

/// The longest topic name accepted, in bytes.
inline constexpr std::size_t kMaxTopicLength = 255;

/// Non-empty, at most `kMaxTopicLength` bytes, no NUL.
[[nodiscard]] constexpr bool is_valid_topic(std::string_view topic) noexcept {
  return !topic.empty() && topic.size() <= kMaxTopicLength && topic.find('\0') == std::string_view::npos;
}

KINCIR_DECL bool BrokerConfig::validate(std::error_code& ec, std::string* reason) const {
  ec.clear();
  const char* bad = nullptr;
  if (max_queue_size == 0 || max_queue_size > kMaxQueueSize)
    bad = "max_queue_size must be in [1, 2^32]";
  else if (max_subscribers_per_topic == 0)
    bad = "max_subscribers_per_topic must be at least 1";
  else if (max_topics == 0)
    bad = "max_topics must be at least 1";
  else if (max_unacked == 0)
    bad = "max_unacked must be at least 1";
  else if (max_deliveries == 0)
    bad = "max_deliveries must be at least 1";
  else if (requeue_delay.count() < 0 || requeue_delay > kMaxRequeueDelay)
    bad = "requeue_delay must be in [0, 24 h]";
  else if (default_ttl.count() < 0 || default_ttl > kMaxTtl || (enable_ttl && default_ttl.count() == 0))
    bad = "default_ttl must be in [1 ms, 100 years] (0 allowed only with enable_ttl off)";
  else if (cleanup_interval.count() < 0 || cleanup_interval > kMaxCleanupInterval)
    bad = "cleanup_interval must be in [0, 365 days] (0: no maintenance thread)";
  else if (stall_report_interval < std::chrono::milliseconds(10) || stall_report_interval > kMaxCleanupInterval)
    bad = "stall_report_interval must be in [10 ms, 365 days]";
  else if (!dead_letter_topic.empty() && !is_valid_topic(dead_letter_topic))
    bad = "dead_letter_topic must be empty or a valid topic name (1-255 bytes, no NUL)";
  if (bad == nullptr) return true;
  ec = errc::invalid_argument;
  if (reason != nullptr) *reason = bad;
  return false;
}

KINCIR_DECL bool SubscriptionOptions::validate(std::error_code& ec, std::string* reason) const {
  ec.clear();
  const char* bad = nullptr;
  if (max_deliveries && *max_deliveries == 0)
    bad = "max_deliveries must be at least 1";
  else if (requeue_delay && (requeue_delay->count() < 0 || *requeue_delay > BrokerConfig::kMaxRequeueDelay))
    bad = "requeue_delay must be in [0, 24 h]";
  else if (dead_letter_topic && !dead_letter_topic->empty() && !is_valid_topic(*dead_letter_topic))
    bad = "dead_letter_topic must be empty or a valid topic name (1-255 bytes, no NUL)";
  if (bad == nullptr) return true;
  ec = errc::invalid_argument;
  if (reason != nullptr) *reason = bad;
  return false;
}

}  // namespace kincir::memory
