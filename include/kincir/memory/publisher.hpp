/// @file
/// `kincir::memory::InMemoryPublisher`: publishes messages to the topics of an `InMemoryBroker`.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/concepts.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>
#include <kincir/memory/broker.hpp>
#include <kincir/memory/detail/topic.hpp>

#include <memory>        // std::shared_ptr
#include <mutex>         // the topic cache
#include <span>          // message ranges
#include <string>        // cached topic name
#include <string_view>   // topics
#include <system_error>  // std::error_code
#include <vector>        // batches

namespace kincir::memory {

/// Publishes to an `InMemoryBroker`. A batch is moved into the topic's ring with one claim (no
/// payload or metadata copy). What happens when a subscriber is `max_queue_size` behind follows
/// `BrokerConfig::overflow_policy`: wait (default), fail with `errc::queue_full`, or overtake.
///
/// On failure the batch is left as it was, so the caller still owns every message. On success
/// the batch's messages are moved from and the vector is cleared. A publisher may be shared by
/// threads.
class InMemoryPublisher {
 public:
  explicit InMemoryPublisher(const InMemoryBroker& broker) : broker_(broker.state_) {}
  explicit InMemoryPublisher(const std::shared_ptr<InMemoryBroker>& broker) : broker_(broker->state_) {}

  /// Publishes every message of `batch` to `topic`, in order. An empty batch does nothing.
  /// Errors: `invalid_topic`, `too_many_topics`, `queue_full` (policy `reject`),
  /// `broker_shutdown`.
  void publish(std::string_view topic, std::vector<Message>&& batch, std::error_code& ec) {
    if (publish_range(topic, std::span<Message>(batch), ec)) batch.clear();
  }

  /// Throws `kincir::Error` on failure.
  void publish(std::string_view topic, std::vector<Message>&& batch) {
    std::error_code ec;
    publish(topic, std::move(batch), ec);
    throw_if(ec, "InMemoryPublisher::publish");
  }

  /// Publishes one message (no vector is allocated). On failure `message` is left as it was.
  void publish(std::string_view topic, Message&& message, std::error_code& ec) {
    publish_range(topic, std::span<Message>(&message, 1), ec);
  }

  void publish(std::string_view topic, Message&& message) {
    std::error_code ec;
    publish(topic, std::move(message), ec);
    throw_if(ec, "InMemoryPublisher::publish");
  }

  /// Publishes without ever waiting: where policy `block` would wait, fails with
  /// `errc::queue_full` instead, leaving the batch as it was.
  void try_publish(std::string_view topic, std::vector<Message>&& batch, std::error_code& ec) {
    if (publish_range(topic, std::span<Message>(batch), ec, /*may_wait=*/false)) batch.clear();
  }

 private:
  /// Returns true when the messages were taken.
  bool publish_range(std::string_view name, std::span<Message> messages, std::error_code& ec, bool may_wait = true) {
    ec.clear();
    auto& broker = *broker_;
    if (broker.phase() != detail::Phase::running) [[unlikely]] {
      ec = errc::broker_shutdown;
      return false;
    }
    const std::shared_ptr<detail::Topic> topic = lookup(name, ec);
    if (!topic) return false;
    if (messages.empty()) return true;
    const auto& config = broker.config();

    if (topic->ring.cursor_count() == 0) {
      // Nobody subscribed: the messages are dropped, as a topic without subscribers does.
      if (config.enable_statistics) topic->counters.dropped.fetch_add(messages.size(), std::memory_order_relaxed);
      for (auto& m : messages) Message(std::move(m));
      return true;
    }

    if (!may_wait && messages.size() > topic->ring.capacity()) {
      ec = errc::queue_full;  // could only be published in pieces; nothing is taken
      return false;
    }
    const std::int64_t expires = config.enable_ttl ? detail::steady_now_ns() + ttl_ns(config) : 0;
    const detail::EnvelopeIterator first(messages.data(), expires);
    const detail::EnvelopeIterator last(messages.data() + messages.size(), expires);
    switch (topic->publish(first, last, may_wait, config.enable_statistics)) {
      case PublishStatus::ok: return true;
      case PublishStatus::full:
      case PublishStatus::timeout: ec = errc::queue_full; return false;
      default: ec = broker.phase() != detail::Phase::running ? errc::broker_shutdown : errc::closed; return false;
    }
  }

  static std::int64_t ttl_ns(const BrokerConfig& config) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(config.default_ttl).count();
  }

  /// The topic, from a one-entry cache (publishers usually stick to one topic); a deleted topic
  /// is looked up (and created) again.
  std::shared_ptr<detail::Topic> lookup(std::string_view name, std::error_code& ec) {
    const std::lock_guard lock(cache_mutex_);
    if (cached_topic_ && cached_name_ == name && !cached_topic_->deleted.load(std::memory_order_acquire))
      return cached_topic_;
    auto topic = broker_->find_topic(name, true, ec);
    if (topic) {
      cached_name_.assign(name);
      cached_topic_ = topic;
    }
    return topic;
  }

  std::shared_ptr<detail::BrokerState> broker_;
  std::mutex cache_mutex_;
  std::string cached_name_;
  std::shared_ptr<detail::Topic> cached_topic_;
};

static_assert(Publisher<InMemoryPublisher>);

}  // namespace kincir::memory
