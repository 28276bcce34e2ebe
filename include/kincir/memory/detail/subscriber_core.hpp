/// @file
/// Internal: the receiving side shared by `InMemorySubscriber` and `InMemoryAckSubscriber`.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/ack.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>
#include <kincir/memory/detail/broker_state.hpp>
#include <kincir/memory/detail/topic.hpp>

#include <algorithm>           // std::min
#include <chrono>              // deadlines
#include <condition_variable>  // the ack window
#include <cstdint>             // tags
#include <functional>          // std::less (lock order)
#include <iterator>            // std::back_inserter
#include <memory>              // std::shared_ptr
#include <mutex>               // ack state
#include <optional>            // the cursor, a rejected delivery
#include <string>              // group names
#include <string_view>         // topics
#include <unordered_map>       // unacked deliveries
#include <utility>             // std::swap
#include <vector>              // read-ahead buffer

namespace kincir::memory::detail {

/// How a delivery is settled.
enum class Settlement { ack, requeue, reject };

/// The retry and dead-letter settings of one subscription: its `SubscriptionOptions` with the
/// unset fields taken from the broker's configuration.
struct RetryPolicy {
  std::uint32_t max_deliveries = 0;
  std::string dead_letter_topic;
  std::int64_t requeue_delay_ns = 0;

  static std::shared_ptr<const RetryPolicy> resolve(const BrokerConfig& config, const SubscriptionOptions& options) {
    auto p = std::make_shared<RetryPolicy>();
    p->max_deliveries = options.max_deliveries.value_or(config.max_deliveries);
    p->dead_letter_topic = options.dead_letter_topic.value_or(config.dead_letter_topic);
    p->requeue_delay_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(options.requeue_delay.value_or(config.requeue_delay))
            .count();
    return p;
  }
};

/// The metadata keys of a dead-lettered message (documented in docs/broker.md).
inline constexpr std::string_view kDeathCountKey = "x-delivery-count";
inline constexpr std::string_view kDeathTopicKey = "x-original-topic";
inline constexpr std::string_view kDeathCauseKey = "x-kincir-death-cause";
inline constexpr std::string_view kDeathReasonKey = "x-kincir-death-reason";

/// A subscriber's pending asynchronous receive, as its subscriber sees it.
class PendingReceive {
 public:
  /// Completes the operation with `operation_aborted` if it has not completed yet. Requires the
  /// subscriber's `async_mutex()`.
  virtual void abort_locked() = 0;

 protected:
  ~PendingReceive() = default;
};

class SubscriberCore final : public Wakeable {
 public:
  using clock = std::chrono::steady_clock;

  /// Messages an unordered group member takes from the ring at once (independent subscribers and
  /// ordered groups take one at a time, straight into the caller's message).
  static constexpr std::size_t kReadAhead = 64;
  /// How often a waiting group member or ack-mode subscriber looks for requeued deliveries.
  static constexpr std::chrono::milliseconds kRequeuePoll{2};
  /// Bits of a delivery tag that number deliveries; the bits above hold the subscriber id (its
  /// low 24 bits, which tell this subscriber's handles from another's).
  static constexpr int kTagBits = 40;
  static constexpr std::uint64_t kIdMask = (std::uint64_t{1} << (64 - kTagBits)) - 1;

  SubscriberCore(std::shared_ptr<BrokerState> broker, bool ack_mode)
      : broker_(std::move(broker)),
        config_(broker_->config()),
        ack_mode_(ack_mode),
        policy_(RetryPolicy::resolve(config_, {})) {}

  SubscriberCore(const SubscriberCore&) = delete;
  SubscriberCore& operator=(const SubscriberCore&) = delete;

  ~SubscriberCore() { unsubscribe(); }

  [[nodiscard]] const std::shared_ptr<Topic>& topic() const noexcept { return topic_; }
  [[nodiscard]] const std::string& group_name() const noexcept {
    static const std::string none;
    return group_ ? group_->name : none;
  }
  [[nodiscard]] std::uint64_t lost() const noexcept { return topic_ ? entry_.lost() : 0; }

  /// Serialises the pending asynchronous receive (its attempts run on the handler's executor, its
  /// cancellation on whichever thread emits the signal) with this subscriber's own subscribe and
  /// unsubscribe: the operation holds it while it reads the cursor or registers on the topic, the
  /// owner while it switches topics. Taken before any topic or broker lock.
  [[nodiscard]] std::mutex& async_mutex() noexcept { return async_mutex_; }

  /// The pending asynchronous receive, if any (set and cleared by the operation itself, under
  /// `async_mutex()`).
  void set_pending_locked(std::weak_ptr<PendingReceive> op) noexcept { pending_ = std::move(op); }
  void clear_pending_locked(const PendingReceive* op) noexcept {
    if (pending_.lock().get() == op) pending_.reset();
  }

  /// Subscribes to `topic` (as a member of `group` when it is not empty), leaving the current
  /// subscription. The switch happens under the topic locks at once: a failure (bad name, a limit,
  /// shutdown) keeps the current subscription as it was, and a pending asynchronous receive keeps
  /// waiting; after a switch it completes with `operation_aborted`.
  /// `options` set the subscription's retry and dead-lettering (`errc::invalid_argument` when one
  /// is out of range).
  void subscribe(std::string_view topic, std::string_view group, const SubscriptionOptions& options,
                 std::error_code& ec) {
    ec.clear();
    if (!options.validate(ec)) return;
    if (broker_->phase() != Phase::running) {
      ec = errc::broker_shutdown;
      return;
    }
    if (!is_valid_topic(topic)) {
      ec = errc::invalid_topic;
      return;
    }
    if (!group.empty() && !is_valid_topic(group)) {  // group names follow the topic rules
      ec = errc::invalid_argument;
      return;
    }
    auto policy = RetryPolicy::resolve(config_, options);
    const std::lock_guard async_lock(async_mutex_);  // no attempt of a pending receive meanwhile
    Departure departure;
    bool switched = false;
    broker_->with_topic_locked(topic, ec, [&](const std::shared_ptr<Topic>& t) {
      // The new and the old topic's locks, in address order (the topic map's lock already keeps
      // other subscribes from taking two; a fixed order needs no such argument).
      std::mutex* first = &t->mutex;
      std::mutex* second = topic_ && topic_ != t ? &topic_->mutex : nullptr;
      if (second != nullptr && std::less<>{}(second, first)) std::swap(first, second);
      const std::lock_guard lock(*first);
      std::unique_lock<std::mutex> second_lock;
      if (second != nullptr) second_lock = std::unique_lock(*second);
      const std::size_t others = t->entries.size() - (topic_ == t ? 1 : 0);
      if (others >= config_.max_subscribers_per_topic) {
        ec = errc::too_many_subscribers;
        return;
      }
      if (topic_) leave_locked(departure);
      join_locked(t, group, std::move(policy));
      switched = true;
    });
    if (switched) abort_pending_locked();
    finish_leave(departure);
  }

  /// Leaves the topic. A group member hands what it holds (read ahead, unacked) back to its group;
  /// an independent subscriber drops (and counts) its unacked and requeued deliveries. A pending
  /// asynchronous receive completes with `operation_aborted`.
  void unsubscribe() {
    const std::lock_guard async_lock(async_mutex_);
    abort_pending_locked();
    if (!topic_) return;
    Departure departure;
    {
      const std::lock_guard lock(topic_->mutex);
      leave_locked(departure);
    }
    finish_leave(departure);
  }

  /// The next delivery, without waiting. Returns true with `out` set; false with `ec` clear when
  /// nothing is there now; false with `ec` set on a terminal condition (not subscribed, topic
  /// deleted and drained, broker shut down and drained).
  bool try_next(Requeued& out, std::error_code& ec) {
    ec.clear();
    if (!topic_) [[unlikely]] {
      ec = errc::not_subscribed;
      return false;
    }
    if (broker_->phase() == Phase::forced) [[unlikely]] {
      buffer_.clear();
      buffer_pos_ = 0;
      ec = errc::broker_shutdown;
      return false;
    }
    std::int64_t now = 0;
    for (;;) {
      if (const auto epoch = topic_->clear_epoch.load(std::memory_order_acquire); epoch != seen_epoch_) [[unlikely]] {
        seen_epoch_ = epoch;
        buffer_.clear();
        buffer_pos_ = 0;
        own_requeued_.clear();
      }
      RequeueQueue& requeued = group_ ? group_->requeued : own_requeued_;
      if (!requeued.empty() && requeued.try_pop(out)) [[unlikely]] {
        if (group_ == nullptr) entry_.requeued.store(own_requeued_.size(), std::memory_order_relaxed);
        if (expired(out.expires_ns, now)) continue;
        return deliver(out);
      }
      if (buffer_pos_ < buffer_.size()) {
        Envelope& e = buffer_[buffer_pos_++];
        out = Requeued{std::move(e.message), e.expires_ns, 0};
        if (buffer_pos_ == buffer_.size()) {
          buffer_.clear();
          buffer_pos_ = 0;
        }
        if (config_.enable_statistics) entry_.buffered.store(buffer_.size() - buffer_pos_, std::memory_order_relaxed);
        if (expired(out.expires_ns, now)) continue;
        return deliver(out);
      }
      if (group_ == nullptr || config_.enable_message_ordering) {
        // Straight from the ring slot into `out` (one move; the slot is destroyed by the ring): an
        // independent subscriber stores its cursor per message, which costs a plain store on a
        // line of its own; an ordered group takes one message at a time, so members consume in
        // publication order.
        auto take = [&out](auto&& e) {
          out.message = std::forward<decltype(e)>(e).message;  // moved when this is the last reader
          out.expires_ns = e.expires_ns;
          out.deliveries = 0;
        };
        if ((group_ ? group_->cursor.consume(1, take) : cursor_->consume(1, take)) != 0) {
          if (expired(out.expires_ns, now)) continue;
          return deliver(out);
        }
      } else {
        // Unordered group members read ahead: a claim on the shared cursor costs three atomic
        // operations, so they are paid once per batch.
        if (group_->cursor.read_batch(std::back_inserter(buffer_), kReadAhead) != 0) continue;
      }
      // Nothing now: a closed ring that is drained for this cursor ends the subscription.
      if (topic_->ring.closed() && wait_until(clock::now()) == WaitStatus::closed && requeued.empty()) {
        ec = broker_->phase() != Phase::running ? std::error_code(errc::broker_shutdown) : errc::closed;
      }
      return false;
    }
  }

  /// Like `try_next`, waiting until `deadline` (`clock::time_point::max()`: for ever); `ec` is
  /// `errc::timeout` when the deadline passes.
  bool next_until(clock::time_point deadline, Requeued& out, std::error_code& ec) {
    if (ack_mode_ && !wait_for_window(deadline)) {
      ec = errc::timeout;
      return false;
    }
    const bool poll_requeue = group_ != nullptr || ack_mode_;
    for (;;) {
      if (try_next(out, ec)) return true;
      if (ec) return false;
      const auto now = clock::now();
      if (now >= deadline) {
        ec = errc::timeout;
        return false;
      }
      const auto until = poll_requeue && deadline - now > kRequeuePoll ? now + kRequeuePoll : deadline;
      if (until == clock::time_point::max()) {
        (void)(group_ ? group_->cursor.wait() : cursor_->wait());
      } else {
        (void)wait_until(until);
      }
    }
  }

  /// Calls `fn(const Message&)` on up to `max` deliveries in place (no copy out of the ring).
  template <class Fn>
  std::size_t poll(std::size_t max, Fn& fn, std::error_code& ec) {
    ec.clear();
    if (!topic_) [[unlikely]] {
      ec = errc::not_subscribed;
      return 0;
    }
    std::size_t n = 0;
    Requeued r;
    // Requeued and read-ahead deliveries first, so order is kept.
    while (n < max && (buffer_pos_ < buffer_.size() || !(group_ ? group_->requeued : own_requeued_).empty())) {
      if (!try_next(r, ec)) return n;
      fn(std::as_const(r.message));
      ++n;
    }
    if (n == max || !topic_) return n;
    std::int64_t now = 0;
    auto visit = [&](const Envelope& e) {
      if (expired(e.expires_ns, now)) return;
      fn(e.message);
      ++n;
      count_delivery();
    };
    if (group_)
      group_->cursor.poll(max - n, visit);
    else
      cursor_->poll(max - n, visit);
    if (n == 0 && try_next(r, ec)) {  // also reports a terminal condition through ec
      fn(std::as_const(r.message));
      ++n;
    }
    return n;
  }

  // --- acknowledgements ----------------------------------------------------------------------

  /// Records `delivery` as outstanding and returns its handle.
  BasicAckHandle track(const Requeued& delivery) {
    const std::lock_guard lock(ack_mutex_);
    const std::uint64_t tag =
        ((entry_.id & kIdMask) << kTagBits) | (++next_tag_ & ((std::uint64_t{1} << kTagBits) - 1));
    unacked_.emplace(tag, Requeued{delivery.message, delivery.expires_ns, delivery.deliveries});
    entry_.unacked.store(unacked_.size(), std::memory_order_relaxed);
    return BasicAckHandle(topic_->name, delivery.message.uuid, delivery.deliveries, std::chrono::system_clock::now(),
                          tag);
  }

  /// Settles a delivery. `reason` (a nack's) goes into the metadata of the message if it is
  /// dead-lettered.
  void settle(const BasicAckHandle& handle, Settlement how, std::string_view reason, std::error_code& ec) {
    ec.clear();
    std::shared_ptr<Topic> topic;  // a copy: the receiving thread may unsubscribe meanwhile
    std::shared_ptr<const RetryPolicy> policy;
    std::optional<Requeued> rejected;
    bool requeued = false;
    std::int64_t ready_ns = 0;
    std::shared_ptr<AsyncWaiter> window_waiter;
    {
      // Held until the delivery is requeued: `leave_locked` resets the subscription under this
      // lock, so a requeue never lands in a later subscription of this subscriber.
      const std::lock_guard lock(ack_mutex_);
      const auto it = topic_ ? unacked_.find(handle.tag()) : unacked_.end();
      if (it == unacked_.end() || (handle.tag() >> kTagBits) != (entry_.id & kIdMask)) {
        ec = errc::unknown_delivery;
        return;
      }
      Requeued r = std::move(it->second);
      unacked_.erase(it);
      entry_.unacked.store(unacked_.size(), std::memory_order_relaxed);
      topic = topic_;
      window_waiter = std::move(window_waiter_);     // the window has room again
      if (how != Settlement::ack) policy = policy_;  // an ack needs none (and no reference count)
      if (how == Settlement::requeue && r.deliveries < policy->max_deliveries) {
        if (config_.enable_statistics) topic->counters.redelivered.fetch_add(1, std::memory_order_relaxed);
        if (policy->requeue_delay_ns > 0) ready_ns = r.ready_ns = steady_now_ns() + policy->requeue_delay_ns;
        if (group_) {
          group_->requeued.push(std::move(r));
        } else {
          own_requeued_.push(std::move(r));
          entry_.requeued.store(own_requeued_.size(), std::memory_order_relaxed);
        }
        requeued = true;
      } else if (how != Settlement::ack) {
        rejected.emplace(std::move(r));
      }
    }
    ack_cv_.notify_all();
    if (window_waiter) window_waiter->notify();
    if (requeued) {
      if (ready_ns != 0) {
        broker_->wake_at(topic, ready_ns);  // asynchronous receivers are woken when it is ready
      } else {
        topic->notify_async();  // a receiver waiting asynchronously may take it
      }
    }
    if (rejected) {
      const bool exhausted = how == Settlement::requeue;
      dead_letter(*topic, *policy, std::move(*rejected), exhausted ? "delivery-limit" : "rejected", reason);
    }
  }

  /// Whether a delivery may be taken now with `track` (fewer than `max_unacked` outstanding, or
  /// the broker is shutting down). If not, `waiter` is kept (alive) until the next settlement or
  /// shutdown notifies it, or `forget_window_waiter` drops it.
  bool window_open_or_notify(std::shared_ptr<AsyncWaiter> waiter) {
    const std::lock_guard lock(ack_mutex_);
    if (unacked_.size() < config_.max_unacked || woken_ || broker_->phase() != Phase::running) return true;
    window_waiter_ = std::move(waiter);
    return false;
  }

  /// Drops `waiter` if it waits for the window (it completed otherwise: cancelled, aborted).
  void forget_window_waiter(const AsyncWaiter* waiter) {
    std::shared_ptr<AsyncWaiter> released;  // released after the lock
    const std::lock_guard lock(ack_mutex_);
    if (window_waiter_.get() == waiter) released = std::move(window_waiter_);
  }

  void wake() noexcept override {
    std::shared_ptr<AsyncWaiter> window_waiter;
    {
      const std::lock_guard lock(ack_mutex_);
      woken_ = true;
      window_waiter = std::move(window_waiter_);
    }
    ack_cv_.notify_all();
    if (window_waiter) window_waiter->notify();
  }

 private:
  /// What leaving a topic leaves to do once the topic's lock is released.
  struct Departure {
    std::shared_ptr<Topic> topic;
    bool notify = false;  ///< Deliveries went back to the group: wake its asynchronous receivers.
  };

  /// Requires `t->mutex` and the topic map's lock; `topic_` is null.
  void join_locked(const std::shared_ptr<Topic>& t, std::string_view group, std::shared_ptr<const RetryPolicy> policy) {
    std::shared_ptr<Group> joined;
    if (group.empty()) {
      cursor_.emplace(t->ring.add_cursor());
      entry_.cursor = &*cursor_;
    } else {
      auto& g = t->groups[std::string(group)];
      if (!g) g = std::make_shared<Group>(std::string(group), t->ring.add_group_cursor());
      ++g->members;
      entry_.group = g.get();
      joined = g;
    }
    buffer_.clear();
    buffer_pos_ = 0;
    delivered_ = 0;
    entry_.id = broker_->next_subscriber_id();
    entry_.owner = this;
    t->entries.push_back(&entry_);
    seen_epoch_ = t->clear_epoch.load(std::memory_order_acquire);
    const std::lock_guard ack_lock(ack_mutex_);  // settle() reads these from other threads
    woken_ = false;                              // a wake belongs to the previous subscription
    group_ = std::move(joined);
    topic_ = t;
    policy_ = std::move(policy);
  }

  /// Leaves `topic_`. Requires `topic_->mutex`. Unacked deliveries are taken under the ack lock
  /// together with the reset of the subscription, so a concurrent `settle` either finishes before
  /// (its requeue is handed back or dropped here) or finds nothing to settle.
  void leave_locked(Departure& departure) {
    Topic& topic = *topic_;
    std::vector<Requeued> handed_back;
    std::uint64_t dropped = 0;
    {
      const std::lock_guard lock(ack_mutex_);
      if (group_) {
        for (auto& [tag, r] : unacked_) handed_back.push_back(std::move(r));
      } else {
        dropped += unacked_.size() + own_requeued_.clear();
      }
      unacked_.clear();
      departure.topic = std::move(topic_);
      topic_.reset();
    }
    // Read-ahead goes back to the group, unless clear_topic discarded it meanwhile (the epoch
    // moves before the group's requeued deliveries are cleared under this mutex).
    // An independent subscriber's read-ahead, like its backlog in the ring, was never received:
    // it is released uncounted.
    if (group_ && topic.clear_epoch.load(std::memory_order_acquire) == seen_epoch_) {
      for (std::size_t i = buffer_pos_; i < buffer_.size(); ++i)
        handed_back.push_back(Requeued{std::move(buffer_[i].message), buffer_[i].expires_ns, 0});
    }
    buffer_.clear();
    buffer_pos_ = 0;
    std::erase(topic.entries, &entry_);
    topic.counters.delivered_by_departed.fetch_add(delivered_, std::memory_order_relaxed);
    if (group_) {
      departure.notify = !handed_back.empty();
      for (auto& r : handed_back) group_->requeued.push(std::move(r));
      if (--group_->members == 0) {
        // The last member leaves: the group's requeued deliveries go with it.
        dropped += group_->requeued.clear() + group_->cursor.lost();
        topic.groups.erase(group_->name);
      }
    } else {
      dropped += cursor_->lost();
      cursor_.reset();  // under the lock: statistics read the cursor through the entry
    }
    if (config_.enable_statistics && dropped != 0) topic.counters.dropped.fetch_add(dropped, std::memory_order_relaxed);
    const std::lock_guard lock(ack_mutex_);
    entry_.reset();
    group_.reset();
    delivered_ = 0;
  }

  void finish_leave(Departure& departure) {
    if (departure.notify) departure.topic->notify_async();
  }

  bool expired(std::int64_t expires_ns, std::int64_t& now) {
    if (!config_.enable_ttl || expires_ns == 0) return false;
    if (now == 0) now = steady_now_ns();
    if (expires_ns > now) return false;
    if (config_.enable_statistics) topic_->counters.expired.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  bool deliver(Requeued& out) {
    ++out.deliveries;
    count_delivery();
    return true;
  }

  void count_delivery() {
    ++delivered_;
    if (config_.enable_statistics) entry_.delivered.store(delivered_, std::memory_order_relaxed);
  }

  WaitStatus wait_until(clock::time_point until) {
    return group_ ? group_->cursor.wait_until(until) : cursor_->wait_until(until);
  }

  /// Waits until fewer than `max_unacked` deliveries are outstanding.
  /// Reported through the broker's logger every `stall_report_interval` while it waits (nothing
  /// acks: the receive would otherwise wait silently for ever).
  bool wait_for_window(clock::time_point deadline) {
    std::unique_lock lock(ack_mutex_);
    auto open = [&] { return unacked_.size() < config_.max_unacked || woken_ || broker_->phase() != Phase::running; };
    Logger* const logger = topic_ ? topic_->logger() : nullptr;
    if (logger == nullptr || !logger->enabled(LogLevel::warn)) {
      if (deadline == clock::time_point::max()) {
        ack_cv_.wait(lock, open);
        return true;
      }
      return ack_cv_.wait_until(lock, deadline, open);
    }
    const auto started = clock::now();
    for (;;) {
      const auto now = clock::now();
      const auto slice_end =
          deadline - now > config_.stall_report_interval ? now + config_.stall_report_interval : deadline;
      if (ack_cv_.wait_until(lock, slice_end, open)) return true;
      if (slice_end >= deadline) return false;
      const std::uint64_t unacked = unacked_.size();
      const std::shared_ptr<Topic> topic = topic_;
      lock.unlock();  // the logger may call back into this subscriber (ack, stats)
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started).count();
      logger->log(LogLevel::warn, "receive waiting: the ack window is full (settle deliveries with ack or nack)",
                  {{"topic", topic ? std::string_view(topic->name) : std::string_view()},
                   {"subscriber", entry_.id},
                   {"unacked", unacked},
                   {"max_unacked", config_.max_unacked},
                   {"waited_ms", waited}});
      lock.lock();
    }
  }

  /// `cause`: "rejected" (nacked without requeue) or "delivery-limit" (nacked for requeue after
  /// its last allowed delivery); `reason`: the nack's, if any.
  void dead_letter(Topic& topic, const RetryPolicy& policy, Requeued&& r, std::string_view cause,
                   std::string_view reason) {
    using Result = BrokerState::InternalPublish;
    const std::string& target = policy.dead_letter_topic;
    Result result = Result::no_target;
    if (!target.empty() && target != topic.name) {
      auto& metadata = r.message.metadata;
      metadata.set(kDeathCountKey, std::to_string(r.deliveries));
      metadata.set(kDeathTopicKey, topic.name);
      metadata.set(kDeathCauseKey, cause);
      if (!reason.empty()) {
        metadata.set(kDeathReasonKey, reason);
      } else {
        metadata.erase(kDeathReasonKey);  // a reason of an earlier death is not this one's
      }
      result = broker_->publish_internal(target, std::move(r.message), r.expires_ns);
    }
    if (result == Result::no_target) {
      const bool exhausted = cause == "delivery-limit";
      const int why = target.empty() ? 0 : target == topic.name ? 1 : 2;
      static constexpr std::string_view kReports[2][3] = {
          {"message dropped after a nack without requeue: no dead_letter_topic",
           "message dropped after a nack without requeue: the dead-letter topic is the message's own topic",
           "message dropped after a nack without requeue: the dead-letter topic could not be created"},
          {"message dropped after max_deliveries: no dead_letter_topic",
           "message dropped after max_deliveries: the dead-letter topic is the message's own topic",
           "message dropped after max_deliveries: the dead-letter topic could not be created"}};
      topic.dropped_after_deliveries(kReports[exhausted ? 1 : 0][why], r.deliveries, reason);
    }
    if (!config_.enable_statistics) return;
    // A message the dead-letter topic dropped is counted there, once.
    if (result == Result::published)
      topic.counters.dead_lettered.fetch_add(1, std::memory_order_relaxed);
    else if (result == Result::no_target)
      topic.counters.dropped.fetch_add(1, std::memory_order_relaxed);
  }

  /// Completes a pending asynchronous receive with `operation_aborted`. Requires `async_mutex_`.
  void abort_pending_locked() {
    if (auto op = pending_.lock()) op->abort_locked();
    pending_.reset();
  }

  std::shared_ptr<BrokerState> broker_;
  const BrokerConfig& config_;
  const bool ack_mode_;
  std::mutex async_mutex_;
  std::weak_ptr<PendingReceive> pending_;  // under async_mutex_

  std::shared_ptr<Topic> topic_;
  std::shared_ptr<Group> group_;
  std::optional<Ring::Cursor> cursor_;
  SubscriberEntry entry_;
  RequeueQueue own_requeued_;
  std::vector<Envelope> buffer_;
  std::size_t buffer_pos_ = 0;
  std::uint64_t seen_epoch_ = 0;
  std::uint64_t delivered_ = 0;

  std::mutex ack_mutex_;
  std::condition_variable ack_cv_;
  std::unordered_map<std::uint64_t, Requeued> unacked_;
  std::uint64_t next_tag_ = 0;
  bool woken_ = false;
  std::shared_ptr<const RetryPolicy> policy_;   // the subscription's; replaced under ack_mutex_
  std::shared_ptr<AsyncWaiter> window_waiter_;  // an asynchronous receive waiting for the window
};

}  // namespace kincir::memory::detail
