/// @file
/// Internal: a topic of the in-memory broker (its ring, groups, subscriber registry, counters).
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/message.hpp>
#include <kincir/log.hpp>
#include <kincir/memory/config.hpp>
#include <kincir/memory/detail/wait.hpp>
#include <kincir/memory/ring.hpp>
#include <kincir/memory/stats.hpp>

#include <algorithm>      // std::find, std::min
#include <atomic>         // counters, flags
#include <chrono>         // steady clock for TTL
#include <compare>        // iterator ordering
#include <cstddef>        // std::ptrdiff_t
#include <cstdint>        // counters
#include <deque>          // requeued deliveries
#include <iterator>       // iterator tags
#include <limits>         // no delayed delivery due
#include <map>            // delayed requeued deliveries
#include <memory>         // std::shared_ptr
#include <mutex>          // registry and requeue locks
#include <string>         // names
#include <unordered_map>  // groups by name
#include <utility>        // std::move
#include <vector>         // registry

namespace kincir::memory::detail {

/// Nanoseconds on the steady clock; TTL deadlines are kept in this unit (0 means none).
inline std::int64_t steady_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// What a ring slot holds: the message and its expiry.
struct Envelope {
  Message message;
  std::int64_t expires_ns = 0;
};

/// The ring prefetches what handing out and destroying an envelope will touch (its payload's
/// owner) a few slots ahead of its readers.
inline void ring_prefetch(const Envelope& e) noexcept { e.message.payload.prefetch(); }

using Ring = BroadcastRing<Envelope>;

/// Presents a span of messages to the ring as envelopes: dereferencing moves the message out into
/// an `Envelope` carrying the batch's expiry. The ring dereferences each position once.
class EnvelopeIterator {
 public:
  using iterator_concept = std::random_access_iterator_tag;
  using iterator_category = std::input_iterator_tag;  // yields prvalues
  using value_type = Envelope;
  using difference_type = std::ptrdiff_t;
  using reference = Envelope;

  EnvelopeIterator() = default;
  EnvelopeIterator(Message* position, std::int64_t expires_ns) noexcept : p_(position), expires_(expires_ns) {}

  Envelope operator*() const noexcept { return Envelope{std::move(*p_), expires_}; }
  Envelope operator[](difference_type n) const noexcept { return Envelope{std::move(p_[n]), expires_}; }

  EnvelopeIterator& operator++() noexcept { return ++p_, *this; }
  EnvelopeIterator operator++(int) noexcept { return {p_++, expires_}; }
  EnvelopeIterator& operator--() noexcept { return --p_, *this; }
  EnvelopeIterator operator--(int) noexcept { return {p_--, expires_}; }
  EnvelopeIterator& operator+=(difference_type n) noexcept { return p_ += n, *this; }
  EnvelopeIterator& operator-=(difference_type n) noexcept { return p_ -= n, *this; }
  friend EnvelopeIterator operator+(EnvelopeIterator i, difference_type n) noexcept { return i += n; }
  friend EnvelopeIterator operator+(difference_type n, EnvelopeIterator i) noexcept { return i += n; }
  friend EnvelopeIterator operator-(EnvelopeIterator i, difference_type n) noexcept { return i -= n; }
  friend difference_type operator-(const EnvelopeIterator& a, const EnvelopeIterator& b) noexcept {
    return a.p_ - b.p_;
  }
  friend bool operator==(const EnvelopeIterator& a, const EnvelopeIterator& b) noexcept { return a.p_ == b.p_; }
  friend auto operator<=>(const EnvelopeIterator& a, const EnvelopeIterator& b) noexcept { return a.p_ <=> b.p_; }

 private:
  Message* p_ = nullptr;
  std::int64_t expires_ = 0;
};
static_assert(std::random_access_iterator<EnvelopeIterator>);

/// A delivery waiting to be handed out again after a `nack` with requeue.
struct Requeued {
  Message message;
  std::int64_t expires_ns = 0;
  std::uint32_t deliveries = 0;  ///< Deliveries so far.
  std::int64_t ready_ns = 0;     ///< Not deliverable before this steady time (0: at once).
};

/// A locked queue of requeued deliveries with a lock-free emptiness check for the hot path.
/// Deliveries that are ready (no requeue delay, or their delay passed) are handed out first in,
/// first out; delayed ones wait in a second queue ordered by the time they become ready and move
/// to the first when that time comes. A delayed delivery never holds back a ready one, nor the
/// ring: `try_pop` simply finds nothing ready.
class RequeueQueue {
 public:
  /// Holds nothing, ready or delayed.
  [[nodiscard]] bool empty() const noexcept { return size_.load(std::memory_order_acquire) == 0; }
  /// Ready and delayed deliveries.
  [[nodiscard]] std::size_t size() const noexcept { return size_.load(std::memory_order_acquire); }

  void push(Requeued&& r) {
    const std::lock_guard lock(mutex_);
    if (r.ready_ns == 0) {
      ready_.push_back(std::move(r));
      ready_size_.store(ready_.size(), std::memory_order_release);
    } else {
      delayed_.emplace(r.ready_ns, std::move(r));  // after those due at the same time
      next_due_ns_.store(delayed_.begin()->first, std::memory_order_release);
    }
    size_.store(ready_.size() + delayed_.size(), std::memory_order_release);
  }

  /// The oldest ready delivery, if any. While only delayed deliveries wait, a call costs a clock
  /// read and no lock until the first of them is due.
  bool try_pop(Requeued& out) {
    if (empty()) return false;
    if (ready_size_.load(std::memory_order_acquire) == 0 &&
        steady_now_ns() < next_due_ns_.load(std::memory_order_acquire))
      return false;
    const std::lock_guard lock(mutex_);
    promote_due_locked();
    if (ready_.empty()) return false;
    out = std::move(ready_.front());
    ready_.pop_front();
    update_sizes_locked();
    return true;
  }

  /// Removes deliveries whose TTL passed; returns how many.
  std::size_t expire(std::int64_t now_ns) {
    const std::lock_guard lock(mutex_);
    auto dead = [&](const Requeued& r) { return r.expires_ns != 0 && r.expires_ns <= now_ns; };
    auto n = std::erase_if(ready_, dead);
    n += std::erase_if(delayed_, [&](const auto& entry) { return dead(entry.second); });
    update_sizes_locked();
    return n;
  }

  std::size_t clear() {
    const std::lock_guard lock(mutex_);
    const auto n = ready_.size() + delayed_.size();
    ready_.clear();
    delayed_.clear();
    update_sizes_locked();
    return n;
  }

 private:
  static constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::max();

  /// Moves the delayed deliveries that are due to the ready queue, in the order they became due.
  void promote_due_locked() {
    if (delayed_.empty()) return;
    const std::int64_t now = steady_now_ns();
    auto it = delayed_.begin();
    for (; it != delayed_.end() && it->first <= now; ++it) ready_.push_back(std::move(it->second));
    delayed_.erase(delayed_.begin(), it);
    update_sizes_locked();
  }

  void update_sizes_locked() noexcept {
    ready_size_.store(ready_.size(), std::memory_order_release);
    next_due_ns_.store(delayed_.empty() ? kNever : delayed_.begin()->first, std::memory_order_release);
    size_.store(ready_.size() + delayed_.size(), std::memory_order_release);
  }

  std::mutex mutex_;
  std::deque<Requeued> ready_;
  std::multimap<std::int64_t, Requeued> delayed_;  // by the time each becomes ready
  std::atomic<std::size_t> size_{0};
  std::atomic<std::size_t> ready_size_{0};
  std::atomic<std::int64_t> next_due_ns_{kNever};
};

/// Subscribers of one group share its cursor and its requeued deliveries.
struct Group {
  Group(std::string group_name, Ring::GroupCursor group_cursor)
      : name(std::move(group_name)), cursor(std::move(group_cursor)) {}

  const std::string name;
  Ring::GroupCursor cursor;
  RequeueQueue requeued;
  std::size_t members = 0;  ///< Guarded by the topic's mutex.
};

/// Woken when a topic has something new for an asynchronous receive.
class AsyncWaiter {
 public:
  virtual ~AsyncWaiter() = default;
  virtual void notify() noexcept = 0;
  /// Completes the operation with `operation_aborted` if it has not completed yet.
  virtual void cancel() = 0;
};

/// Something the topic can wake (a subscriber blocked on its ack window, say) at shutdown.
class Wakeable {
 public:
  virtual void wake() noexcept = 0;

 protected:
  ~Wakeable() = default;
};

/// What a topic knows of one of its subscribers, for statistics and shutdown. Owned by the
/// subscriber; registered with the topic while subscribed.
struct SubscriberEntry {
  std::uint64_t id = 0;
  Group* group = nullptr;                ///< Null for an independent subscriber.
  const Ring::Cursor* cursor = nullptr;  ///< Null for a group member.
  Wakeable* owner = nullptr;
  std::atomic<std::uint64_t> delivered{0};  ///< Written by the subscriber only.
  std::atomic<std::uint64_t> buffered{0};   ///< Read ahead, not yet received.
  std::atomic<std::uint64_t> unacked{0};
  std::atomic<std::uint64_t> requeued{0};  ///< Its own requeue queue's size (independent ack subscribers).

  [[nodiscard]] std::uint64_t lag() const noexcept {
    const std::uint64_t ring_lag = group != nullptr ? group->cursor.lag() : cursor->lag();
    const std::uint64_t local = group != nullptr ? group->requeued.size() : requeued.load(std::memory_order_relaxed);
    return ring_lag + local + buffered.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t lost() const noexcept { return group != nullptr ? group->cursor.lost() : cursor->lost(); }

  void reset() noexcept {
    id = 0;
    group = nullptr;
    cursor = nullptr;
    owner = nullptr;
    delivered.store(0, std::memory_order_relaxed);
    buffered.store(0, std::memory_order_relaxed);
    unacked.store(0, std::memory_order_relaxed);
    requeued.store(0, std::memory_order_relaxed);
  }
};

/// Counters of a topic; each on its own line, they are bumped by different threads.
struct TopicCounters {
  alignas(kFalseSharingRange) std::atomic<std::uint64_t> published{0};
  alignas(kFalseSharingRange) std::atomic<std::uint64_t> dropped{0};
  std::atomic<std::uint64_t> expired{0};
  std::atomic<std::uint64_t> redelivered{0};
  std::atomic<std::uint64_t> dead_lettered{0};
  std::atomic<std::uint64_t> delivered_by_departed{0};  ///< Deliveries of subscribers that left.
  // Kept whether or not statistics are enabled: they count slow paths only.
  std::atomic<std::uint64_t> dropped_no_subscriber{0};
  std::atomic<std::uint64_t> publisher_waits{0};
  std::atomic<std::uint64_t> publishers_blocked{0};
};

inline RingOptions ring_options(const BrokerConfig& config) {
  RingOptions options;
  options.capacity = config.max_queue_size;
  options.block_size = std::min<std::size_t>(256, std::bit_ceil(config.max_queue_size));
  switch (config.overflow_policy) {
    case OverflowPolicy::block: options.full_policy = FullPolicy::block; break;
    case OverflowPolicy::reject: options.full_policy = FullPolicy::fail; break;
    case OverflowPolicy::drop_oldest: options.full_policy = FullPolicy::overtake; break;
  }
  options.producer_mode = ProducerMode::multi;
  return options;
}

class Topic {
 public:
  Topic(std::string topic_name, const BrokerConfig& config)
      : name(std::move(topic_name)),
        ring(ring_options(config)),
        logger_(config.logger),
        report_interval_(config.stall_report_interval) {}

  const std::string name;
  Ring ring;
  TopicCounters counters;
  std::atomic<bool> deleted{false};
  std::atomic<std::uint64_t> clear_epoch{0};

  // Registry: guarded by `mutex`.
  mutable std::mutex mutex;
  std::vector<SubscriberEntry*> entries;
  std::unordered_map<std::string, std::shared_ptr<Group>> groups;

  /// Writes envelopes to the ring, then does what every publish does after: counts them (when
  /// `count`) and wakes asynchronous receivers. `may_wait` false: never waits for room.
  /// At most `ring.capacity()` envelopes at a time (a timed-out larger batch could be partly
  /// published).
  template <class It>
  PublishStatus publish(It first, It last, bool may_wait, bool count) {
    // A deadline in the past: the ring's wait strategy spins briefly, then gives up without
    // reading the clock on the way in (a publish that finds room never reads it).
    PublishStatus status = ring.publish_until(first, last, WaitClock::time_point{});
    if (status == PublishStatus::timeout && may_wait) [[unlikely]] {
      status = publish_waiting(first, last);
      // The wait can end because the last subscriber left (its cursor no longer holds the topic
      // full): the ring then takes the messages for nobody. Count them as what they are.
      if (status == PublishStatus::ok && ring.cursor_count() == 0) {
        dropped_without_subscriber(static_cast<std::uint64_t>(last - first), count,
                                   "the topic's last subscriber left while a publisher waited: dropped");
        return status;
      }
    }
    if (status != PublishStatus::ok) return status;
    if (count) counters.published.fetch_add(static_cast<std::uint64_t>(last - first), std::memory_order_relaxed);
    notify_async_if_waiting();
    return status;
  }

  /// Counts messages dropped because nobody subscribed to the topic, and reports them through the
  /// logger at most once per report interval. `what` says where they came from.
  void dropped_without_subscriber(std::uint64_t n, bool count, std::string_view what) noexcept {
    if (count) counters.dropped.fetch_add(n, std::memory_order_relaxed);
    const std::uint64_t total = counters.dropped_no_subscriber.fetch_add(n, std::memory_order_relaxed) + n;
    if (logger_ == nullptr || !logger_->enabled(LogLevel::warn) || !report_due(last_drop_report_ns_)) return;
    logger_->log(LogLevel::warn, what,
                 {{"topic", std::string_view(name)}, {"dropped", n}, {"dropped_no_subscriber_total", total}});
  }

  /// The logger of the broker (null if none).
  [[nodiscard]] Logger* logger() const noexcept { return logger_; }

  /// Reports, at most once per report interval, a message of this topic dropped after its last
  /// delivery because it had nowhere to go (`what`), with the reason its nack gave (if any).
  void dropped_after_deliveries(std::string_view what, std::uint32_t deliveries,
                                std::string_view nack_reason) noexcept {
    if (logger_ == nullptr || !logger_->enabled(LogLevel::warn) || !report_due(last_drop_report_ns_)) return;
    logger_->log(LogLevel::warn, what,
                 {{"topic", std::string_view(name)}, {"deliveries", deliveries}, {"reason", nack_reason}});
  }

  /// Reports a dead-lettered message dropped because this (dead-letter) topic was full.
  void dead_letter_full() noexcept {
    if (logger_ == nullptr || !logger_->enabled(LogLevel::warn) || !report_due(last_drop_report_ns_)) return;
    logger_->log(LogLevel::warn, "dead-letter topic full: a dead-lettered message was dropped",
                 {{"topic", std::string_view(name)}, {"capacity", ring.capacity()}});
  }

  /// The subscriber with the largest lag: its id, group and lag (id 0 if nobody lags).
  struct Slowest {
    std::uint64_t id = 0;
    std::string group;
    std::uint64_t lag = 0;
  };
  [[nodiscard]] Slowest slowest() const {
    Slowest s;
    const std::lock_guard lock(mutex);
    for (const auto* e : entries) {
      const std::uint64_t lag = e->lag();
      if (lag == 0 || lag <= s.lag) continue;
      s.id = e->id;
      s.lag = lag;
      s.group = e->group != nullptr ? e->group->name : std::string();
    }
    return s;
  }

  /// Asynchronous receivers waiting for this topic.
  void add_async_waiter(std::shared_ptr<AsyncWaiter> waiter) {
    const std::lock_guard lock(waiters_mutex_);
    waiters_.push_back(std::move(waiter));
    async_waiters_.store(waiters_.size(), std::memory_order_seq_cst);
    // A waiter registers, then re-checks the ring; a publisher writes the ring, then checks for
    // waiters: one of them sees the other. The publisher's side is the frequent one, so it only
    // has a light fence and this (rare: a receive about to wait) side the heavy one.
    heavy_fence();
  }

  bool remove_async_waiter(const AsyncWaiter* waiter) {
    const std::lock_guard lock(waiters_mutex_);
    const auto n = std::erase_if(waiters_, [&](const auto& w) { return w.get() == waiter; });
    async_waiters_.store(waiters_.size(), std::memory_order_relaxed);
    return n != 0;
  }

  /// Called by publishers after writing the ring.
  void notify_async_if_waiting() {
    light_fence();  // pairs with the heavy fence in add_async_waiter
    if (async_waiters_.load(std::memory_order_relaxed) != 0) [[unlikely]]
      notify_async();
  }

  void notify_async() {
    std::vector<std::shared_ptr<AsyncWaiter>> woken;
    {
      const std::lock_guard lock(waiters_mutex_);
      woken.swap(waiters_);
      async_waiters_.store(0, std::memory_order_relaxed);
    }
    for (const auto& w : woken) w->notify();
  }

  /// Wakes every subscriber and asynchronous waiter (shutdown, delete, requeue).
  void wake_all() {
    {
      const std::lock_guard lock(mutex);
      for (auto* e : entries) e->owner->wake();
    }
    notify_async();
  }

  [[nodiscard]] TopicInfo info(bool with_subscribers) const {
    TopicInfo info;
    info.name = name;
    info.published = counters.published.load(std::memory_order_relaxed);
    info.dropped = counters.dropped.load(std::memory_order_relaxed);
    info.expired = counters.expired.load(std::memory_order_relaxed);
    info.redelivered = counters.redelivered.load(std::memory_order_relaxed);
    info.dead_lettered = counters.dead_lettered.load(std::memory_order_relaxed);
    info.dropped_no_subscriber = counters.dropped_no_subscriber.load(std::memory_order_relaxed);
    info.publisher_waits = counters.publisher_waits.load(std::memory_order_relaxed);
    info.publishers_blocked = counters.publishers_blocked.load(std::memory_order_relaxed);
    info.delivered = counters.delivered_by_departed.load(std::memory_order_relaxed);
    const std::lock_guard lock(mutex);
    info.subscribers = entries.size();
    info.groups = groups.size();
    std::vector<const Group*> counted_groups;  // a group's cursor loses messages once, not per member
    for (const auto* e : entries) {
      SubscriberInfo s;
      s.id = e->id;
      s.group = e->group != nullptr ? e->group->name : std::string();
      s.lag = e->lag();
      s.lost = e->lost();
      s.delivered = e->delivered.load(std::memory_order_relaxed);
      s.unacked = e->unacked.load(std::memory_order_relaxed);
      info.delivered += s.delivered;
      if (e->group == nullptr ||
          std::find(counted_groups.begin(), counted_groups.end(), e->group) == counted_groups.end()) {
        info.dropped += s.lost;
        if (e->group != nullptr) counted_groups.push_back(e->group);
      }
      if (s.lag > info.queue_depth) {
        info.slowest_subscriber = s.id;
        info.queue_depth = s.lag;
      }
      if (with_subscribers) info.subscriber_info.push_back(std::move(s));
    }
    return info;
  }

 private:
  /// The slow path of `publish`: the topic is full. Counts the wait, and reports it through the
  /// logger every report interval while it lasts, naming the subscriber holding it back.
  template <class It>
  KINCIR_COLD PublishStatus publish_waiting(It first, It last) {
    counters.publisher_waits.fetch_add(1, std::memory_order_relaxed);
    const Blocked blocked(counters.publishers_blocked);
    const auto started = WaitClock::now();
    PublishStatus status = PublishStatus::timeout;
    while (status == PublishStatus::timeout) {
      const bool report = logger_ != nullptr && logger_->enabled(LogLevel::warn);
      status =
          report ? ring.publish_until(first, last, WaitClock::now() + report_interval_) : ring.publish(first, last);
      // One report per interval for the topic, however many publishers wait on it.
      if (status == PublishStatus::timeout && report_due(last_stall_report_ns_))
        report_stall(WaitClock::now() - started);
    }
    return status;
  }

  /// Counts a waiting publisher for as long as it waits (also when the wait throws).
  class Blocked {
   public:
    explicit Blocked(std::atomic<std::uint64_t>& gauge) noexcept : gauge_(gauge) {
      gauge_.fetch_add(1, std::memory_order_relaxed);
    }
    Blocked(const Blocked&) = delete;
    Blocked& operator=(const Blocked&) = delete;
    ~Blocked() { gauge_.fetch_sub(1, std::memory_order_relaxed); }

   private:
    std::atomic<std::uint64_t>& gauge_;
  };

  KINCIR_COLD void report_stall(WaitClock::duration waited) const noexcept {
    try {
      const Slowest s = slowest();
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(waited).count();
      logger_->log(LogLevel::warn, "publisher waiting for room: the topic is full",
                   {{"topic", std::string_view(name)},
                    {"waited_ms", ms},
                    {"slowest_subscriber", s.id},
                    {"group", std::string_view(s.group)},
                    {"lag", s.lag},
                    {"capacity", ring.capacity()},
                    {"publishers_blocked", counters.publishers_blocked.load(std::memory_order_relaxed)}});
    } catch (...) {  // a report is never worth failing the publish for (bad_alloc copying a name)
    }
  }

  /// True at most once per report interval for `last_ns` (reports that may repeat at message
  /// rate, or once per waiting publisher).
  bool report_due(std::atomic<std::int64_t>& last_ns) const noexcept {
    const std::int64_t now = steady_now_ns();
    const std::int64_t interval = std::chrono::duration_cast<std::chrono::nanoseconds>(report_interval_).count();
    std::int64_t last = last_ns.load(std::memory_order_relaxed);
    if (last != 0 && now - last < interval) return false;
    return last_ns.compare_exchange_strong(last, now, std::memory_order_relaxed);
  }

  Logger* const logger_;
  const std::chrono::milliseconds report_interval_;
  std::atomic<std::int64_t> last_drop_report_ns_{0};
  std::atomic<std::int64_t> last_stall_report_ns_{0};

  std::mutex waiters_mutex_;
  std::vector<std::shared_ptr<AsyncWaiter>> waiters_;
  std::atomic<std::size_t> async_waiters_{0};
};

}  // namespace kincir::memory::detail
