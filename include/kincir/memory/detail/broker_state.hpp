/// @file
/// Internal: the state shared by an `InMemoryBroker` and its publishers and subscribers.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>
#include <kincir/memory/config.hpp>
#include <kincir/memory/detail/topic.hpp>
#include <kincir/memory/stats.hpp>

#include <algorithm>           // std::sort
#include <atomic>              // phase, ids
#include <chrono>              // the maintenance period
#include <condition_variable>  // maintenance thread sleep
#include <functional>          // std::equal_to<> for heterogeneous lookup
#include <map>                 // delayed wakeups by time
#include <memory>              // std::shared_ptr
#include <mutex>               // topic map
#include <string>              // names
#include <string_view>         // lookups
#include <thread>              // maintenance thread
#include <unordered_map>       // topics by name
#include <vector>              // listings

namespace kincir::memory::detail {

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

enum class Phase : int { running = 0, shutting_down = 1, forced = 2 };

/// Wakes a topic's asynchronous receivers when a delayed requeued delivery becomes ready (blocking
/// receivers look for requeued deliveries every few milliseconds on their own). One thread per
/// broker, started by the first delayed requeue. Its state is shared with the thread, so the
/// broker may be destroyed on any thread, this one included (a wake can drop the last reference
/// to an operation that holds the broker).
class DelayedWakeups {
 public:
  DelayedWakeups() = default;
  DelayedWakeups(const DelayedWakeups&) = delete;
  DelayedWakeups& operator=(const DelayedWakeups&) = delete;
  ~DelayedWakeups() { stop(); }

  /// Calls `topic->notify_async()` once the steady clock reaches `ready_ns`.
  void wake_at(const std::shared_ptr<Topic>& topic, std::int64_t ready_ns) {
    const std::lock_guard lock(state_->mutex);
    if (state_->stopped) return;
    const bool earliest = state_->due.empty() || ready_ns < state_->due.begin()->first;
    state_->due.emplace(ready_ns, topic);
    if (!thread_.joinable()) {
      thread_ = std::thread([state = state_] { run(*state); });
    } else if (earliest) {
      state_->cv.notify_one();
    }
  }

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable cv;
    std::multimap<std::int64_t, std::weak_ptr<Topic>> due;  // under mutex
    bool stopped = false;                                   // under mutex
  };

  void stop() {
    {
      const std::lock_guard lock(state_->mutex);
      state_->stopped = true;
      state_->due.clear();
    }
    state_->cv.notify_all();
    if (!thread_.joinable()) return;
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();  // the broker's last owner let go inside a wake: the thread ends on its own
    } else {
      thread_.join();
    }
  }

  static void run(State& state) {
    std::unique_lock lock(state.mutex);
    while (!state.stopped) {
      if (state.due.empty()) {
        state.cv.wait(lock);
        continue;
      }
      const std::int64_t next = state.due.begin()->first;
      const std::int64_t now = steady_now_ns();
      if (next > now) {
        state.cv.wait_for(lock, std::chrono::nanoseconds(next - now));
        continue;
      }
      std::vector<std::weak_ptr<Topic>> woken;
      auto it = state.due.begin();
      for (; it != state.due.end() && it->first <= now; ++it) woken.push_back(std::move(it->second));
      state.due.erase(state.due.begin(), it);
      lock.unlock();
      for (const auto& weak : woken) {
        if (auto topic = weak.lock()) topic->notify_async();
      }
      woken.clear();  // may release the last reference to the broker: `state` outlives it
      lock.lock();
    }
  }

  std::shared_ptr<State> state_ = std::make_shared<State>();
  std::thread thread_;
};

class BrokerState {
 public:
  explicit BrokerState(BrokerConfig config) : config_(std::move(config)) {
    if (config_.cleanup_interval.count() > 0) maintenance_ = std::thread([this] { maintenance_loop(); });
  }

  BrokerState(const BrokerState&) = delete;
  BrokerState& operator=(const BrokerState&) = delete;

  ~BrokerState() {
    {
      const std::lock_guard lock(maintenance_mutex_);
      stop_maintenance_ = true;
    }
    maintenance_cv_.notify_all();
    if (maintenance_.joinable()) maintenance_.join();
  }

  [[nodiscard]] const BrokerConfig& config() const noexcept { return config_; }
  [[nodiscard]] Phase phase() const noexcept { return static_cast<Phase>(phase_.load(std::memory_order_acquire)); }

  /// The topic named `name`, created if `create` (subject to `max_topics`). Null with `ec` set on
  /// failure, or null without error when it does not exist and `create` is false.
  std::shared_ptr<Topic> find_topic(std::string_view name, bool create, std::error_code& ec) {
    ec.clear();
    if (!is_valid_topic(name)) {
      ec = errc::invalid_topic;
      return nullptr;
    }
    const std::lock_guard lock(topics_mutex_);
    return find_topic_locked(name, create, ec);
  }

  /// Runs `fn(Topic&)` with the topic map locked, so no maintenance pass removes the topic under
  /// it (used by subscribe).
  template <class Fn>
  void with_topic_locked(std::string_view name, std::error_code& ec, Fn&& fn) {
    ec.clear();
    if (!is_valid_topic(name)) {
      ec = errc::invalid_topic;
      return;
    }
    const std::lock_guard lock(topics_mutex_);
    auto topic = find_topic_locked(name, true, ec);
    if (topic) fn(topic);
  }

  /// Wakes `topic`'s asynchronous receivers at steady time `ready_ns` (a delayed requeue).
  void wake_at(const std::shared_ptr<Topic>& topic, std::int64_t ready_ns) { wakeups_.wake_at(topic, ready_ns); }

  [[nodiscard]] std::uint64_t next_subscriber_id() noexcept {
    return next_subscriber_id_.fetch_add(1, std::memory_order_relaxed) + 1;
  }

  [[nodiscard]] std::vector<std::shared_ptr<Topic>> all_topics() const {
    const std::lock_guard lock(topics_mutex_);
    std::vector<std::shared_ptr<Topic>> out;
    out.reserve(topics_.size());
    for (const auto& [name, topic] : topics_) out.push_back(topic);
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a->name < b->name; });
    return out;
  }

  bool delete_topic(std::string_view name) {
    std::shared_ptr<Topic> topic;
    {
      const std::lock_guard lock(topics_mutex_);
      auto it = topics_.find(name);
      if (it == topics_.end()) return false;
      topic = std::move(it->second);
      // Marked before it leaves the map (under the map's lock): a publisher that finds it
      // deleted looks the name up again and so never writes to a topic nobody can subscribe to.
      topic->deleted.store(true, std::memory_order_release);
      topics_.erase(it);
    }
    retire(*topic);
    return true;
  }

  void shutdown(bool force) {
    const int target = static_cast<int>(force ? Phase::forced : Phase::shutting_down);
    int current = phase_.load(std::memory_order_relaxed);
    while (current < target && !phase_.compare_exchange_weak(current, target, std::memory_order_acq_rel)) {
    }
    for (const auto& topic : all_topics()) {
      topic->ring.close();
      if (force) {
        topic->ring.clear();
        const std::lock_guard lock(topic->mutex);
        for (auto& [n, g] : topic->groups) g->requeued.clear();
      }
      topic->wake_all();
    }
    {
      const std::lock_guard lock(maintenance_mutex_);
      health_.state = HealthState::unhealthy;
    }
  }

  /// What became of an internal publish.
  enum class InternalPublish {
    published,
    dropped,    ///< The target exists but has no subscriber or no room: dropped, counted there.
    no_target,  ///< The target could not be created (shutdown, `max_topics`): not counted.
  };

  /// Publishes one message internally (dead-lettering) without ever waiting: a full or
  /// subscriber-less target drops it and counts it in its own `dropped`.
  InternalPublish publish_internal(std::string_view name, Message&& message, std::int64_t expires_ns) {
    if (phase() != Phase::running) return InternalPublish::no_target;
    std::error_code ec;
    auto topic = find_topic(name, true, ec);
    if (!topic) return InternalPublish::no_target;
    if (topic->ring.cursor_count() == 0) {
      topic->dropped_without_subscriber(1, config_.enable_statistics,
                                        "dead-letter topic has no subscriber: a dead-lettered message was dropped");
      return InternalPublish::dropped;
    }
    Envelope e{std::move(message), expires_ns};
    if (topic->publish(&e, &e + 1, /*may_wait=*/false, config_.enable_statistics) == PublishStatus::ok)
      return InternalPublish::published;
    if (config_.enable_statistics) topic->counters.dropped.fetch_add(1, std::memory_order_relaxed);
    topic->dead_letter_full();
    return InternalPublish::dropped;
  }

  [[nodiscard]] HealthStatus compute_health() const {
    HealthStatus h;
    h.checked_at = std::chrono::system_clock::now();
    const auto topics = all_topics();
    h.topics = topics.size();
    double worst = 0.0;
    for (const auto& topic : topics) {
      const TopicInfo info = topic->info(false);
      h.subscribers += info.subscribers;
      h.publishers_blocked += info.publishers_blocked;
      if (h.worst_topic.empty() || info.queue_depth > h.max_lag) {
        h.max_lag = info.queue_depth;
        h.worst_topic = info.name;
        h.worst_subscriber = info.slowest_subscriber;
      }
      worst = std::max(worst, static_cast<double>(info.queue_depth) / static_cast<double>(topic->ring.capacity()));
    }
    if (phase() != Phase::running || worst >= 1.0)
      h.state = HealthState::unhealthy;
    else if (worst >= 0.5)
      h.state = HealthState::degraded;
    else
      h.state = HealthState::healthy;
    return h;
  }

  [[nodiscard]] HealthStatus health() const {
    if (!config_.enable_health_monitoring) return {};
    const std::lock_guard lock(maintenance_mutex_);
    return health_;
  }

  /// One maintenance pass: expire requeued deliveries, drop idle topics, refresh health.
  void maintain() {
    if (config_.enable_ttl) {
      const std::int64_t now = steady_now_ns();
      for (const auto& topic : all_topics()) {
        std::size_t expired = 0;
        {
          const std::lock_guard lock(topic->mutex);
          for (auto& [n, g] : topic->groups) expired += g->requeued.expire(now);
        }
        if (config_.enable_statistics && expired != 0)
          topic->counters.expired.fetch_add(expired, std::memory_order_relaxed);
      }
    }
    std::vector<std::shared_ptr<Topic>> idle;
    {
      const std::lock_guard lock(topics_mutex_);
      for (auto it = topics_.begin(); it != topics_.end();) {
        if (it->second->ring.cursor_count() == 0) {
          it->second->deleted.store(true, std::memory_order_release);  // see delete_topic
          idle.push_back(std::move(it->second));
          it = topics_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (const auto& topic : idle) retire(*topic);
    if (config_.enable_health_monitoring) {
      HealthStatus h = compute_health();
      const std::lock_guard lock(maintenance_mutex_);
      health_ = std::move(h);
    }
    maintenance_passes_.fetch_add(1, std::memory_order_release);
  }

  /// The counters of every topic that was deleted or removed as idle, summed (for the broker's
  /// totals: they keep counting what happened on topics that no longer exist).
  [[nodiscard]] BrokerStats retired_totals() const {
    const std::lock_guard lock(retired_mutex_);
    return retired_;
  }

  [[nodiscard]] std::uint64_t maintenance_passes() const noexcept {
    return maintenance_passes_.load(std::memory_order_acquire);
  }

 private:
  std::shared_ptr<Topic> find_topic_locked(std::string_view name, bool create, std::error_code& ec) {
    if (auto it = topics_.find(name); it != topics_.end()) return it->second;
    if (!create) return nullptr;
    if (topics_.size() >= config_.max_topics) {
      ec = errc::too_many_topics;
      return nullptr;
    }
    auto topic = std::make_shared<Topic>(std::string(name), config_);
    if (phase() != Phase::running) topic->ring.close();
    topics_.emplace(topic->name, topic);
    return topic;
  }

  /// Closes a topic that left the map (and was marked deleted under the map's lock).
  void retire(Topic& topic) {
    topic.ring.close();
    topic.wake_all();
    const TopicInfo info = topic.info(false);
    const std::lock_guard lock(retired_mutex_);
    retired_.published += info.published;
    retired_.delivered += info.delivered;
    retired_.dropped += info.dropped;
    retired_.expired += info.expired;
    retired_.redelivered += info.redelivered;
    retired_.dead_lettered += info.dead_lettered;
    retired_.dropped_no_subscriber += info.dropped_no_subscriber;
    retired_.publisher_waits += info.publisher_waits;
  }

  void maintenance_loop() {
    using clock = std::chrono::steady_clock;
    std::unique_lock lock(maintenance_mutex_);
    while (!stop_maintenance_) {
      // An absolute deadline: `wait_for` with a period near the duration's limit overflows.
      const auto now = clock::now();
      const auto period = std::chrono::duration_cast<clock::duration>(config_.cleanup_interval);
      const auto next = period >= clock::time_point::max() - now ? clock::time_point::max() : now + period;
      maintenance_cv_.wait_until(lock, next, [this] { return stop_maintenance_; });
      if (stop_maintenance_) break;
      lock.unlock();
      maintain();
      lock.lock();
    }
  }

  const BrokerConfig config_;
  std::atomic<int> phase_{static_cast<int>(Phase::running)};
  mutable std::mutex retired_mutex_;
  BrokerStats retired_;  ///< Totals only (no per_topic); under retired_mutex_.
  std::atomic<std::uint64_t> next_subscriber_id_{0};

  mutable std::mutex topics_mutex_;
  std::unordered_map<std::string, std::shared_ptr<Topic>, StringHash, std::equal_to<>> topics_;

  mutable std::mutex maintenance_mutex_;
  std::condition_variable maintenance_cv_;
  bool stop_maintenance_ = false;
  HealthStatus health_;
  std::atomic<std::uint64_t> maintenance_passes_{0};
  DelayedWakeups wakeups_;
  std::thread maintenance_;  // last: started after everything it uses exists
};

}  // namespace kincir::memory::detail
