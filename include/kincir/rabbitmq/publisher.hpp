/// @file
/// `kincir::rabbitmq::RabbitMQPublisher`: publishes kincir messages to RabbitMQ with publisher
/// confirms, a bounded window of unconfirmed messages and exactly one outcome per message.
#pragma once

#include <kincir/config.hpp>

#include <kincir/core/concepts.hpp>        // Publisher, AsyncPublisher
#include <kincir/core/error.hpp>           // kincir::errc::invalid_topic, throw_if
#include <kincir/core/message.hpp>         // Message
#include <kincir/rabbitmq/connection.hpp>  // Connection, Channel
#include <kincir/rabbitmq/mapping.hpp>     // routes, properties, declarations

#include <asio/associated_cancellation_slot.hpp>  // cancellation of async_publish
#include <asio/associated_executor.hpp>           // the handler's executor
#include <asio/async_result.hpp>                  // asio::async_initiate
#include <asio/executor_work_guard.hpp>           // keeps the handler's executor alive

#include <atomic>  // the republished counter

#include <chrono>         // confirm deadline
#include <cstddef>        // std::size_t
#include <cstdint>        // delivery tags
#include <deque>          // backlog and unconfirmed entries
#include <memory>         // std::shared_ptr
#include <span>           // message ranges
#include <string>         // topics
#include <string_view>    // topics
#include <system_error>   // std::error_code
#include <unordered_set>  // declared topics
#include <utility>        // std::move
#include <vector>         // batches, outcomes

namespace kincir::rabbitmq {

namespace detail {

/// One publish call: its messages, their outcomes and its completion (strand).
struct PublishBatch {
  std::string topic;
  std::span<Message> messages;
  std::vector<Message> owned;  // asynchronous publishes own their messages
  std::vector<std::error_code> outcomes;
  std::size_t next = 0;       // the next message to send
  std::size_t unsettled = 0;  // messages without an outcome
  bool finished = false;
  std::function<void(PublishBatch&)> done;
  std::unique_ptr<asio::steady_timer> timer;

  [[nodiscard]] std::error_code first_error() const {
    for (const auto& ec : outcomes)
      if (ec) return ec;
    return {};
  }
};

/// The strand side of a publisher.
///
/// Recovery: when the connection is lost, the messages it had not confirmed go to `resend_`
/// (their outcome becomes "lost" unless they are confirmed later), and new publishes wait in the
/// backlog; both count against the outage buffer. Once the connection is back, `resend_` goes
/// out first, each message marked as a possible duplicate, then the backlog.
class PublisherCore final : public std::enable_shared_from_this<PublisherCore>, public ConnectionListener {
 public:
  explicit PublisherCore(std::shared_ptr<ConnectionCore> conn) : conn_(std::move(conn)), cfg_(conn_->config()) {}

  void submit(std::shared_ptr<PublishBatch> b) {
    if (!listening_) {
      listening_ = true;
      conn_->add_listener(weak_from_this());
    }
    // Until a message has its outcome it counts as timed out (what `expire` reports).
    b->outcomes.assign(b->messages.size(), std::error_code(errc::confirm_timeout));
    b->unsettled = b->messages.size();
    if (b->messages.empty()) return finish(*b);
    std::size_t bytes = 0;
    for (const auto& m : b->messages) bytes += m.payload.size();
    const RecoveryConfig& rc = cfg_.recovery;
    if (conn_->recovering() && rc.outage_policy == OutagePolicy::fail_fast &&
        (buffered_ + b->messages.size() > rc.max_buffered_messages ||
         buffered_bytes_ + bytes > rc.max_buffered_bytes)) {
      b->outcomes.assign(b->messages.size(), std::error_code(errc::publish_buffer_full));
      b->next = b->messages.size();
      b->unsettled = 0;
      return finish(*b);
    }
    buffered_ += b->messages.size();
    buffered_bytes_ += bytes;
    if (cfg_.confirm_timeout.count() > 0) {
      b->timer = std::make_unique<asio::steady_timer>(conn_->strand(), cfg_.confirm_timeout);
      b->timer->async_wait(asio::bind_executor(
          conn_->strand(), [self = shared_from_this(), weak = std::weak_ptr<PublishBatch>(b)](std::error_code ec) {
            auto batch = weak.lock();
            if (!ec && batch) self->expire(*batch);
          }));
    }
    if (closing_) self_ = shared_from_this();  // a publish that crossed the destructor
    backlog_.push_back(std::move(b));
    pump();
    conn_->end_turn();
  }

  /// The publisher is gone: the core keeps itself alive until every publish it holds has its
  /// outcome (each has its deadline), then closes its channel and lets go.
  void shutdown() {
    closing_ = true;
    self_ = shared_from_this();
    maybe_close();
    conn_->end_turn();
  }

  /// A cancellation slot fired: `b`, if none of its messages was written yet, completes with
  /// `asio::error::operation_aborted` and none of them is sent. Later, a cancellation has no
  /// effect (the messages are on their way; the publish completes with their outcomes).
  void cancel(const std::shared_ptr<PublishBatch>& b) {
    if (b->finished || b->next != 0) return;
    std::erase(backlog_, b);
    fail_unsent(*b, asio::error::operation_aborted);
    pump();
    conn_->end_turn();
  }

  [[nodiscard]] bool blocked() const noexcept { return conn_->blocked(); }
  /// Messages republished after a recovery (marked as possible duplicates). Any thread.
  [[nodiscard]] std::uint64_t republished() const noexcept { return republished_.load(std::memory_order_relaxed); }

  void on_recovered() override {
    pump();
    conn_->end_turn();
  }
  void on_failed(std::error_code) override {
    pump();
    conn_->end_turn();
  }

 private:
  struct Entry {
    std::shared_ptr<PublishBatch> batch;  // null once settled
    std::size_t index = 0;
    std::size_t bytes = 0;
    bool returned = false;
  };

  void pump() {
    if (closing_) drop_ended();
    if (backlog_.empty() && resend_.empty()) return maybe_close();
    if (conn_->phase() != ConnectionCore::Phase::open) {
      if (conn_->recovering()) return;  // kept for the new connection; each publish has its deadline
      const std::error_code ec = conn_->error() ? conn_->error() : std::error_code(errc::connection_closed);
      while (!resend_.empty()) {
        Entry e = take_resend();
        if (e.batch) settle_one(*e.batch, e.index, errc::message_lost);
      }
      while (!backlog_.empty()) fail_unsent(*take_front(), ec);
      return;
    }
    if (!channel_) {
      if (!opening_) open_channel();
      return;
    }
    if (!channel_->is_open()) return;
    if (conn_->blocked()) return;  // resumed by connection.unblocked
    while (!resend_.empty()) {
      Entry& e = resend_.front();
      if (!e.batch || e.batch->finished) {
        take_resend();
        continue;
      }
      if (window_full(e.bytes)) return;
      declare(e.batch->topic);
      Entry sent = take_resend();
      send(sent.batch, sent.index, true);
    }
    while (!backlog_.empty()) {
      PublishBatch& b = *backlog_.front();
      if (b.finished) {
        backlog_.pop_front();
        continue;
      }
      declare(b.topic);
      while (b.next < b.messages.size()) {
        const std::size_t bytes = b.messages[b.next].payload.size();
        if (window_full(bytes)) return;  // confirms resume us
        buffered_ -= 1;
        buffered_bytes_ -= bytes;
        send(backlog_.front(), b.next++, false);
      }
      backlog_.pop_front();
    }
  }

  [[nodiscard]] bool window_full(std::size_t bytes) const noexcept {
    return cfg_.confirms && inflight_ != 0 &&
           (inflight_ + 1 > cfg_.max_unconfirmed || inflight_bytes_ + bytes > cfg_.max_unconfirmed_bytes);
  }

  /// Publishes message `index` of `batch` on the open channel.
  void send(const std::shared_ptr<PublishBatch>& batch, std::size_t index, bool possible_duplicate) {
    amqp::ChannelState& st = channel_->state();
    Message& m = batch->messages[index];
    const Route route = route_for(cfg_.topology, batch->topic);
    amqp::BasicPublish method;
    method.exchange = route.exchange;
    method.routing_key = route.routing_key;
    method.mandatory = cfg_.mandatory;
    const std::uint64_t seq = cfg_.confirms ? st.confirms.next_tag() : 0;
    const amqp::BasicProperties props = properties_for(m, cfg_, cfg_.mandatory ? seq : 0, possible_duplicate);
    std::error_code ec;
    const std::uint64_t tag = amqp::publish(st, method, props, m.payload.span(), ec);
    // A content header (the metadata become headers) larger than a frame is refused by the codec
    // before anything is written: the broker would close the whole connection over it, and the
    // republish after the recovery would close it again. That message alone fails.
    if (ec == errc::frame_too_large) ec = kincir::errc::message_too_large;
    if (ec) return settle_one(*batch, index, ec);
    if (possible_duplicate) republished_.fetch_add(1, std::memory_order_relaxed);
    channel_->keep(m.payload);
    channel_->touch();
    if (!cfg_.confirms) return settle_one(*batch, index, {});
    if (unconfirmed_.empty()) first_tag_ = tag;
    unconfirmed_.push_back(Entry{batch, index, m.payload.size(), false});
    ++inflight_;
    inflight_bytes_ += m.payload.size();
  }

  Entry take_resend() {
    Entry e = std::move(resend_.front());
    resend_.pop_front();
    buffered_ -= 1;
    buffered_bytes_ -= e.bytes;
    return e;
  }

  std::shared_ptr<PublishBatch> take_front() {
    auto b = std::move(backlog_.front());
    backlog_.pop_front();
    return b;
  }

  void fail_unsent(PublishBatch& b, std::error_code ec) {
    while (b.next < b.messages.size()) {
      buffered_ -= 1;
      buffered_bytes_ -= b.messages[b.next].payload.size();
      settle_one(b, b.next++, ec);
    }
  }

  void settle_one(PublishBatch& b, std::size_t index, std::error_code ec) {
    if (b.finished) return;
    b.outcomes[index] = ec;
    if (--b.unsettled == 0) finish(b);
  }

  void finish(PublishBatch& b) {
    if (b.finished) return;
    b.finished = true;
    if (b.timer) b.timer->cancel();
    if (auto done = std::move(b.done)) done(b);
  }

  /// The confirm deadline passed: unsent messages fail (blocked, recovering or timed out), sent
  /// ones too (unconfirmed, or lost with the connection and not yet republished).
  void expire(PublishBatch& b) {
    if (b.finished) return;
    std::error_code unsent = errc::confirm_timeout;
    if (conn_->blocked()) unsent = errc::connection_blocked;
    if (conn_->recovering() || conn_->phase() != ConnectionCore::Phase::open) unsent = errc::connection_recovering;
    while (b.next < b.messages.size()) {
      buffered_ -= 1;
      buffered_bytes_ -= b.messages[b.next].payload.size();
      b.outcomes[b.next++] = unsent;
    }
    b.unsettled = 0;
    finish(b);
    drop_ended();
    maybe_close();
    conn_->end_turn();
  }

  /// Forgets publishes that ended: messages kept for a republish no longer count against the
  /// outage buffer, and ended batches leave the backlog (their unsent messages were uncounted
  /// when they ended).
  void drop_ended() {
    std::erase_if(resend_, [this](const Entry& e) {
      if (e.batch && !e.batch->finished) return false;
      buffered_ -= 1;
      buffered_bytes_ -= e.bytes;
      return true;
    });
    std::erase_if(backlog_, [](const std::shared_ptr<PublishBatch>& b) { return b->finished; });
  }

  void open_channel() {
    ChannelEvents events;
    std::weak_ptr<PublisherCore> weak = shared_from_this();
    // A channel this publisher closed and left behind (see `maybe_close`) may report after a new
    // one opened: only the newest channel's events count.
    const std::uint64_t gen = ++channel_gen_;
    events.on_confirm = [weak, gen](const std::vector<amqp::TagRange>& ranges, std::error_code ec) {
      auto self = weak.lock();
      if (self && self->channel_gen_ == gen) self->on_confirm(ranges, ec);
    };
    events.on_return = [weak, gen](amqp::ReturnedMessage& r) {
      auto self = weak.lock();
      if (self && self->channel_gen_ == gen) self->on_return(r);
    };
    events.on_closed = [weak, gen](std::error_code ec) {
      auto self = weak.lock();
      if (self && self->channel_gen_ == gen) self->on_closed(ec);
    };
    events.on_blocked = [weak, gen](bool blocked) {
      auto self = weak.lock();
      if (self && self->channel_gen_ == gen && !blocked) {
        self->pump();
        self->conn_->end_turn();
      }
    };
    opening_ = true;
    conn_->async_open_channel(
        std::move(events), [self = shared_from_this()](std::error_code ec, std::shared_ptr<Channel> ch) {
          self->opening_ = false;
          if (ec) {
            if (self->conn_->recovering() || self->conn_->phase() != ConnectionCore::Phase::open) {
              self->pump();  // waits for the recovery, or fails what waits
              return;
            }
            while (!self->backlog_.empty()) self->fail_unsent(*self->take_front(), ec);
            self->maybe_close();
            return;
          }
          self->channel_ = std::move(ch);
          self->declared_.clear();
          if (self->cfg_.confirms) {
            self->channel_->async_call(amqp::ConfirmSelect{}, [](std::error_code, amqp::Method&) {});
          }
          self->pump();
          self->conn_->end_turn();
        });
  }

  void declare(const std::string& topic) {
    if (!cfg_.topology.declare || declared_.count(topic) != 0) return;
    declared_.insert(topic);
    const auto done = [](std::error_code, amqp::Method&) {};  // a failure closes the channel
    if (cfg_.topology.layout == Layout::queue_per_topic) {
      channel_->async_call(queue_declaration(cfg_.topology, topic, {}), done);
    } else {
      channel_->async_call(exchange_declaration(cfg_.topology, topic), done);
    }
  }

  void on_confirm(const std::vector<amqp::TagRange>& ranges, std::error_code ec) {
    if (ec == errc::message_lost && conn_->recovering()) return keep_for_resend(ranges);
    std::size_t confirmed = 0;
    std::size_t confirmed_bytes = 0;
    for (const auto& r : ranges) {
      for (std::uint64_t tag = r.first; tag <= r.last; ++tag) {
        if (tag < first_tag_ || tag - first_tag_ >= unconfirmed_.size()) continue;
        Entry& e = unconfirmed_[static_cast<std::size_t>(tag - first_tag_)];
        if (!e.batch) continue;
        --inflight_;
        inflight_bytes_ -= e.bytes;
        ++confirmed;
        confirmed_bytes += e.bytes;
        const std::error_code outcome = e.returned && !ec ? std::error_code(errc::message_returned) : ec;
        auto batch = std::move(e.batch);
        settle_one(*batch, e.index, outcome);
      }
    }
    while (!unconfirmed_.empty() && !unconfirmed_.front().batch) {
      unconfirmed_.pop_front();
      ++first_tag_;
    }
    batch_confirms(confirmed, confirmed_bytes);
    pump();
    conn_->end_turn();
  }

  /// Read batching: a confirm of many messages counts as that many frames, so a stream of
  /// confirms is read once per interval. Not once an interval's confirms pass an eighth of the
  /// window (count or bytes): held in the socket for an interval they could leave the window
  /// idle, the publisher waiting on them (a window of 128 at 50 000 messages a second reads at
  /// once, a window of 1024 is batched).
  void batch_confirms(std::size_t confirmed, std::size_t bytes) {
    const auto now = clock::now();
    if (now - confirm_interval_start_ >= cfg_.read_batch_interval) {
      confirm_interval_start_ = now;
      interval_confirmed_ = interval_confirmed_bytes_ = 0;
    }
    interval_confirmed_ += confirmed;
    interval_confirmed_bytes_ += bytes;
    if (interval_confirmed_ * 8 > cfg_.max_unconfirmed || interval_confirmed_bytes_ * 8 > cfg_.max_unconfirmed_bytes)
      conn_->read_promptly();
    else if (confirmed > 1)
      conn_->add_read_weight(confirmed - 1);
  }

  /// The connection was lost before these were confirmed: they go out again after recovery,
  /// before anything else; until then their outcome is "lost".
  void keep_for_resend(const std::vector<amqp::TagRange>& ranges) {
    std::deque<Entry> lost;
    for (const auto& r : ranges) {
      for (std::uint64_t tag = r.first; tag <= r.last; ++tag) {
        if (tag < first_tag_ || tag - first_tag_ >= unconfirmed_.size()) continue;
        Entry& e = unconfirmed_[static_cast<std::size_t>(tag - first_tag_)];
        if (!e.batch) continue;
        --inflight_;
        inflight_bytes_ -= e.bytes;
        if (e.batch->finished) {
          e.batch.reset();
          continue;
        }
        e.batch->outcomes[e.index] = errc::message_lost;
        e.returned = false;
        buffered_ += 1;
        buffered_bytes_ += e.bytes;
        lost.push_back(Entry{std::exchange(e.batch, nullptr), e.index, e.bytes, false});
      }
    }
    // They were sent before anything still waiting to be resent.
    for (auto it = lost.rbegin(); it != lost.rend(); ++it) resend_.push_front(std::move(*it));
  }

  void on_return(amqp::ReturnedMessage& r) {
    const std::uint64_t seq = sequence_of(r.properties);
    if (seq < first_tag_ || seq - first_tag_ >= unconfirmed_.size()) return;
    unconfirmed_[static_cast<std::size_t>(seq - first_tag_)].returned = true;
  }

  void on_closed(std::error_code) {
    channel_.reset();
    unconfirmed_.clear();
    inflight_ = 0;
    inflight_bytes_ = 0;
    pump();  // reopens for what is left (also once the publisher is gone)
    conn_->end_turn();
  }

  /// Once the publisher is gone and every publish has its outcome: closes the channel and lets
  /// go of the core. Messages sent but unconfirmed whose publish already ended (its deadline
  /// passed) do not hold the channel open: their outcome is given. Every caller holds a
  /// reference to the core, so dropping `self_` here never destroys it under the caller.
  void maybe_close() {
    if (!closing_) return;
    drop_ended();
    if (!backlog_.empty() || !resend_.empty() || opening_) return;
    for (const auto& e : unconfirmed_)
      if (e.batch && !e.batch->finished) return;
    if (channel_) {
      auto ch = std::move(channel_);
      unconfirmed_.clear();  // all ended; the closed channel's late confirms are ignored
      inflight_ = 0;
      inflight_bytes_ = 0;
      ch->async_close([] {});
    }
    self_.reset();
  }

  std::shared_ptr<ConnectionCore> conn_;
  const RabbitMQConfig& cfg_;
  std::shared_ptr<Channel> channel_;
  std::uint64_t channel_gen_ = 0;  // counts the channels opened; events of older ones are ignored
  bool opening_ = false;
  bool closing_ = false;
  std::shared_ptr<PublisherCore> self_;  // the publisher is gone and publishes remain
  std::deque<std::shared_ptr<PublishBatch>> backlog_;
  std::deque<Entry> resend_;  // lost with a connection, to republish first
  std::deque<Entry> unconfirmed_;
  std::size_t buffered_ = 0;  // messages not sent: the backlog's unsent ones and resend_
  std::size_t buffered_bytes_ = 0;
  bool listening_ = false;
  std::atomic<std::uint64_t> republished_{0};
  std::uint64_t first_tag_ = 1;
  std::size_t inflight_ = 0;
  std::size_t inflight_bytes_ = 0;
  clock::time_point confirm_interval_start_{};  // batch_confirms: the current interval
  std::size_t interval_confirmed_ = 0;          // messages confirmed in it
  std::size_t interval_confirmed_bytes_ = 0;    // and their bytes
  std::unordered_set<std::string> declared_;
};

inline std::error_code check_topic(std::string_view topic) {
  if (topic.empty() || topic.size() > 255 || topic.find('\0') != std::string_view::npos)
    return kincir::errc::invalid_topic;
  return {};
}

}  // namespace detail

/// Publishes to RabbitMQ: a topic is an exchange (declared on first use) or, with
/// `Layout::queue_per_topic`, a queue on the default exchange.
///
/// With confirms (the default) every message gets exactly one outcome: acked (no error),
/// nacked (`errc::message_nacked`), returned (`errc::message_returned`, with `mandatory`:
/// matched to its publish through the `x-kincir-seq` header), or lost (`errc::message_lost`
/// when the connection died, or the reply code that closed the channel, e.g.
/// `reply_code::not_found`), or `errc::confirm_timeout` / `errc::connection_blocked` after
/// `confirm_timeout`; a message whose metadata would not fit in one frame (`frame_max`) is not
/// sent (`kincir::errc::message_too_large`), nor is a cancelled asynchronous one
/// (`asio::error::operation_aborted`, see `async_publish`). A synchronous publish pipelines the
/// whole batch and returns once every message has its outcome. At most `max_unconfirmed`
/// messages (and `max_unconfirmed_bytes`) are unconfirmed; past that, publishes wait
/// (asynchronous ones complete later).
///
/// On failure the batch vector holds exactly the messages that were not acked, in order (with
/// RabbitMQ these need not be a prefix: one message of a batch can be nacked and the next acked).
///
/// Thread-safe: any thread may publish, concurrently; everything runs on the connection's strand.
/// Like any object, it must not be destroyed or assigned to while another thread is inside one
/// of its calls (a synchronous publish included): let those return first.
///
/// Destruction does not wait and does not cancel: publishes already made keep going and each
/// still gets its one outcome (an asynchronous one completes its handler), within
/// `confirm_timeout`; then the publisher's channel is closed. Messages sent whose confirm did not
/// come by then have `errc::confirm_timeout` (unknown) and no longer keep the channel open.
class RabbitMQPublisher {
 public:
  /// A publisher on `connection` (which it keeps alive), with the connection's config.
  explicit RabbitMQPublisher(std::shared_ptr<Connection> connection)
      : connection_(std::move(connection)), core_(std::make_shared<detail::PublisherCore>(connection_->core())) {}
  /// A publisher with a connection of its own.
  explicit RabbitMQPublisher(const RabbitMQConfig& config) : RabbitMQPublisher(Connection::open(config)) {}
  explicit RabbitMQPublisher(std::string_view uri) : RabbitMQPublisher(Connection::open(uri)) {}

  /// A moved-from publisher may only be destroyed or assigned to.
  RabbitMQPublisher(RabbitMQPublisher&&) noexcept = default;
  /// Closes this publisher's channel first, as destruction would.
  RabbitMQPublisher& operator=(RabbitMQPublisher&& other) noexcept {
    if (this != &other) {
      close_channel();
      connection_ = std::move(other.connection_);
      core_ = std::move(other.core_);
    }
    return *this;
  }
  RabbitMQPublisher(const RabbitMQPublisher&) = delete;
  RabbitMQPublisher& operator=(const RabbitMQPublisher&) = delete;

  /// Closes the publisher's channel once its asynchronous publishes have their outcomes (at the
  /// latest at their deadline, `confirm_timeout`); returns at once.
  ~RabbitMQPublisher() { close_channel(); }

  /// Publishes `batch` to `topic` and waits for every outcome (see the class comment).
  void publish(std::string_view topic, std::vector<Message>&& batch, std::error_code& ec) {
    std::vector<std::error_code> outcomes;
    publish_with_outcomes(topic, std::span<Message>(batch), outcomes, ec);
    if (!ec) {
      batch.clear();
      return;
    }
    std::size_t kept = 0;
    for (std::size_t i = 0; i < batch.size(); ++i)
      if (i >= outcomes.size() || outcomes[i]) {
        if (kept != i) batch[kept] = std::move(batch[i]);
        ++kept;
      }
    batch.resize(kept);
  }
  void publish(std::string_view topic, std::vector<Message>&& batch) {
    std::error_code ec;
    publish(topic, std::move(batch), ec);
    throw_if(ec, "RabbitMQPublisher::publish");
  }

  /// Publishes one message and waits for its outcome; on failure `message` is left as it was.
  void publish(std::string_view topic, Message&& message, std::error_code& ec) {
    std::vector<std::error_code> outcomes;
    publish_with_outcomes(topic, std::span<Message>(&message, 1), outcomes, ec);
  }
  void publish(std::string_view topic, Message&& message) {
    std::error_code ec;
    publish(topic, std::move(message), ec);
    throw_if(ec, "RabbitMQPublisher::publish");
  }

  /// Publishes `messages` (read, not moved) and fills `outcomes` with one outcome per message;
  /// `ec` is the first failed outcome. The messages may be reused or destroyed on return.
  void publish_with_outcomes(std::string_view topic, std::span<Message> messages,
                             std::vector<std::error_code>& outcomes, std::error_code& ec) {
    outcomes.clear();
    ec = detail::check_topic(topic);
    if (ec) return;
    auto batch = std::make_shared<detail::PublishBatch>();
    batch->topic.assign(topic);
    batch->messages = messages;
    auto waiter = std::make_shared<detail::Waiter<std::vector<std::error_code>>>();
    batch->done = [waiter](detail::PublishBatch& b) {
      const std::error_code first = b.first_error();
      waiter->set(first, std::move(b.outcomes));
    };
    asio::post(connection_->core()->strand(), [core = core_, batch] { core->submit(batch); });
    outcomes = waiter->wait(ec);
  }

  /// Publishes asynchronously; the batch is moved into the operation. Completion signature
  /// `void(std::error_code)`: the first failed outcome, once every message has one. The handler
  /// runs on its associated executor (the connection's handler executor if it has none), never
  /// inside this call, exactly once.
  ///
  /// Cancellation: a signal on the handler's associated cancellation slot (`terminal`, `partial`
  /// or `total`, all alike) that arrives while none of the batch's messages was written yet —
  /// it waits for room in the unconfirmed window, for the connection to be unblocked or to
  /// recover — completes the operation with `asio::error::operation_aborted`, and none of its
  /// messages is sent (nothing happened: a `total` cancellation's promise). Once a message of the
  /// batch was written, a signal has no effect: the operation completes with the outcomes as
  /// usual, within `confirm_timeout`. Emit the signal where you would call the handler's other
  /// operations (the slot's handler only posts to the connection's strand).
  template <class CompletionToken>
  auto async_publish(std::string_view topic, std::vector<Message>&& batch, CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(std::error_code)>(
        [this](auto handler, std::string name, std::vector<Message> messages) {
          auto executor = asio::get_associated_executor(handler, connection_->handler_executor());
          auto slot = asio::get_associated_cancellation_slot(handler);
          auto work = asio::make_work_guard(executor);
          const std::error_code invalid = detail::check_topic(name);
          if (invalid) {
            asio::post(executor, [handler = std::move(handler), invalid]() mutable { std::move(handler)(invalid); });
            return;
          }
          auto b = std::make_shared<detail::PublishBatch>();
          b->topic = std::move(name);
          b->owned = std::move(messages);
          b->messages = std::span<Message>(b->owned);
          b->done = [handler = std::move(handler), work = std::move(work)](detail::PublishBatch& done) mutable {
            const std::error_code ec = done.first_error();
            auto ex = work.get_executor();
            asio::post(ex, [handler = std::move(handler), ec]() mutable { std::move(handler)(ec); });
            work.reset();
          };
          asio::post(connection_->core()->strand(), [core = core_, b] { core->submit(b); });
          if (slot.is_connected()) {
            // Runs on the thread that emits the signal; the cancellation itself runs on the strand,
            // after the submit posted above. The slot keeps this handler after the operation
            // completed: it then finds nothing to cancel.
            slot.assign([weak_core = std::weak_ptr<detail::PublisherCore>(core_),
                         weak_conn = std::weak_ptr<Connection>(connection_),
                         weak_batch = std::weak_ptr<detail::PublishBatch>(b)](asio::cancellation_type type) {
              if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
                           asio::cancellation_type::total)) == asio::cancellation_type::none)
                return;
              auto core = weak_core.lock();
              auto batch = weak_batch.lock();
              auto conn = weak_conn.lock();
              if (!core || !batch || !conn) return;  // completed (or completing) already
              asio::post(conn->core()->strand(),
                         [core = std::move(core), batch = std::move(batch)] { core->cancel(batch); });
            });
          }
        },
        token, std::string(topic), std::move(batch));
  }

  /// One message, asynchronously; its outcome completes the operation.
  template <class CompletionToken>
  auto async_publish(std::string_view topic, Message&& message, CompletionToken&& token) {
    std::vector<Message> batch;
    batch.push_back(std::move(message));
    return async_publish(topic, std::move(batch), std::forward<CompletionToken>(token));
  }

  /// The broker blocked the connection (resource alarm): publishes wait until it unblocks.
  [[nodiscard]] bool blocked() const noexcept { return connection_->blocked(); }
  /// The connection is down and being recovered: publishes wait in the outage buffer (see
  /// `RecoveryConfig`).
  [[nodiscard]] bool recovering() const noexcept { return connection_->is_recovering(); }
  /// Messages republished after a recovery because the lost connection had not confirmed them
  /// (each carries `x-kincir-possible-duplicate`).
  [[nodiscard]] std::uint64_t republished() const noexcept { return core_->republished(); }
  [[nodiscard]] const std::shared_ptr<Connection>& connection() const noexcept { return connection_; }

 private:
  void close_channel() noexcept {
    if (core_) asio::post(connection_->core()->strand(), [core = std::move(core_)] { core->shutdown(); });
  }
  std::shared_ptr<Connection> connection_;
  std::shared_ptr<detail::PublisherCore> core_;
};

static_assert(Publisher<RabbitMQPublisher>);
static_assert(AsyncPublisher<RabbitMQPublisher>);

}  // namespace kincir::rabbitmq
