/// @file
/// `kincir::memory::InMemoryPublisher`: publishes messages to the topics of an `InMemoryBroker`.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/concepts.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>
#include <kincir/memory/broker.hpp>
#include <kincir/memory/detail/topic.hpp>

#include <algorithm>     // std::min, std::find
#include <atomic>        // publishes in flight
#include <cstddef>       // std::size_t, std::ptrdiff_t
#include <memory>        // std::shared_ptr
#include <mutex>         // the topic cache
#include <span>          // message ranges
#include <string>        // cached topic name
#include <string_view>   // topics
#include <system_error>  // std::error_code
#include <vector>        // batches

namespace kincir::memory {

/// Publishes to an `InMemoryBroker`. A batch of at most `max_queue_size` messages is moved into
/// the topic's ring with one claim (no payload or metadata copy), so its messages are contiguous;
/// a larger batch goes out in pieces of `max_queue_size`, between which other publishers'
/// messages may land. What happens when a subscriber is `max_queue_size` behind follows
/// `BrokerConfig::overflow_policy`: wait (default), fail with `errc::queue_full`, or overtake.
///
/// On success the batch's messages are moved from and the vector is cleared. On failure the
/// vector holds exactly the messages that were not published, in order: the published ones (a
/// prefix, when a shutdown stops a large batch after its first pieces) are removed, and when
/// nothing was published the vector is left as it was. A publisher may be shared by threads; it
/// may be moved (not while a publish through it runs), and a moved-from publisher still works.
class InMemoryPublisher {
 public:
  explicit InMemoryPublisher(const InMemoryBroker& broker) : broker_(broker.state_) {}
  explicit InMemoryPublisher(const std::shared_ptr<InMemoryBroker>& broker) : broker_(broker->state_) {}

  // The topic cache stays behind (it is only a cache); both publishers keep the broker.
  InMemoryPublisher(InMemoryPublisher&& other) noexcept
      : broker_(other.broker_) {}  // NOLINT(performance-move-constructor-init): the moved-from one keeps working
  InMemoryPublisher& operator=(InMemoryPublisher&& other) noexcept {
    if (this != &other) {
      const std::lock_guard lock(cache_mutex_);
      cached_topic_.reset();
      cached_name_.clear();
      replaced_.clear();
      broker_ = other.broker_;
    }
    return *this;
  }
  InMemoryPublisher(const InMemoryPublisher&) = delete;
  InMemoryPublisher& operator=(const InMemoryPublisher&) = delete;
  ~InMemoryPublisher() = default;

  /// Publishes every message of `batch` to `topic`, in order. An empty batch does nothing.
  /// Errors: `invalid_topic`, `too_many_topics`, `queue_full` (policy `reject`),
  /// `broker_shutdown`.
  void publish(std::string_view topic, std::vector<Message>&& batch, std::error_code& ec) {
    take(batch, publish_range(topic, std::span<Message>(batch), ec));
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

  /// Publishes without ever waiting, all of the batch or nothing: where policy `block` would
  /// wait, and for a batch larger than `max_queue_size`, fails with `errc::queue_full` and
  /// leaves the batch as it was.
  void try_publish(std::string_view topic, std::vector<Message>&& batch, std::error_code& ec) {
    take(batch, publish_range(topic, std::span<Message>(batch), ec, /*may_wait=*/false));
  }

  /// One message, without ever waiting: `errc::queue_full` where it would wait, `message` left
  /// as it was on any failure.
  void try_publish(std::string_view topic, Message&& message, std::error_code& ec) {
    publish_range(topic, std::span<Message>(&message, 1), ec, /*may_wait=*/false);
  }

  /// Throwing forms: false (the batch or message left as it was) where the call would have to
  /// wait; `kincir::Error` for every other failure.
  bool try_publish(std::string_view topic, std::vector<Message>&& batch) {
    std::error_code ec;
    try_publish(topic, std::move(batch), ec);
    return try_result(ec, "InMemoryPublisher::try_publish");
  }
  bool try_publish(std::string_view topic, Message&& message) {
    std::error_code ec;
    try_publish(topic, std::move(message), ec);
    return try_result(ec, "InMemoryPublisher::try_publish");
  }

 private:
  static bool try_result(std::error_code ec, const char* what) {
    if (ec == errc::queue_full) return false;
    throw_if(ec, what);
    return true;
  }

  /// Removes the first `taken` messages of `batch` (all of them on success).
  static void take(std::vector<Message>& batch, std::size_t taken) {
    if (taken == batch.size())
      batch.clear();
    else if (taken != 0)
      batch.erase(batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(taken));
  }

  /// Returns how many messages, from the front, were taken (published, or dropped for want of
  /// a subscriber); all of them unless `ec` is set.
  std::size_t publish_range(std::string_view name, std::span<Message> messages, std::error_code& ec,
                            bool may_wait = true) {
    ec.clear();
    auto& broker = *broker_;
    const auto& config = broker.config();
    std::size_t taken = 0;
    for (;;) {
      if (broker.phase() != detail::Phase::running) [[unlikely]] {
        ec = errc::broker_shutdown;
        return taken;
      }
      const TopicUse use = lookup(name, ec);
      detail::Topic* const topic = use.get();
      if (topic == nullptr) return taken;
      if (taken == messages.size()) return taken;

      if (topic->ring.cursor_count() == 0) {
        // Nobody subscribed: the messages are dropped, as a topic without subscribers does.
        topic->dropped_without_subscriber(messages.size() - taken, config.enable_statistics,
                                          "published to a topic with no subscriber: dropped");
        for (auto& m : messages.subspan(taken)) Message(std::move(m));
        return messages.size();
      }

      const std::size_t capacity = topic->ring.capacity();
      if ((!may_wait || config.overflow_policy == OverflowPolicy::reject) && messages.size() - taken > capacity) {
        ec = errc::queue_full;  // could only be published in pieces; nothing is taken
        return taken;
      }
      const std::int64_t expires = config.enable_ttl ? detail::steady_now_ns() + ttl_ns(config) : 0;
      // One claim per piece of at most `capacity` messages.
      PublishStatus status = PublishStatus::ok;
      while (taken < messages.size()) {
        const std::size_t n = std::min(capacity, messages.size() - taken);
        const detail::EnvelopeIterator first(messages.data() + taken, expires);
        status = topic->publish(first, first + static_cast<std::ptrdiff_t>(n), may_wait, config.enable_statistics);
        if (status != PublishStatus::ok) break;
        taken += n;
      }
      switch (status) {
        case PublishStatus::ok: return taken;
        case PublishStatus::full:
        case PublishStatus::timeout: ec = errc::queue_full; return taken;
        default: break;
      }
      // Closed: the broker shut down (reported at the top of the loop), or the topic was deleted
      // (or removed as idle) under us: publish the rest to the topic that now has the name.
      if (broker.phase() == detail::Phase::running && !topic->deleted.load(std::memory_order_acquire)) {
        ec = errc::closed;
        return taken;
      }
    }
  }

  static std::int64_t ttl_ns(const BrokerConfig& config) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(config.default_ttl).count();
  }

  /// A topic in use by one publish. The publisher keeps it alive: every topic its cache handed out
  /// stays referenced (in the cache, or among the replaced ones) until no publish is in flight, so
  /// a publish copies no `shared_ptr` (whose count every publisher of the topic would share).
  class TopicUse {
   public:
    TopicUse(detail::Topic* topic, std::atomic<std::size_t>* in_flight) noexcept
        : topic_(topic), in_flight_(in_flight) {}
    TopicUse(const TopicUse&) = delete;
    TopicUse& operator=(const TopicUse&) = delete;
    ~TopicUse() {
      // release: this publish's use of the topic happens before a later lookup frees it.
      if (in_flight_ != nullptr) in_flight_->fetch_sub(1, std::memory_order_release);
    }
    [[nodiscard]] detail::Topic* get() const noexcept { return topic_; }

   private:
    detail::Topic* topic_;
    std::atomic<std::size_t>* in_flight_;
  };

  /// The topic, from a one-entry cache (publishers usually stick to one topic); a deleted topic
  /// is looked up (and created) again.
  TopicUse lookup(std::string_view name, std::error_code& ec) {
    const std::lock_guard lock(cache_mutex_);
    // Uses start under this lock, so with none in flight no other thread holds a replaced topic.
    // acquire: pairs with the release of the uses that ended.
    if (!replaced_.empty() && in_flight_.load(std::memory_order_acquire) == 0) replaced_.clear();
    if (!cached_topic_ || cached_name_ != name || cached_topic_->deleted.load(std::memory_order_acquire)) {
      auto topic = broker_->find_topic(name, true, ec);
      if (!topic) return {nullptr, nullptr};
      // Kept once each (a publisher alternating between topics does not pile them up).
      if (cached_topic_ && std::find(replaced_.begin(), replaced_.end(), cached_topic_) == replaced_.end())
        replaced_.push_back(std::move(cached_topic_));
      cached_name_.assign(name);
      cached_topic_ = std::move(topic);
    }
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    return {cached_topic_.get(), &in_flight_};
  }

  std::shared_ptr<detail::BrokerState> broker_;
  std::mutex cache_mutex_;
  std::string cached_name_;
  std::shared_ptr<detail::Topic> cached_topic_;
  std::vector<std::shared_ptr<detail::Topic>> replaced_;  ///< Replaced while a publish was in flight.
  std::atomic<std::size_t> in_flight_{0};                 ///< Publishes using a topic from the cache.
};

static_assert(Publisher<InMemoryPublisher>);

}  // namespace kincir::memory
