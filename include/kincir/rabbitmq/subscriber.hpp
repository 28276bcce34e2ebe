/// @file
/// `kincir::rabbitmq::RabbitMQSubscriber`: consumes a topic from RabbitMQ with manual
/// acknowledgements, a per-consumer prefetch and delivery counts.
#pragma once

#include <kincir/config.hpp>

#include <kincir/core/ack.hpp>             // BasicAckHandle
#include <kincir/core/concepts.hpp>        // Subscriber, AckSubscriber, AsyncSubscriber
#include <kincir/core/error.hpp>           // kincir::errc, throw_if
#include <kincir/core/message.hpp>         // Message
#include <kincir/rabbitmq/connection.hpp>  // Connection, Channel
#include <kincir/rabbitmq/mapping.hpp>     // declarations, message_of, delivery_count_of
#include <kincir/rabbitmq/publisher.hpp>   // detail::check_topic

#include <asio/associated_cancellation_slot.hpp>  // cancellation of async_receive
#include <asio/associated_executor.hpp>           // the handler's executor
#include <asio/async_result.hpp>                  // asio::async_initiate
#include <asio/executor_work_guard.hpp>           // keeps the handler's executor alive

#include <algorithm>           // std::max, std::lower_bound
#include <atomic>              // the channel generation
#include <chrono>              // receive_for
#include <condition_variable>  // receive waits
#include <cstdint>             // delivery tags
#include <deque>               // the delivery buffer
#include <memory>              // std::shared_ptr
#include <mutex>               // buffer and settlement queue
#include <optional>            // try_receive
#include <span>                // batch settlement
#include <string>              // topic, queue, consumer tag
#include <string_view>         // topics
#include <system_error>        // std::error_code
#include <unordered_set>       // unacked tags
#include <utility>             // std::pair
#include <vector>              // settlements

namespace kincir::rabbitmq {

namespace detail {

/// A handle's tag: the channel generation in the top 16 bits, the delivery tag below. A tag
/// from an earlier generation (the channel was reopened) is never sent to the broker.
inline constexpr int kGenerationShift = 48;
inline constexpr std::uint64_t kDeliveryTagMask = (std::uint64_t{1} << kGenerationShift) - 1;
inline constexpr std::uint64_t kGenerationMask = 0xFFFF;

/// A new channel generation, never 0. Drawn from one counter for the whole process, so that a
/// handle of another subscriber (whose tag may be a valid tag here) is refused as stale instead of
/// settling this subscriber's delivery of the same tag.
inline std::uint64_t next_generation() noexcept {
  static std::atomic<std::uint64_t> counter{0};
  for (;;) {
    const std::uint64_t g = (counter.fetch_add(1, std::memory_order_relaxed) + 1) & kGenerationMask;
    if (g != 0) return g;
  }
}

struct Received {
  Message message;
  std::uint64_t tag = 0;  // generation-qualified
  std::uint32_t count = 1;
  std::chrono::system_clock::time_point timestamp;
};

/// A waiting `async_receive`, type-erased (handlers may be move-only).
class AsyncReceiver {
 public:
  virtual ~AsyncReceiver() = default;
  virtual void complete(std::error_code ec, Message m) = 0;
};

template <class Handler, class Executor>
class AsyncReceiverImpl final : public AsyncReceiver {
 public:
  AsyncReceiverImpl(Handler h, Executor ex) : handler_(std::move(h)), work_(asio::make_work_guard(ex)) {}
  void complete(std::error_code ec, Message m) override {
    auto ex = work_.get_executor();
    asio::post(ex, [h = std::move(handler_), ec, m = std::move(m)]() mutable { std::move(h)(ec, std::move(m)); });
    work_.reset();
  }

 private:
  Handler handler_;
  asio::executor_work_guard<Executor> work_;
};

enum class Settle : std::uint8_t { ack, requeue, reject };

/// The longest an automatic ack waits for the strand to pick it up when no delivery comes (while
/// deliveries stream, each read's turn sends them).
inline constexpr std::chrono::milliseconds kAckDelay{2};

/// The subscriber's state, shared by its user-facing methods (any thread, under `mutex_`) and
/// the strand (deliveries, settlements, channel events).
///
/// Recovery: when the connection is lost the subscription waits (no error) and, once the
/// connection is back, declares, binds and consumes again on a new channel (a server-named queue
/// gets a new name; the binding follows it). A channel the broker closes with a soft error (404,
/// 406 ...) is reopened the same way after a backoff, the connection untouched. Either way the
/// channel generation changes: handles from before are `errc::stale_delivery`, never sent.
class SubscriberCore final : public std::enable_shared_from_this<SubscriberCore>, public ConnectionListener {
 public:
  explicit SubscriberCore(std::shared_ptr<ConnectionCore> conn) : conn_(std::move(conn)), cfg_(conn_->config()) {}

  // --- any thread ---
  void subscribe(std::string_view topic, std::string_view group, std::error_code& ec) {
    ec = check_topic(topic);
    if (!ec && group.size() > 200) ec = kincir::errc::invalid_argument;
    if (ec) return;
    unsubscribe();
    auto waiter = std::make_shared<Waiter<int>>();
    asio::post(conn_->strand(), [self = shared_from_this(), topic = std::string(topic), group = std::string(group),
                                 waiter] { self->start(topic, group, waiter); });
    waiter->wait(ec);
    if (!ec) {
      const std::lock_guard lock(mutex_);
      topic_.assign(topic);
    }
  }

  void unsubscribe() {
    std::unique_ptr<AsyncReceiver> pending;
    {
      const std::lock_guard lock(mutex_);
      if (topic_.empty() && !subscribed_) return;
      topic_.clear();
      subscribed_ = false;
      buffer_.clear();
      buffered_bytes_ = 0;
      unacked_.clear();
      terminal_ = kincir::errc::not_subscribed;
      generation_.store(next_generation(), std::memory_order_release);
      pending = std::move(async_);
    }
    cv_.notify_all();
    if (pending) pending->complete(asio::error::operation_aborted, Message{});
    auto waiter = std::make_shared<Waiter<int>>();
    asio::post(conn_->strand(), [self = shared_from_this(), waiter] {
      self->flush_settlements();  // what was handed out is acked, not redelivered to the next consumer
      auto ch = std::move(self->channel_);
      if (!ch) return waiter->set({}, 0);
      ch->async_close([waiter] { waiter->set({}, 0); });
      self->conn_->end_turn();
    });
    std::error_code ignored;
    waiter->wait(ignored);
  }

  /// Waits until `deadline` for a delivery. `track`: hand it out for an explicit ack; otherwise
  /// it is acknowledged now.
  bool next(std::chrono::steady_clock::time_point deadline, bool track, Received& out, std::error_code& ec) {
    ec.clear();
    std::unique_lock lock(mutex_);
    const auto ready = [this] { return !buffer_.empty() || terminal_; };
    if (deadline == std::chrono::steady_clock::time_point::max()) {
      cv_.wait(lock, ready);
    } else if (!cv_.wait_until(lock, deadline, ready)) {
      ec = kincir::errc::timeout;
      return false;
    }
    if (buffer_.empty()) {
      ec = terminal_;
      return false;
    }
    out = std::move(buffer_.front());
    buffer_.pop_front();
    taken(out);
    hand_out(out, track);
    return true;
  }

  /// Returns the operation's id for `cancel_async` (0: it completed at once).
  std::uint64_t async_receive(std::unique_ptr<AsyncReceiver> op) {
    std::unique_lock lock(mutex_);
    if (!buffer_.empty()) {
      Received r = std::move(buffer_.front());
      buffer_.pop_front();
      taken(r);
      hand_out(r, false);
      lock.unlock();
      op->complete({}, std::move(r.message));
      return 0;
    }
    if (terminal_) {
      const auto ec = terminal_;
      lock.unlock();
      op->complete(ec, Message{});
      return 0;
    }
    async_ = std::move(op);
    return ++async_id_;
  }

  /// A cancellation slot fired (any thread): the operation `id`, if still pending, completes with
  /// `asio::error::operation_aborted`. A delivery is never lost to a cancellation: one that
  /// arrives later stays buffered for the next receive.
  void cancel_async(std::uint64_t id) {
    std::unique_ptr<AsyncReceiver> op;
    {
      const std::lock_guard lock(mutex_);
      if (id == 0 || id != async_id_ || !async_) return;
      op = std::move(async_);
    }
    op->complete(asio::error::operation_aborted, Message{});
  }

  void settle(std::uint64_t tag, Settle how, std::error_code& ec) {
    ec.clear();
    {
      const std::lock_guard lock(mutex_);
      if ((tag >> kGenerationShift) != current_generation()) {
        ec = errc::stale_delivery;
        return;
      }
      if (unacked_.erase(tag) == 0) {
        ec = kincir::errc::unknown_delivery;
        return;
      }
      queue_settle(tag, how);
    }
  }

  [[nodiscard]] std::string topic() {
    const std::lock_guard lock(mutex_);
    return topic_;
  }

  [[nodiscard]] std::size_t buffered_bytes() {
    const std::lock_guard lock(mutex_);
    return buffered_bytes_;
  }
  [[nodiscard]] bool paused() {
    const std::lock_guard lock(mutex_);
    return pause_requested_;
  }
  [[nodiscard]] std::string queue() {
    const std::lock_guard lock(mutex_);
    return queue_name_;
  }
  [[nodiscard]] std::uint64_t recoveries() const noexcept { return recoveries_.load(std::memory_order_relaxed); }

  // --- strand ---
  void shutdown() {
    shut_down_ = true;
    if (retry_timer_) retry_timer_->cancel();
    flush_settlements();  // what was handed out is acked before the channel closes
    if (auto ch = std::move(channel_)) ch->async_close([] {});
    conn_->end_turn();
    finish_pending_subscribe(kincir::errc::closed);
    // The subscriber is gone: a pending async_receive still gets its one completion.
    std::unique_ptr<AsyncReceiver> op;
    {
      const std::lock_guard lock(mutex_);
      op = std::move(async_);
    }
    if (op) op->complete(asio::error::operation_aborted, Message{});
  }

  void on_recovered() override {
    if (shut_down_) return;
    if (pending_subscribe_) {  // a subscribe made during the outage goes ahead now
      auto done = std::move(pending_subscribe_);
      pending_subscribe_ = nullptr;
      return open_and_consume(false, std::move(done));
    }
    if (channel_) return;
    resubscribe();
  }
  void on_failed(std::error_code ec) override {
    finish_pending_subscribe(ec ? ec : std::error_code(errc::connection_closed));
    set_terminal(ec ? ec : std::error_code(errc::connection_closed));
  }

  /// The channel (null while there is none), for tests and diagnostics.
  [[nodiscard]] const std::shared_ptr<Channel>& channel() const noexcept { return channel_; }

 private:
  struct Settlement {
    std::uint64_t tag;
    Settle how;
  };
  struct Outstanding {
    std::uint64_t tag;
    bool acked = false;
    bool sent = false;
  };

  [[nodiscard]] std::uint64_t current_generation() const noexcept {
    return generation_.load(std::memory_order_acquire) & kGenerationMask;
  }

  // Under mutex_: `r` left the buffer. Below half the byte bound a paused consumer resumes.
  void taken(const Received& r) {
    buffered_bytes_ -= r.message.payload.size();
    if (!pause_requested_ || resume_posted_ || buffered_bytes_ > cfg_.max_buffered_bytes / 2) return;
    resume_posted_ = true;
    asio::post(conn_->strand(), [self = shared_from_this()] { self->resume(); });
  }

  // Under mutex_. An automatic ack is not posted on its own: the strand sends it with the next
  // read's deliveries or from the ack timer (within kAckDelay), or at once when half the
  // prefetch is waiting, so the receiving thread does not wake the I/O thread per batch.
  void hand_out(const Received& r, bool track) {
    if (track) return (void)unacked_.insert(r.tag);
    const std::size_t batch = std::max<std::size_t>(1, cfg_.prefetch / 2);
    queue_settle(r.tag, Settle::ack, settlements_.size() + 1 >= batch);
  }

  // Under mutex_: settlements go to the strand in batches (one post per batch).
  void queue_settle(std::uint64_t tag, Settle how, bool flush = true) {
    settlements_.push_back(Settlement{tag, how});
    if (settle_posted_ || !flush) return;
    settle_posted_ = true;
    asio::post(conn_->strand(), [self = shared_from_this()] { self->flush_settlements(); });
  }

  void start(const std::string& topic, const std::string& group, const std::shared_ptr<Waiter<int>>& waiter) {
    if (!listening_) {
      listening_ = true;
      conn_->add_listener(weak_from_this());
    }
    topic_sub_ = topic;
    group_sub_ = group;
    consumed_ = false;
    // While the connection is being recovered the subscribe waits for it, at most `call_timeout`
    // from now; a connection lost while subscribing waits the same way.
    const auto deadline = clock::now() + cfg_.call_timeout;
    auto done = std::make_shared<std::function<void(std::error_code)>>();
    *done = [weak = weak_from_this(), waiter, deadline, done_weak = std::weak_ptr(done)](std::error_code ec) {
      auto self = weak.lock();
      if (ec && self && !self->shut_down_ && self->conn_->recovering() && clock::now() < deadline) {
        if (auto again = done_weak.lock())
          return self->park_subscribe(deadline, [again](std::error_code e) { (*again)(e); });
      }
      if (ec && self) {  // failed: no recovery may consume it later
        const std::lock_guard lock(self->mutex_);
        self->subscribed_ = false;
        if (!self->terminal_) self->terminal_ = ec;
      }
      waiter->set(ec, 0);
    };
    if (conn_->phase() != ConnectionCore::Phase::open && conn_->recovering())
      return park_subscribe(deadline, [done](std::error_code e) { (*done)(e); });
    open_and_consume(false, [done](std::error_code e) { (*done)(e); });
  }

  /// The connection is being recovered: the subscribe goes ahead in `on_recovered`, or fails with
  /// `errc::connection_recovering` at `deadline`, or with the error that ends the connection.
  void park_subscribe(clock::time_point deadline, std::function<void(std::error_code)> done) {
    pending_subscribe_ = std::move(done);
    if (!subscribe_timer_) subscribe_timer_ = std::make_unique<asio::steady_timer>(conn_->strand());
    subscribe_timer_->expires_at(deadline);
    subscribe_timer_->async_wait([weak = weak_from_this()](std::error_code ec) {
      auto self = weak.lock();
      if (!ec && self) self->finish_pending_subscribe(errc::connection_recovering);
    });
  }

  void finish_pending_subscribe(std::error_code ec) {
    if (!pending_subscribe_) return;
    auto done = std::move(pending_subscribe_);
    pending_subscribe_ = nullptr;
    if (subscribe_timer_) subscribe_timer_->cancel();
    done(ec);
  }

  /// After a recovery (of the connection or of this channel): consume again.
  void resubscribe() {
    {
      const std::lock_guard lock(mutex_);
      if (!subscribed_ || terminal_) return;
    }
    if (shut_down_ || channel_ || resubscribing_) return;
    resubscribing_ = true;
    open_and_consume(true, [weak = weak_from_this()](std::error_code ec) {
      auto self = weak.lock();
      if (!self) return;
      self->resubscribing_ = false;
      if (!ec) {
        self->recoveries_.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      // A connection lost meanwhile recovers again; anything else ends the subscription.
      if (!self->conn_->recovering()) self->set_terminal(ec);
    });
  }

  /// Whether the subscriber's queue outlives its connection (a group's or a topic's queue, not
  /// its own exclusive one).
  [[nodiscard]] bool durable_queue() const noexcept {
    return cfg_.topology.layout == Layout::queue_per_topic || !group_sub_.empty();
  }

  void open_and_consume(bool recovery, std::function<void(std::error_code)> done) {
    ChannelEvents events;
    std::weak_ptr<SubscriberCore> weak = shared_from_this();
    events.on_delivery = [weak](amqp::Delivery& d) {
      if (auto self = weak.lock()) self->on_delivery(d);
    };
    events.on_cancel = [weak](const std::string&) {
      if (auto self = weak.lock()) self->set_terminal(errc::consumer_cancelled);
    };
    events.on_closed = [weak](std::error_code ec) {
      if (auto self = weak.lock()) self->on_closed(ec);
    };
    auto finish = std::make_shared<std::function<void(std::error_code)>>(std::move(done));
    conn_->async_open_channel(std::move(events), [self = shared_from_this(), finish, recovery](
                                                     std::error_code ec, const std::shared_ptr<Channel>& ch) {
      if (ec) return (*finish)(ec);
      self->channel_ = ch;
      self->outstanding_.clear();
      std::uint64_t generation = 0;
      {
        const std::lock_guard lock(self->mutex_);
        generation = next_generation();
        self->generation_.store(generation, std::memory_order_release);
        if (!recovery) {
          self->terminal_.clear();
          self->subscribed_ = true;
        }
        // What a durable queue had delivered comes again (it was never acked); what the
        // subscriber's own exclusive queue delivered is still handed out (that queue is gone).
        if (!recovery || self->durable_queue()) {
          self->buffer_.clear();
          self->buffered_bytes_ = 0;
        }
        self->pause_requested_ = self->resume_posted_ = false;
        self->unacked_.clear();
      }
      self->channel_generation_ = generation & kGenerationMask;
      self->declare_and_consume(*ch, self->topic_sub_, self->group_sub_, finish);
      self->conn_->end_turn();
    });
    conn_->end_turn();
  }

  void declare_and_consume(Channel& ch, const std::string& topic, const std::string& group,
                           const std::shared_ptr<std::function<void(std::error_code)>>& finish) {
    // Pipelined: the broker answers in order, and the first failure closes the channel, which
    // fails every later call with the same code.
    auto first_error = std::make_shared<std::error_code>();
    const auto step = [first_error, finish](std::error_code ec, amqp::Method&) {
      if (ec && !*first_error) {
        *first_error = ec;
        (*finish)(ec);
      }
    };
    const TopologyConfig& t = cfg_.topology;
    const amqp::QueueDeclare queue = queue_declaration(t, topic, group);
    queue_ = queue.queue;
    const auto declared = [self = shared_from_this(), step](std::error_code ec, amqp::Method& m) {
      if (auto* ok = std::get_if<amqp::QueueDeclareOk>(&m)) {
        self->queue_ = ok->queue;  // server-named: a new name after each recovery
        const std::lock_guard lock(self->mutex_);
        self->queue_name_ = ok->queue;
      }
      step(ec, m);
    };
    if (t.layout == Layout::exchange_per_topic) {
      if (t.declare) ch.async_call(exchange_declaration(t, topic), step);
      ch.async_call(queue, declared);
      amqp::QueueBind bind;
      bind.queue = queue.queue;  // empty: the queue just declared (server-named)
      const Route route = route_for(t, topic);
      bind.exchange = route.exchange;
      bind.routing_key = route.routing_key;
      ch.async_call(bind, step);
    } else if (t.declare) {
      ch.async_call(queue, declared);
    }
    amqp::BasicQos qos;
    qos.prefetch_count = cfg_.prefetch == 0 ? 1 : cfg_.prefetch;
    ch.async_call(qos, step);
    amqp::BasicConsume consume;
    consume.queue = queue.queue;
    ch.async_call(consume, [self = shared_from_this(), first_error, finish](std::error_code ec, amqp::Method& m) {
      if (ec) {
        if (!*first_error) (*finish)(ec);
        return;
      }
      if (auto* ok = std::get_if<amqp::BasicConsumeOk>(&m)) self->consumer_tag_ = ok->consumer_tag;
      self->consumed_ = true;
      (*finish)({});
    });
  }

  void on_delivery(amqp::Delivery& d) {
    Received r;
    r.count = delivery_count_of(d);
    r.tag = (channel_generation_ << kGenerationShift) | (d.delivery_tag & kDeliveryTagMask);
    r.timestamp = d.properties.timestamp
                      ? std::chrono::system_clock::time_point(std::chrono::seconds(*d.properties.timestamp))
                      : std::chrono::system_clock::now();
    r.message = message_of(d);
    outstanding_.push_back(Outstanding{d.delivery_tag});
    staged_.push_back(std::move(r));
    // One hand-over and one wake-up per read, not per delivery: this runs after the frames of
    // this read are routed (a posted handler runs after the current one). It also sends the
    // automatic acks the receiver produced meanwhile once a quarter of the prefetch waits (one
    // ack write, and one wake-up of the broker, per read would cost more than the read) and
    // keeps the ack timer going.
    if (turn_posted_) return;
    turn_posted_ = true;
    asio::post(conn_->strand(), [self = shared_from_this()] {
      self->turn_posted_ = false;
      self->hand_over();
      self->flush_settlements(std::max<std::size_t>(1, self->cfg_.prefetch / 4));
      self->arm_ack_timer();
    });
  }

  /// The deliveries of this read go to the receivers under one lock (the receiving thread and
  /// the I/O thread meet once per read, not once per delivery); a waiting `async_receive` gets
  /// the first. Deliveries of an earlier channel generation (unsubscribed meanwhile) are dropped.
  void hand_over() {
    if (staged_.empty()) return;
    std::unique_ptr<AsyncReceiver> op;
    Message direct;
    bool pause = false;
    bool buffered = false;
    {
      const std::lock_guard lock(mutex_);
      const std::uint64_t generation = current_generation();
      for (Received& r : staged_) {
        if ((r.tag >> kGenerationShift) != generation) continue;
        if (async_) {
          op = std::move(async_);
          hand_out(r, false);
          direct = std::move(r.message);
          continue;
        }
        buffered_bytes_ += r.message.payload.size();
        buffer_.push_back(std::move(r));
        buffered = true;
      }
      if (buffered_bytes_ >= cfg_.max_buffered_bytes && !pause_requested_) pause = pause_requested_ = true;
    }
    staged_.clear();
    if (buffered) cv_.notify_one();
    if (pause) this->pause();
    if (op) op->complete({}, std::move(direct));
  }

  /// While deliveries are buffered or acks wait, sends the waiting acks within kAckDelay. Every
  /// turn with deliveries sends them too and pushes the timer back: while deliveries stream the
  /// timer does not fire (no wake-up of its own), and once they stop it sends the last acks.
  void arm_ack_timer() {
    if (!channel_ || !channel_->is_open()) return;
    if (!ack_timer_) ack_timer_ = std::make_unique<asio::steady_timer>(conn_->strand());
    const auto now = clock::now();
    // Moved at most about twice per kAckDelay: moving it is a system call.
    if (ack_timer_armed_ && ack_timer_->expiry() > now + kAckDelay / 2) return;
    ack_timer_armed_ = true;
    ack_timer_->expires_at(now + kAckDelay);  // a pending wait completes as cancelled
    ack_timer_->async_wait([self = shared_from_this(), wait = ++ack_waits_](std::error_code ec) {
      if (ec || wait != self->ack_waits_) return;
      self->ack_timer_armed_ = false;
      bool more = false;
      {
        const std::lock_guard lock(self->mutex_);
        more = !self->settlements_.empty() || !self->buffer_.empty();
      }
      self->flush_settlements();
      if (more) self->arm_ack_timer();
    });
  }

  void set_terminal(std::error_code ec) {
    hand_over();  // what this read delivered comes before the error
    std::unique_ptr<AsyncReceiver> op;
    {
      const std::lock_guard lock(mutex_);
      if (!terminal_) terminal_ = ec;
      if (buffer_.empty()) op = std::move(async_);
    }
    cv_.notify_all();
    if (op) op->complete(ec, Message{});
  }

  /// The buffer reached `max_buffered_bytes`: stop the consumer (deliveries on the way still
  /// come; their tags stay valid, so acks go on).
  void pause() {
    if (!channel_ || !channel_->is_open() || consumer_tag_.empty()) {
      const std::lock_guard lock(mutex_);
      pause_requested_ = false;  // nothing to pause: no resume either
      return;
    }
    amqp::BasicCancel cancel;
    cancel.consumer_tag = consumer_tag_;
    consumer_tag_.clear();
    channel_->async_call(cancel, [](std::error_code, amqp::Method&) {});  // a failure closes the channel
    conn_->end_turn();
  }

  /// The buffer drained below half the bound: consume again from the same queue.
  void resume() {
    {
      const std::lock_guard lock(mutex_);
      resume_posted_ = false;
      if (!pause_requested_ || buffered_bytes_ > cfg_.max_buffered_bytes / 2) return;
      pause_requested_ = false;
    }
    if (!channel_ || !channel_->is_open()) return;
    amqp::BasicConsume consume;
    consume.queue = queue_;
    channel_->async_call(consume, [weak = weak_from_this()](std::error_code ec, amqp::Method& m) {
      auto self = weak.lock();
      if (!self || ec) return;
      if (auto* ok = std::get_if<amqp::BasicConsumeOk>(&m)) self->consumer_tag_ = ok->consumer_tag;
    });
    conn_->end_turn();
  }

  void on_closed(std::error_code ec) {
    channel_.reset();
    outstanding_.clear();
    consumer_tag_.clear();
    // The channel's delivery tags mean nothing now: its handles are stale from this moment, not
    // only once a new channel is open (an ack in between would report success and send nothing).
    hand_over();  // what its last read delivered is buffered under the old generation first
    {
      const std::lock_guard lock(mutex_);
      generation_.store(next_generation(), std::memory_order_release);
      unacked_.clear();
    }
    if (ec && !shut_down_ && cfg_.recovery.enabled) {
      if (conn_->recovering()) return;  // on_recovered consumes again
      if (ec.category() == reply_category() && is_soft_error(static_cast<reply_code>(ec.value())) &&
          conn_->phase() == ConnectionCore::Phase::open && !resubscribing_ && consumed_)
        return recover_channel();
    }
    set_terminal(ec ? ec : std::error_code(errc::channel_closed));
  }

  /// The broker closed the channel (404, 406 ...): a new channel after a backoff, the connection
  /// and the other channels untouched. If consuming again fails, the subscription ends with that
  /// error (no loop).
  void recover_channel() {
    {
      const std::lock_guard lock(mutex_);
      if (!subscribed_ || terminal_) return;
    }
    if (!retry_timer_) retry_timer_ = std::make_unique<asio::steady_timer>(conn_->strand());
    retry_timer_->expires_after(cfg_.recovery.initial_delay);
    retry_timer_->async_wait([weak = weak_from_this()](std::error_code ec) {
      auto self = weak.lock();
      if (ec || !self || self->shut_down_) return;
      self->resubscribe();
    });
  }

  /// Sends the queued settlements: acks that complete a prefix of the outstanding deliveries go
  /// as one `multiple` ack, the rest one by one; nacks and rejects at once. Settlements of an
  /// earlier channel generation are dropped: their tags mean nothing to the broker now. With
  /// `at_least`, nothing happens while fewer settlements wait.
  void flush_settlements(std::size_t at_least = 0) {
    // The two vectors trade storage, so neither reallocates once grown (no allocation per batch).
    std::vector<Settlement>& batch = settling_;
    {
      const std::lock_guard lock(mutex_);
      if (at_least != 0 && settlements_.size() < at_least) return;
      batch.swap(settlements_);
      settle_posted_ = false;
    }
    if (batch.empty() || !channel_ || !channel_->is_open()) {
      batch.clear();
      return;
    }
    amqp::ChannelState& st = channel_->state();
    std::error_code ec;
    std::size_t marked = 0;  // acks marked now; every earlier one was sent by an earlier flush
    std::size_t next = 0;    // where the previous settlement's successor would be: in order, no search
    for (const auto& s : batch) {
      if ((s.tag >> kGenerationShift) != channel_generation_) continue;
      const std::uint64_t tag = s.tag & kDeliveryTagMask;
      Outstanding* o = find(tag, next);
      if (o == nullptr) continue;
      if (s.how == Settle::ack) {
        if (!o->acked) ++marked;
        o->acked = true;
        continue;
      }
      if (s.how == Settle::requeue)
        amqp::nack(st, tag, false, true, ec);
      else
        amqp::reject(st, tag, false, ec);
      o->acked = o->sent = true;
    }
    // The `multiple` ack names the prefix's last unsent ack, not its last entry: a tag already
    // settled (nacked, rejected, acked alone past a gap) is unknown to the broker, which would
    // close the channel (406) and redeliver what was acked.
    std::uint64_t prefix = 0;
    std::size_t in_prefix = 0;  // acks marked now that the `multiple` ack covers
    while (!outstanding_.empty() && outstanding_.front().acked) {
      if (!outstanding_.front().sent) {
        prefix = outstanding_.front().tag;
        ++in_prefix;
      }
      outstanding_.pop_front();
    }
    if (in_prefix != 0) amqp::ack(st, prefix, true, ec);
    // Acks past a gap go one by one; a streaming receiver has none, and the walk over the
    // outstanding deliveries (up to `prefetch`) is skipped.
    if (in_prefix < marked) {
      for (auto& o : outstanding_) {
        if (o.acked && !o.sent) {
          amqp::ack(st, o.tag, false, ec);
          o.sent = true;
        }
      }
    }
    batch.clear();
    channel_->touch();
    conn_->end_turn();
  }

  /// The outstanding delivery `tag`, looked for first at index `hint` (settlements mostly come
  /// in delivery order), then by binary search (tags rise in delivery order). `hint` becomes the
  /// index after it.
  Outstanding* find(std::uint64_t tag, std::size_t& hint) {
    if (hint < outstanding_.size() && outstanding_[hint].tag == tag) return &outstanding_[hint++];
    auto it = std::lower_bound(outstanding_.begin(), outstanding_.end(), tag,
                               [](const Outstanding& o, std::uint64_t t) { return o.tag < t; });
    if (it == outstanding_.end() || it->tag != tag) return nullptr;
    hint = static_cast<std::size_t>(it - outstanding_.begin()) + 1;
    return &*it;
  }

  std::shared_ptr<ConnectionCore> conn_;
  const RabbitMQConfig& cfg_;

  // Strand.
  std::shared_ptr<Channel> channel_;
  std::uint64_t channel_generation_ = 0;
  std::string consumer_tag_;  // empty while paused
  std::string queue_;         // consumed; re-consumed after a pause
  std::deque<Outstanding> outstanding_;
  std::vector<Received> staged_;  // this read's deliveries, handed over at the end of its turn
  bool turn_posted_ = false;
  std::unique_ptr<asio::steady_timer> ack_timer_;
  bool ack_timer_armed_ = false;
  std::uint64_t ack_waits_ = 0;  // the ack timer's current wait (earlier ones were cancelled)
  std::string topic_sub_;        // what to consume again after a recovery
  std::string group_sub_;
  bool listening_ = false;
  bool shut_down_ = false;
  bool resubscribing_ = false;
  bool consumed_ = false;  // the subscription consumed once: a later channel error is recovered
  std::unique_ptr<asio::steady_timer> retry_timer_;
  std::function<void(std::error_code)> pending_subscribe_;  // a subscribe waiting for recovery
  std::unique_ptr<asio::steady_timer> subscribe_timer_;
  std::atomic<std::uint64_t> recoveries_{0};

  // Any thread, under mutex_.
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Received> buffer_;
  std::unordered_set<std::uint64_t> unacked_;
  std::vector<Settlement> settlements_;
  std::vector<Settlement> settling_;  // strand only: the batch flush_settlements sends
  bool settle_posted_ = false;
  bool subscribed_ = false;
  std::string topic_;
  std::error_code terminal_{kincir::errc::not_subscribed};
  std::unique_ptr<AsyncReceiver> async_;
  std::uint64_t async_id_ = 0;
  std::size_t buffered_bytes_ = 0;  // body bytes in buffer_
  bool pause_requested_ = false;    // the consumer is (being) cancelled for the byte bound
  bool resume_posted_ = false;
  std::string queue_name_;  // the queue consumed (server-named ones change with each recovery)
  std::atomic<std::uint64_t> generation_{0};
};

}  // namespace detail

/// Consumes one topic (see `TopologyConfig` for the queue it gets): without a group, its own
/// exclusive auto-delete queue bound to the topic's exchange (it sees every message); with a
/// group, the group's durable queue, shared with the other members (each message goes to one).
///
/// Deliveries are consumed with manual acknowledgement and at most `prefetch` unacknowledged
/// at a time; when `max_buffered_bytes` of bodies wait in the client's buffer the consumer is
/// paused (basic.cancel) until the receiver has drained half of it (see `paused()`). `receive`, `try_receive`,
/// `receive_for` and `async_receive` acknowledge what they hand out (acks are coalesced into `multiple` acks);
/// `receive_with_ack` hands out a `BasicAckHandle` to settle with `ack`, `nack(requeue)` or `reject`. The delivery
/// count comes from `x-delivery-count` (quorum queues) or `redelivered`. A consumer the broker cancels (its queue was
/// deleted) or a channel the broker closes ends the subscription: receiving returns what is buffered, then the error
/// (`errc::consumer_cancelled`, the reply code). A handle from before a re-subscribe or a
/// recovery is `errc::stale_delivery` and is never sent to the broker (which redelivers it).
///
/// Recovery (`RecoveryConfig`): when the connection is lost, receiving waits while it is
/// recovered, then the subscriber declares, binds and consumes again (a server-named queue gets a
/// new name, `queue()`); a channel closed by the broker with a soft error is reopened the same
/// way. If recovery fails, receiving returns the buffered messages, then the error.
///
/// Thread safety: receiving from one thread at a time (one `async_receive` at a time); `ack`,
/// `nack` and `reject` from any thread.
class RabbitMQSubscriber {
 public:
  using handle_type = BasicAckHandle;

  explicit RabbitMQSubscriber(std::shared_ptr<Connection> connection)
      : connection_(std::move(connection)), core_(std::make_shared<detail::SubscriberCore>(connection_->core())) {}
  explicit RabbitMQSubscriber(const RabbitMQConfig& config) : RabbitMQSubscriber(Connection::open(config)) {}
  explicit RabbitMQSubscriber(std::string_view uri) : RabbitMQSubscriber(Connection::open(uri)) {}

  /// A moved-from subscriber may only be destroyed or assigned to.
  RabbitMQSubscriber(RabbitMQSubscriber&&) noexcept = default;
  /// Closes this subscriber's channel first, as destruction would.
  RabbitMQSubscriber& operator=(RabbitMQSubscriber&& other) noexcept {
    if (this != &other) {
      close_channel();
      connection_ = std::move(other.connection_);
      core_ = std::move(other.core_);
    }
    return *this;
  }
  RabbitMQSubscriber(const RabbitMQSubscriber&) = delete;
  RabbitMQSubscriber& operator=(const RabbitMQSubscriber&) = delete;

  /// Closes the channel: unacknowledged deliveries go back to their queue.
  ~RabbitMQSubscriber() { close_channel(); }

  /// Declares what the topology needs, binds and starts consuming (waits for consume-ok).
  /// Leaves a previous subscription first. Errors: `kincir::errc::invalid_topic`, the reply code
  /// of a failed declare (e.g. 406 for a queue redeclared with other arguments), `call_timeout`.
  void subscribe(std::string_view topic, std::error_code& ec) { core_->subscribe(topic, {}, ec); }
  void subscribe(std::string_view topic) {
    std::error_code ec;
    subscribe(topic, ec);
    throw_if(ec, "RabbitMQSubscriber::subscribe");
  }
  /// Joins consumer group `group` (an empty group means none).
  void subscribe(std::string_view topic, std::string_view group, std::error_code& ec) {
    core_->subscribe(topic, group, ec);
  }
  void subscribe(std::string_view topic, std::string_view group) {
    std::error_code ec;
    subscribe(topic, group, ec);
    throw_if(ec, "RabbitMQSubscriber::subscribe");
  }
  /// Cancels the consumer and closes its channel; unacked deliveries are requeued by the broker.
  void unsubscribe() { core_->unsubscribe(); }

  Message receive(std::error_code& ec) {
    detail::Received r;
    core_->next(std::chrono::steady_clock::time_point::max(), false, r, ec);
    return std::move(r.message);
  }
  Message receive() {
    std::error_code ec;
    Message m = receive(ec);
    throw_if(ec, "RabbitMQSubscriber::receive");
    return m;
  }

  std::optional<Message> try_receive(std::error_code& ec) {
    detail::Received r;
    if (core_->next(std::chrono::steady_clock::now(), false, r, ec)) return std::move(r.message);
    if (ec == kincir::errc::timeout) ec.clear();
    return std::nullopt;
  }
  std::optional<Message> try_receive() {
    std::error_code ec;
    auto m = try_receive(ec);
    throw_if(ec, "RabbitMQSubscriber::try_receive");
    return m;
  }

  template <class Rep, class Period>
  std::optional<Message> receive_for(std::chrono::duration<Rep, Period> timeout, std::error_code& ec) {
    detail::Received r;
    if (core_->next(deadline(timeout), false, r, ec)) return std::move(r.message);
    if (ec == kincir::errc::timeout) ec.clear();
    return std::nullopt;
  }
  template <class Rep, class Period>
  std::optional<Message> receive_for(std::chrono::duration<Rep, Period> timeout) {
    std::error_code ec;
    auto m = receive_for(timeout, ec);
    throw_if(ec, "RabbitMQSubscriber::receive_for");
    return m;
  }

  std::pair<Message, handle_type> receive_with_ack(std::error_code& ec) {
    detail::Received r;
    if (!core_->next(std::chrono::steady_clock::time_point::max(), true, r, ec)) return {};
    return {std::move(r.message), handle(r)};
  }
  std::pair<Message, handle_type> receive_with_ack() {
    std::error_code ec;
    auto r = receive_with_ack(ec);
    throw_if(ec, "RabbitMQSubscriber::receive_with_ack");
    return r;
  }

  template <class Rep, class Period>
  std::optional<std::pair<Message, handle_type>> receive_with_ack_for(std::chrono::duration<Rep, Period> timeout,
                                                                      std::error_code& ec) {
    detail::Received r;
    if (!core_->next(deadline(timeout), true, r, ec)) {
      if (ec == kincir::errc::timeout) ec.clear();
      return std::nullopt;
    }
    return std::pair<Message, handle_type>{std::move(r.message), handle(r)};
  }
  template <class Rep, class Period>
  std::optional<std::pair<Message, handle_type>> receive_with_ack_for(std::chrono::duration<Rep, Period> timeout) {
    std::error_code ec;
    auto r = receive_with_ack_for(timeout, ec);
    throw_if(ec, "RabbitMQSubscriber::receive_with_ack_for");
    return r;
  }

  /// basic.ack (coalesced with others into one `multiple` ack when they complete a prefix).
  void ack(const handle_type& h, std::error_code& ec) { core_->settle(h.tag(), detail::Settle::ack, ec); }
  void ack(const handle_type& h) {
    std::error_code ec;
    ack(h, ec);
    throw_if(ec, "RabbitMQSubscriber::ack");
  }
  /// basic.nack: `requeue` puts it back in its queue (delivered again, `redelivered` set);
  /// otherwise it is dead-lettered or dropped, as the queue's arguments say.
  void nack(const handle_type& h, bool requeue, std::error_code& ec) {
    core_->settle(h.tag(), requeue ? detail::Settle::requeue : detail::Settle::reject, ec);
  }
  void nack(const handle_type& h, bool requeue) {
    std::error_code ec;
    nack(h, requeue, ec);
    throw_if(ec, "RabbitMQSubscriber::nack");
  }
  /// basic.reject (never requeued unless asked).
  void reject(const handle_type& h, bool requeue, std::error_code& ec) {
    core_->settle(h.tag(), requeue ? detail::Settle::requeue : detail::Settle::reject, ec);
  }
  void reject(const handle_type& h, bool requeue = false) {
    std::error_code ec;
    reject(h, requeue, ec);
    throw_if(ec, "RabbitMQSubscriber::reject");
  }

  void ack_batch(std::span<const handle_type> handles, std::error_code& ec) {
    settle_all(handles, detail::Settle::ack, ec);
  }
  void ack_batch(std::span<const handle_type> handles) {
    std::error_code ec;
    ack_batch(handles, ec);
    throw_if(ec, "RabbitMQSubscriber::ack_batch");
  }
  void nack_batch(std::span<const handle_type> handles, bool requeue, std::error_code& ec) {
    settle_all(handles, requeue ? detail::Settle::requeue : detail::Settle::reject, ec);
  }
  void nack_batch(std::span<const handle_type> handles, bool requeue) {
    std::error_code ec;
    nack_batch(handles, requeue, ec);
    throw_if(ec, "RabbitMQSubscriber::nack_batch");
  }

  /// Receives asynchronously (acknowledged when handed out). Completion signature
  /// `void(std::error_code, kincir::Message)`. The handler runs on its associated executor (the
  /// connection's handler executor if it has none), never inside this call. One at a time;
  /// `unsubscribe` completes a pending one with `asio::error::operation_aborted`, and so does a
  /// signal on the handler's associated cancellation slot (any cancellation type); a delivery
  /// that arrives afterwards stays buffered for the next receive.
  template <class CompletionToken>
  auto async_receive(CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(std::error_code, Message)>(
        [this](auto handler) {
          auto executor = asio::get_associated_executor(handler, connection_->handler_executor());
          auto slot = asio::get_associated_cancellation_slot(handler);
          using Op = detail::AsyncReceiverImpl<decltype(handler), decltype(executor)>;
          const std::uint64_t id = core_->async_receive(std::make_unique<Op>(std::move(handler), executor));
          if (id != 0 && slot.is_connected()) {
            slot.assign([weak = std::weak_ptr<detail::SubscriberCore>(core_), id](asio::cancellation_type) {
              if (auto core = weak.lock()) core->cancel_async(id);
            });
          }
        },
        token);
  }

  /// Body bytes received and not yet handed out. Any thread.
  [[nodiscard]] std::size_t buffered_bytes() const { return core_->buffered_bytes(); }
  /// The consumer is paused because `buffered_bytes()` reached `max_buffered_bytes`; it resumes
  /// once the buffer is below half of that. Any thread.
  [[nodiscard]] bool paused() const { return core_->paused(); }

  /// The queue consumed. A server-named queue (a subscriber without a group) gets a new name
  /// with each recovery. Any thread.
  [[nodiscard]] std::string queue() const { return core_->queue(); }
  /// How often the subscription consumed again after a connection or channel recovery.
  [[nodiscard]] std::uint64_t recoveries() const noexcept { return core_->recoveries(); }

  [[nodiscard]] const std::shared_ptr<Connection>& connection() const noexcept { return connection_; }
  /// The strand-side state, for tests and diagnostics.
  [[nodiscard]] const std::shared_ptr<detail::SubscriberCore>& core() const noexcept { return core_; }

 private:
  void close_channel() noexcept {
    if (core_) asio::post(connection_->core()->strand(), [core = std::move(core_)] { core->shutdown(); });
  }
  template <class Rep, class Period>
  static std::chrono::steady_clock::time_point deadline(std::chrono::duration<Rep, Period> timeout) {
    const auto now = std::chrono::steady_clock::now();
    if (timeout >= std::chrono::duration_cast<std::chrono::duration<Rep, Period>>(
                       std::chrono::steady_clock::time_point::max() - now))
      return std::chrono::steady_clock::time_point::max();
    return now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
  }

  handle_type handle(const detail::Received& r) const {
    return handle_type(core_->topic(), r.message.uuid, r.count, r.timestamp, r.tag);
  }

  void settle_all(std::span<const handle_type> handles, detail::Settle how, std::error_code& ec) {
    ec.clear();
    for (const auto& h : handles) {
      std::error_code one;
      core_->settle(h.tag(), how, one);
      if (one && !ec) ec = one;
    }
  }

  std::shared_ptr<Connection> connection_;
  std::shared_ptr<detail::SubscriberCore> core_;
};

static_assert(Subscriber<RabbitMQSubscriber>);
static_assert(AckSubscriber<RabbitMQSubscriber>);
static_assert(AsyncSubscriber<RabbitMQSubscriber>);

}  // namespace kincir::rabbitmq
