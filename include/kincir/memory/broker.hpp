/// @file
/// `kincir::memory::InMemoryBroker`: topics, each a lock-free broadcast ring, in one process.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>
#include <kincir/memory/config.hpp>
#include <kincir/memory/detail/broker_state.hpp>
#include <kincir/memory/stats.hpp>

#include <memory>        // std::shared_ptr
#include <optional>      // topic_info
#include <string>        // topic names
#include <string_view>   // topic names
#include <system_error>  // std::error_code
#include <vector>        // list_topics

namespace kincir::memory {

class InMemoryPublisher;
class InMemorySubscriber;
class InMemoryAckSubscriber;

/// An in-process message broker. Topics are created on first use; every subscriber of a topic
/// receives every message published to it after it subscribed (fan-out), except that members of
/// one consumer group share the messages (each goes to one member). See docs/broker.md.
///
/// The guide shares it through `Arc`; here `std::shared_ptr<InMemoryBroker>` or the broker itself
/// can be passed to publishers and subscribers, which keep its state alive: destroying the broker
/// object while they exist is safe. All members are thread-safe.
class InMemoryBroker {
 public:
  /// A broker with `BrokerConfig::with_default_config()`.
  InMemoryBroker() : InMemoryBroker(BrokerConfig{}) {}

  /// Throws `kincir::Error` (`errc::invalid_argument`) if `config` does not validate; its
  /// `what()` names the field and the allowed range.
  explicit InMemoryBroker(BrokerConfig config) {
    std::error_code ec;
    std::string reason;
    if (!config.validate(ec, &reason)) throw Error(ec, "InMemoryBroker: invalid BrokerConfig: " + reason);
    state_ = std::make_shared<detail::BrokerState>(std::move(config));
  }

  /// Non-throwing form: on an invalid `config`, sets `ec` and leaves the broker invalid
  /// (`valid()` is false; any use other than destruction is undefined).
  InMemoryBroker(BrokerConfig config, std::error_code& ec) {
    if (config.validate(ec)) state_ = std::make_shared<detail::BrokerState>(std::move(config));
  }

  /// The guide's constructor name.
  [[nodiscard]] static InMemoryBroker with_default_config() { return InMemoryBroker(BrokerConfig{}); }

  InMemoryBroker(InMemoryBroker&&) noexcept = default;
  InMemoryBroker& operator=(InMemoryBroker&&) noexcept = default;
  InMemoryBroker(const InMemoryBroker&) = delete;
  InMemoryBroker& operator=(const InMemoryBroker&) = delete;
  ~InMemoryBroker() = default;

  [[nodiscard]] bool valid() const noexcept { return state_ != nullptr; }
  [[nodiscard]] const BrokerConfig& config() const noexcept { return state_->config(); }

  /// Names of the existing topics, sorted.
  [[nodiscard]] std::vector<std::string> list_topics() const {
    std::vector<std::string> names;
    for (const auto& t : state_->all_topics()) names.push_back(t->name);
    return names;
  }

  /// Counters, subscribers and queue depth of one topic; empty if it does not exist.
  [[nodiscard]] std::optional<TopicInfo> topic_info(std::string_view topic) const {
    std::error_code ec;
    auto t = state_->find_topic(topic, false, ec);
    if (!t) return std::nullopt;
    return t->info(true);
  }

  /// Creates `topic` if it does not exist (publishing or subscribing does so too).
  void create_topic(std::string_view topic, std::error_code& ec) { state_->find_topic(topic, true, ec); }
  void create_topic(std::string_view topic) {
    std::error_code ec;
    create_topic(topic, ec);
    throw_if(ec, "InMemoryBroker::create_topic");
  }

  /// Removes `topic`: its subscribers drain what it held, then get `errc::closed`; later
  /// publishes create it anew. Returns whether it existed.
  bool delete_topic(std::string_view topic) { return state_->delete_topic(topic); }

  /// Discards every message of `topic` not yet received (ring and requeued deliveries); returns
  /// whether the topic exists. Subscribers stay subscribed.
  bool clear_topic(std::string_view topic) {
    std::error_code ec;
    auto t = state_->find_topic(topic, false, ec);
    if (!t) return false;
    t->ring.clear();
    t->clear_epoch.fetch_add(1, std::memory_order_acq_rel);
    const std::lock_guard lock(t->mutex);
    for (auto& [name, group] : t->groups) group->requeued.clear();
    return true;
  }

  /// A snapshot of every counter (zero where statistics are disabled), per live topic and in
  /// total; the totals include the topics that were deleted or removed as idle.
  [[nodiscard]] BrokerStats stats() const {
    BrokerStats s = state_->retired_totals();
    for (const auto& t : state_->all_topics()) {
      TopicInfo info = t->info(true);
      ++s.topics;
      s.subscribers += info.subscribers;
      s.published += info.published;
      s.delivered += info.delivered;
      s.dropped += info.dropped;
      s.expired += info.expired;
      s.redelivered += info.redelivered;
      s.dead_lettered += info.dead_lettered;
      s.queue_depth += info.queue_depth;
      s.dropped_no_subscriber += info.dropped_no_subscriber;
      s.publisher_waits += info.publisher_waits;
      s.publishers_blocked += info.publishers_blocked;
      s.per_topic.push_back(std::move(info));
    }
    return s;
  }

  /// The health computed by the last maintenance pass; `HealthState::unknown` when health
  /// monitoring is disabled or no pass has run yet. `check_health()` computes it now.
  [[nodiscard]] HealthStatus health() const { return state_->health(); }
  [[nodiscard]] HealthStatus check_health() const { return state_->compute_health(); }

  /// Runs one maintenance pass now (the background thread runs one every `cleanup_interval`).
  void run_maintenance() { state_->maintain(); }

  /// Graceful: publishing fails with `errc::broker_shutdown` from now on; subscribers receive
  /// what was already published, then get `errc::broker_shutdown`. Wakes every blocked call.
  void shutdown() { state_->shutdown(false); }

  /// Like `shutdown`, but subscribers lose what they had not received yet.
  void force_shutdown() { state_->shutdown(true); }

  [[nodiscard]] bool is_shutdown() const noexcept { return state_->phase() != detail::Phase::running; }

 private:
  friend class InMemoryPublisher;
  friend class InMemorySubscriber;
  friend class InMemoryAckSubscriber;

  std::shared_ptr<detail::BrokerState> state_;
};

}  // namespace kincir::memory
