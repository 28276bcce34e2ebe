/// @file
/// `kincir::memory::InMemorySubscriber` and `InMemoryAckSubscriber`: receive from a topic of an
/// `InMemoryBroker`.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/ack.hpp>
#include <kincir/core/concepts.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>
#include <kincir/memory/broker.hpp>
#include <kincir/memory/detail/subscriber_core.hpp>

#include <chrono>        // receive_for
#include <cstddef>       // std::size_t
#include <memory>        // std::shared_ptr
#include <mutex>         // std::lock_guard on the subscriber's async mutex
#include <optional>      // try_receive
#include <span>          // batch settlement
#include <string>        // the reason of an invalid SubscriptionOptions
#include <string_view>   // topics
#include <system_error>  // std::error_code
#include <utility>       // std::pair, std::exchange
#include <vector>        // batches

namespace kincir::memory {

namespace detail {

/// Whether `async_receive` can be initiated with `Token`: `<kincir/memory/async.hpp>` provides
/// `initiate_async_receive` (found by argument-dependent lookup), which needs standalone Asio.
/// Without that include, `async_receive` does not exist for overload resolution.
template <class Token>
concept async_receive_available = requires(const std::shared_ptr<SubscriberCore>& core, Token&& token) {
  initiate_async_receive(core, std::forward<Token>(token));
};

/// The same for `async_receive_with_ack` (`initiate_async_receive_with_ack`, from the same header).
template <class Token>
concept async_receive_with_ack_available = requires(const std::shared_ptr<SubscriberCore>& core, Token&& token) {
  initiate_async_receive_with_ack(core, std::forward<Token>(token));
};

}  // namespace detail

/// Receives the messages of one topic from an `InMemoryBroker`: every message published after
/// `subscribe`, in publication order, or — with a group — its share of them.
///
/// Thread safety: one thread at a time (a subscriber is a cursor); share work across threads with
/// a group, one subscriber per thread. Several subscribers may run concurrently.
class InMemorySubscriber {
 public:
  explicit InMemorySubscriber(const InMemoryBroker& broker) : InMemorySubscriber(broker.state_, false) {}
  explicit InMemorySubscriber(const std::shared_ptr<InMemoryBroker>& broker)
      : InMemorySubscriber(broker->state_, false) {}

  /// A moved-from subscriber is not subscribed and can be used again (`subscribe`).
  InMemorySubscriber(InMemorySubscriber&& other) noexcept
      // The broker is copied on purpose: the moved-from subscriber keeps it to start over.
      : broker_(other.broker_),  // NOLINT(performance-move-constructor-init)
        core_(std::move(other.core_)),
        ack_mode_(other.ack_mode_) {}
  /// Leaves this subscriber's topic first, as destruction would (a pending `async_receive`
  /// completes with `operation_aborted`).
  InMemorySubscriber& operator=(InMemorySubscriber&& other) noexcept {
    if (this != &other) {
      if (core_) core_->unsubscribe();
      broker_ = other.broker_;
      core_ = std::move(other.core_);
      ack_mode_ = other.ack_mode_;
    }
    return *this;
  }
  InMemorySubscriber(const InMemorySubscriber&) = delete;
  InMemorySubscriber& operator=(const InMemorySubscriber&) = delete;

  /// Leaves the topic (a pending `async_receive` completes with `operation_aborted`); the
  /// subscriber no longer holds publishers back.
  ~InMemorySubscriber() {
    // Aborts a pending receive first (after a running attempt; later ones see the op completed);
    // even if an op still holds the core, the cursor goes now.
    if (core_) core_->unsubscribe();
  }

  /// Subscribes to `topic`, leaving any previous subscription (a pending `async_receive`
  /// completes with `operation_aborted`). Errors: `invalid_topic`, `too_many_topics`,
  /// `too_many_subscribers`, `broker_shutdown`; on error the previous subscription is kept, and a
  /// pending `async_receive` keeps waiting on it.
  void subscribe(std::string_view topic, std::error_code& ec) { core().subscribe(topic, {}, {}, ec); }
  void subscribe(std::string_view topic) {
    std::error_code ec;
    subscribe(topic, ec);
    throw_if(ec, "InMemorySubscriber::subscribe");
  }

  /// Joins consumer group `group` of `topic`: members share the messages, each going to one
  /// member (a work queue, like consumers of one RabbitMQ queue). Group names follow the topic
  /// rules (an invalid one fails with `invalid_argument`), except that an empty `group` means
  /// "no group": the same as `subscribe(topic)`, so a group read from configuration may be left
  /// empty.
  void subscribe(std::string_view topic, std::string_view group, std::error_code& ec) {
    core().subscribe(topic, group, {}, ec);
  }
  void subscribe(std::string_view topic, std::string_view group) {
    std::error_code ec;
    subscribe(topic, group, ec);
    throw_if(ec, "InMemorySubscriber::subscribe");
  }

  /// Leaves the topic; a pending `async_receive` completes with `operation_aborted`. An ack
  /// subscriber's unacked deliveries go back to its group, or, without a group, are dropped and
  /// counted in `dropped`.
  void unsubscribe() {
    if (core_) core_->unsubscribe();
  }

  /// Blocks until a message arrives. Errors: `not_subscribed`, `closed` (topic deleted, all
  /// received), `broker_shutdown` (after every message published before the shutdown).
  Message receive(std::error_code& ec) {
    detail::Requeued r;
    core().next_until(clock::time_point::max(), r, ec);
    return std::move(r.message);
  }
  Message receive() {
    std::error_code ec;
    Message m = receive(ec);
    throw_if(ec, "InMemorySubscriber::receive");
    return m;
  }

  /// A message if one is there now; never waits. Terminal errors go to `ec`.
  std::optional<Message> try_receive(std::error_code& ec) {
    detail::Requeued r;
    if (!core().try_next(r, ec)) return std::nullopt;
    return std::move(r.message);
  }
  std::optional<Message> try_receive() {
    std::error_code ec;
    auto m = try_receive(ec);
    throw_if(ec, "InMemorySubscriber::try_receive");
    return m;
  }

  /// Waits at most `timeout`; empty on timeout.
  template <class Rep, class Period>
  std::optional<Message> receive_for(std::chrono::duration<Rep, Period> timeout, std::error_code& ec) {
    detail::Requeued r;
    if (core().next_until(deadline(timeout), r, ec)) return std::move(r.message);
    if (ec == errc::timeout) ec.clear();
    return std::nullopt;
  }
  template <class Rep, class Period>
  std::optional<Message> receive_for(std::chrono::duration<Rep, Period> timeout) {
    std::error_code ec;
    auto m = receive_for(timeout, ec);
    throw_if(ec, "InMemorySubscriber::receive_for");
    return m;
  }

  /// Appends up to `max` messages that are there now to `out`; returns how many. Never waits.
  std::size_t try_receive_batch(std::vector<Message>& out, std::size_t max, std::error_code& ec) {
    std::size_t n = 0;
    detail::Requeued r;
    while (n < max && core().try_next(r, ec)) {
      out.push_back(std::move(r.message));
      ++n;
    }
    if (n != 0) ec.clear();  // report a terminal condition on the next call
    return n;
  }
  std::size_t try_receive_batch(std::vector<Message>& out, std::size_t max) {
    std::error_code ec;
    const auto n = try_receive_batch(out, max, ec);
    throw_if(ec, "InMemorySubscriber::try_receive_batch");
    return n;
  }

  /// Calls `fn(const Message&)` on up to `max` messages that are there now, in place: nothing is
  /// copied out of the topic. Returns how many. Never waits. (Ack mode: these count as acked.)
  template <class Fn>
  std::size_t poll(std::size_t max, Fn&& fn, std::error_code& ec) {
    return core().poll(max, fn, ec);
  }
  template <class Fn>
  std::size_t poll(std::size_t max, Fn&& fn) {
    std::error_code ec;
    const auto n = core().poll(max, fn, ec);
    throw_if(ec, "InMemorySubscriber::poll");
    return n;
  }

  /// Receives asynchronously (needs `#include <kincir/memory/async.hpp>` and standalone Asio).
  /// Completion signature `void(std::error_code, kincir::Message)`. The handler runs on its
  /// associated executor (`asio::system_executor` if it has none), never inside this call.
  /// Cancellable through the token's cancellation slot (`asio::error::operation_aborted`). One
  /// `async_receive` at a time per subscriber, and no synchronous receive while it is pending.
  template <class CompletionToken>
  requires detail::async_receive_available<CompletionToken>
  auto async_receive(CompletionToken&& token) {
    (void)core();  // a moved-from subscriber gets its state now
    return initiate_async_receive(core_, std::forward<CompletionToken>(token));
  }

  /// The subscribed topic's name, empty if not subscribed.
  [[nodiscard]] std::string_view topic() const noexcept {
    return core_ && core_->topic() ? std::string_view(core_->topic()->name) : std::string_view();
  }
  [[nodiscard]] std::string_view group() const noexcept { return core_ ? core_->group_name() : std::string_view(); }
  /// Messages this subscriber (or its group) skipped because `drop_oldest` overtook it.
  [[nodiscard]] std::uint64_t lost() const noexcept { return core_ ? core_->lost() : 0; }

 protected:
  using clock = detail::SubscriberCore::clock;

  InMemorySubscriber(const std::shared_ptr<detail::BrokerState>& broker, bool ack_mode)
      : broker_(broker), core_(std::make_shared<detail::SubscriberCore>(broker, ack_mode)), ack_mode_(ack_mode) {}

  /// The subscription state; a moved-from subscriber gets a new one on first use.
  detail::SubscriberCore& core() {
    if (!core_) [[unlikely]]
      core_ = std::make_shared<detail::SubscriberCore>(broker_, ack_mode_);
    return *core_;
  }

  template <class Rep, class Period>
  static clock::time_point deadline(std::chrono::duration<Rep, Period> timeout) {
    const auto now = clock::now();
    if (timeout >= std::chrono::duration_cast<std::chrono::duration<Rep, Period>>(clock::time_point::max() - now))
      return clock::time_point::max();
    return now + std::chrono::duration_cast<clock::duration>(timeout);
  }

  std::shared_ptr<detail::BrokerState> broker_;
  std::shared_ptr<detail::SubscriberCore> core_;
  bool ack_mode_ = false;
};

/// A subscriber whose deliveries must be settled: `receive_with_ack` (or `async_receive_with_ack`)
/// hands out a message with a `BasicAckHandle`; `ack` removes it, `nack(handle, true)` redelivers
/// it (to this subscriber, or to any member of its group) with a higher delivery count, after the
/// subscription's requeue delay, up to its `max_deliveries`, after which it goes to the
/// subscription's dead-letter topic (or is dropped and counted). Those three come from the
/// `SubscriptionOptions` given to `subscribe`, or from `BrokerConfig` when not set. At most
/// `max_unacked` deliveries are outstanding: receiving waits while the window is full.
/// `receive()`/`try_receive()`/`async_receive()` still work and count as acknowledged on delivery.
///
/// `ack`/`nack` may be called from any thread; receiving stays one thread at a time.
class InMemoryAckSubscriber : public InMemorySubscriber {
 public:
  using handle_type = BasicAckHandle;

  explicit InMemoryAckSubscriber(const InMemoryBroker& broker) : InMemorySubscriber(broker.state_, true) {}
  explicit InMemoryAckSubscriber(const std::shared_ptr<InMemoryBroker>& broker)
      : InMemorySubscriber(broker->state_, true) {}

  /// Most deliveries this subscriber may hold unsettled (`BrokerConfig::max_unacked`): receiving
  /// waits while that many are outstanding.
  [[nodiscard]] std::size_t max_unacked() const noexcept { return broker_->config().max_unacked; }

  using InMemorySubscriber::subscribe;

  /// Subscribes to `topic` (in consumer group `group`, unless it is empty) with its own retry and
  /// dead-lettering: each field of `options` that is set replaces the broker's default for this
  /// subscription (a subscribe without options takes the broker's defaults). In a group, the
  /// options of the member that settles a delivery decide what becomes of it. Errors: those of
  /// `subscribe(topic, group)`, and `invalid_argument` for options out of range
  /// (`SubscriptionOptions::validate(ec, &reason)` says which; the throwing form's `what()` names
  /// the field and its allowed range).
  void subscribe(std::string_view topic, std::string_view group, const SubscriptionOptions& options,
                 std::error_code& ec) {
    core().subscribe(topic, group, options, ec);
  }
  void subscribe(std::string_view topic, std::string_view group, const SubscriptionOptions& options) {
    std::error_code ec;
    std::string reason;
    if (!options.validate(ec, &reason))
      throw Error(ec, "InMemoryAckSubscriber::subscribe: invalid SubscriptionOptions: " + reason);
    subscribe(topic, group, options, ec);
    throw_if(ec, "InMemoryAckSubscriber::subscribe");
  }
  /// Without a group.
  void subscribe(std::string_view topic, const SubscriptionOptions& options, std::error_code& ec) {
    subscribe(topic, std::string_view(), options, ec);
  }
  void subscribe(std::string_view topic, const SubscriptionOptions& options) {
    subscribe(topic, std::string_view(), options);
  }

  std::pair<Message, handle_type> receive_with_ack(std::error_code& ec) {
    return receive_with_ack_until(clock::time_point::max(), ec);
  }
  std::pair<Message, handle_type> receive_with_ack() {
    std::error_code ec;
    auto r = receive_with_ack(ec);
    throw_if(ec, "InMemoryAckSubscriber::receive_with_ack");
    return r;
  }

  /// Waits at most `timeout`; empty on timeout.
  template <class Rep, class Period>
  std::optional<std::pair<Message, handle_type>> receive_with_ack_for(std::chrono::duration<Rep, Period> timeout,
                                                                      std::error_code& ec) {
    auto r = receive_with_ack_until(deadline(timeout), ec);
    if (ec == errc::timeout) {
      ec.clear();
      return std::nullopt;
    }
    if (ec) return std::nullopt;
    return r;
  }
  template <class Rep, class Period>
  std::optional<std::pair<Message, handle_type>> receive_with_ack_for(std::chrono::duration<Rep, Period> timeout) {
    std::error_code ec;
    auto r = receive_with_ack_for(timeout, ec);
    throw_if(ec, "InMemoryAckSubscriber::receive_with_ack_for");
    return r;
  }

  /// Receives asynchronously with acknowledgement (needs `#include <kincir/memory/async.hpp>` and
  /// standalone Asio). Completion signature `void(std::error_code, kincir::Message,
  /// kincir::BasicAckHandle)` (a coroutine gets `auto [message, handle] = co_await
  /// s.async_receive_with_ack(asio::use_awaitable)`); settle the handle with `ack`/`nack` as after
  /// `receive_with_ack`. Waits while `max_unacked` deliveries are outstanding. Runs, completes and
  /// is cancelled like `async_receive`: the handler runs on its associated executor, never inside
  /// this call; a cancellation through the token's slot completes with
  /// `asio::error::operation_aborted` and an empty handle if nothing was taken yet, and is too late
  /// once a delivery was taken (the handler gets it, to settle). A delivery is outstanding from the
  /// moment it is taken: should its handler never run (its `io_context` destroyed first), leaving
  /// the topic hands it back to the group, or counts it as dropped, like any unsettled delivery.
  /// One asynchronous receive at a time per subscriber, and no synchronous receive while it is
  /// pending.
  template <class CompletionToken>
  requires detail::async_receive_with_ack_available<CompletionToken>
  auto async_receive_with_ack(CompletionToken&& token) {
    (void)core();  // a moved-from subscriber gets its state now
    return initiate_async_receive_with_ack(core_, std::forward<CompletionToken>(token));
  }

  void ack(const handle_type& h, std::error_code& ec) { settle(h, detail::Settlement::ack, {}, ec); }
  void ack(const handle_type& h) {
    std::error_code ec;
    ack(h, ec);
    throw_if(ec, "InMemoryAckSubscriber::ack");
  }

  /// `requeue`: deliver again (after the subscription's requeue delay, up to its
  /// `max_deliveries`); otherwise dead-letter or drop. `reason`, if not empty, is stored in the
  /// dead-lettered message's metadata under `x-kincir-death-reason` (a requeued message carries
  /// nothing of it; the reason of its last nack counts).
  void nack(const handle_type& h, bool requeue, std::string_view reason, std::error_code& ec) {
    settle(h, requeue ? detail::Settlement::requeue : detail::Settlement::reject, reason, ec);
  }
  void nack(const handle_type& h, bool requeue, std::string_view reason) {
    std::error_code ec;
    nack(h, requeue, reason, ec);
    throw_if(ec, "InMemoryAckSubscriber::nack");
  }
  void nack(const handle_type& h, bool requeue, std::error_code& ec) { nack(h, requeue, {}, ec); }
  void nack(const handle_type& h, bool requeue) { nack(h, requeue, std::string_view()); }

  /// Settles every handle; the first unknown handle's error is reported, the others still settle.
  void ack_batch(std::span<const handle_type> handles, std::error_code& ec) {
    settle_all(handles, detail::Settlement::ack, {}, ec);
  }
  void ack_batch(std::span<const handle_type> handles) {
    std::error_code ec;
    ack_batch(handles, ec);
    throw_if(ec, "InMemoryAckSubscriber::ack_batch");
  }
  /// `reason` as for `nack`, the same for every handle.
  void nack_batch(std::span<const handle_type> handles, bool requeue, std::string_view reason, std::error_code& ec) {
    settle_all(handles, requeue ? detail::Settlement::requeue : detail::Settlement::reject, reason, ec);
  }
  void nack_batch(std::span<const handle_type> handles, bool requeue, std::string_view reason) {
    std::error_code ec;
    nack_batch(handles, requeue, reason, ec);
    throw_if(ec, "InMemoryAckSubscriber::nack_batch");
  }
  void nack_batch(std::span<const handle_type> handles, bool requeue, std::error_code& ec) {
    nack_batch(handles, requeue, {}, ec);
  }
  void nack_batch(std::span<const handle_type> handles, bool requeue) {
    nack_batch(handles, requeue, std::string_view());
  }

 private:
  std::pair<Message, handle_type> receive_with_ack_until(clock::time_point deadline, std::error_code& ec) {
    detail::Requeued r;
    if (!core().next_until(deadline, r, ec)) return {};
    handle_type h = core_->track(r);
    return {std::move(r.message), std::move(h)};
  }

  void settle(const handle_type& h, detail::Settlement how, std::string_view reason, std::error_code& ec) {
    if (!core_) [[unlikely]] {  // moved from: it holds no deliveries
      ec = errc::unknown_delivery;
      return;
    }
    core_->settle(h, how, reason, ec);
  }

  void settle_all(std::span<const handle_type> handles, detail::Settlement how, std::string_view reason,
                  std::error_code& ec) {
    ec.clear();
    for (const auto& h : handles) {
      std::error_code one;
      settle(h, how, reason, one);
      if (one && !ec) ec = one;
    }
  }
};

static_assert(Subscriber<InMemorySubscriber>);
static_assert(AckSubscriber<InMemoryAckSubscriber>);

}  // namespace kincir::memory
