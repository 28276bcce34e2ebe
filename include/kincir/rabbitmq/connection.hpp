/// @file
/// `kincir::rabbitmq::Connection` and `Channel`: the I/O layer that drives the sans-I/O AMQP core
/// (`rabbitmq/amqp/`) over an Asio TCP socket.
///
/// Threading: a connection owns one I/O thread and, on it, one strand. Everything that touches
/// the socket or the protocol state runs there: one read loop that routes frames to channels by
/// id, one writer, the heartbeat timer and every deadline. User completion handlers never run on
/// that strand: they go to their associated executor, by default the connection's handler
/// executor (a thread of its own), so a handler that blocks delays other handlers but never
/// heartbeats, reads or writes.
///
/// Writing: channels append frames to their own buffers; at the end of each strand turn those
/// buffers are swapped (not copied) into the next generation, and the whole generation goes out
/// in one gathered write. A buffer being written is never appended to; message bodies are
/// borrowed and kept alive (by reference count) until their write completes.
#pragma once

#include <kincir/config.hpp>

#include <kincir/core/bytes.hpp>                   // bodies kept alive until written
#include <kincir/core/error.hpp>                   // kincir::Error, throw_if
#include <kincir/rabbitmq/amqp/action.hpp>         // Event, Action
#include <kincir/rabbitmq/amqp/channel.hpp>        // ChannelState and channel operations
#include <kincir/rabbitmq/amqp/connection.hpp>     // ConnectionState, HandshakeAlgo, CloseAlgo
#include <kincir/rabbitmq/amqp/error.hpp>          // errc, reply_code
#include <kincir/rabbitmq/amqp/methods.hpp>        // Method
#include <kincir/rabbitmq/amqp/output_buffer.hpp>  // OutputBuffer
#include <kincir/rabbitmq/config.hpp>              // RabbitMQConfig
#include <kincir/rabbitmq/recovery.hpp>            // Backoff, RecoveryEvent, is_recoverable

#include <asio/bind_executor.hpp>        // handlers bound to the strand
#include <asio/connect.hpp>              // asio::async_connect over resolved endpoints
#include <asio/executor_work_guard.hpp>  // keeps the I/O thread alive
#include <asio/io_context.hpp>           // the I/O context
#include <asio/ip/tcp.hpp>               // socket, resolver, no_delay
#include <asio/post.hpp>                 // asio::post onto the strand
#include <asio/steady_timer.hpp>         // deadlines and heartbeats
#include <asio/strand.hpp>               // the connection's strand
#include <asio/thread_pool.hpp>          // the handler executor
#include <asio/write.hpp>                // asio::async_write (gathered)
#if KINCIR_RABBITMQ_TLS
#include <asio/ssl.hpp>  // amqps: TLS over the socket (link OpenSSL)
#endif

#include <algorithm>           // std::max
#include <atomic>              // open/blocked flags read from any thread
#include <chrono>              // deadlines
#include <condition_variable>  // synchronous waits
#include <cstdint>             // channel ids
#include <cstring>             // std::memmove for the read buffer
#include <deque>               // pending calls
#include <functional>          // channel callbacks
#include <limits>              // the socket's low-water mark
#include <memory>              // shared ownership with the strand's handlers
#include <mutex>               // status read from any thread
#include <optional>            // the running handshake/close algorithm
#include <span>                // frames
#include <string>              // diagnostics
#include <system_error>        // std::error_code
#include <thread>              // the I/O thread
#include <utility>             // std::move, std::swap, std::exchange
#include <vector>              // channels, buffers

namespace kincir::rabbitmq {

class Connection;
class Channel;

namespace detail {

class ConnectionCore;

/// A value a user thread waits for while the strand produces it.
template <class T>
class Waiter {
 public:
  void set(std::error_code ec, T value) {
    {
      const std::lock_guard lock(mutex_);
      if (done_) return;
      done_ = true;
      ec_ = ec;
      value_ = std::move(value);
    }
    cv_.notify_all();
  }
  T wait(std::error_code& ec) {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return done_; });
    ec = ec_;
    return std::move(value_);
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::error_code ec_;
  T value_{};
};

using clock = std::chrono::steady_clock;

/// What publishers and subscribers learn from their connection's recovery (strand).
class ConnectionListener {
 public:
  ConnectionListener() = default;
  ConnectionListener(const ConnectionListener&) = delete;
  ConnectionListener& operator=(const ConnectionListener&) = delete;
  /// The connection is open again: reopen channels, replay topology, consume again.
  virtual void on_recovered() = 0;
  /// The connection is closed for good (closed by the user, recovery gave up, or it was lost
  /// for a reason not worth retrying): fail what waits for it.
  virtual void on_failed(std::error_code ec) = 0;

 protected:
  ~ConnectionListener() = default;
};

}  // namespace detail

/// What a channel reports; every callback runs on the connection's strand and must not block.
struct ChannelEvents {
  /// A message for one of this channel's consumers.
  std::function<void(amqp::Delivery&)> on_delivery;
  /// Publisher confirms settled: acked (`ec` empty), nacked (`message_nacked`), or lost when the
  /// channel closed (its reply code, or `errc::message_lost` when the connection died).
  std::function<void(const std::vector<amqp::TagRange>&, std::error_code)> on_confirm;
  /// A mandatory message came back (before its confirm).
  std::function<void(amqp::ReturnedMessage&)> on_return;
  /// The broker cancelled a consumer (queue deleted).
  std::function<void(const std::string&)> on_cancel;
  /// The channel closed: `ec` empty after our own close, else the reason.
  std::function<void(std::error_code)> on_closed;
  /// connection.blocked (true) / unblocked (false).
  std::function<void(bool)> on_blocked;
};

/// One AMQP channel of a `Connection`. Members marked "strand" may only be called on the
/// connection's strand (from its callbacks or a handler posted there); the others from any
/// thread except the strand (they wait for it).
class Channel : public std::enable_shared_from_this<Channel> {
 public:
  using Completion = std::function<void(std::error_code, amqp::Method&)>;

  Channel(std::shared_ptr<detail::ConnectionCore> core, std::uint16_t id, std::uint32_t frame_max, ChannelEvents events)
      : core_(std::move(core)), st_(id, frame_max), events_(std::move(events)) {}

  [[nodiscard]] std::uint16_t id() const noexcept { return st_.id; }
  /// Open (not closing or closed). Any thread.
  [[nodiscard]] bool is_open() const noexcept { return open_.load(std::memory_order_acquire); }

  /// Sends a synchronous method and waits for its reply (at most `call_timeout`; a call that
  /// times out closes the channel). Errors: the reply code that closed the channel, or
  /// `errc::channel_closed`, `errc::call_timeout`, `errc::connection_closed`.
  template <class M>
  amqp::Method call(const M& m, std::error_code& ec);
  template <class M>
  amqp::Method call(const M& m) {
    std::error_code ec;
    auto r = call(m, ec);
    throw_if(ec, "Channel::call");
    return r;
  }

  /// Closes the channel and waits for close-ok, at most `call_timeout` (`errc::call_timeout`; the
  /// broker may be blocking the connection). A channel given up on keeps its id until close-ok
  /// comes or the connection closes, so a new channel never receives the old one's frames.
  void close(std::error_code& ec);
  void close() {
    std::error_code ec;
    close(ec);
    throw_if(ec, "Channel::close");
  }

  /// The server's text for the last channel error. Any thread.
  [[nodiscard]] std::string server_message() const {
    const std::lock_guard lock(mutex_);
    return server_message_;
  }

  // --- strand ---
  /// The protocol state; operations on it must be followed by `touch()`.
  amqp::ChannelState& state() noexcept { return st_; }
  /// Marks the channel as having frames to write in this turn.
  void touch();
  /// Sends `m`; `done` gets the reply (or the error) on the strand. A method without reply
  /// completes at once.
  template <class M>
  void async_call(const M& m, Completion done);
  /// Sends channel.close; `done` runs when the channel is closed, or after `call_timeout` without
  /// close-ok (then at once for later calls).
  void async_close(std::function<void()> done);
  /// Keeps `body` alive until the frames written this turn are on the wire.
  void keep(const Bytes& body);
  ChannelEvents& events() noexcept { return events_; }

 private:
  friend class detail::ConnectionCore;

  struct Call {
    Completion done;
    std::unique_ptr<asio::steady_timer> timer;
  };

  void handle(const amqp::Action& a);
  void fail_calls(std::error_code ec);
  void arm_timer(const std::shared_ptr<Call>& call);

  std::shared_ptr<detail::ConnectionCore> core_;
  amqp::ChannelState st_;
  ChannelEvents events_;
  std::deque<std::shared_ptr<Call>> calls_;
  std::vector<std::function<void()>> close_waiters_;
  std::unique_ptr<asio::steady_timer> close_timer_;  // async_close's deadline
  bool close_gave_up_ = false;                       // it passed without close-ok
  std::atomic<bool> open_{false};
  bool dirty_ = false;
  mutable std::mutex mutex_;
  std::string server_message_;
};

namespace detail {

/// The strand-side state of a connection. Shared by the handlers in flight; owned through
/// `Connection`, which owns the I/O thread.
class ConnectionCore : public std::enable_shared_from_this<ConnectionCore> {
 public:
  using strand_type = asio::strand<asio::io_context::executor_type>;
  enum class Phase : std::uint8_t { connecting, handshake, open, closing, closed };

  ConnectionCore(asio::io_context& io, asio::any_io_executor handlers, RabbitMQConfig config)
      : config_(std::move(config)),
        strand_(asio::make_strand(io)),
        handler_executor_(std::move(handlers)),
        resolver_(strand_),
        socket_(strand_),
        deadline_(strand_),
        heartbeat_timer_(strand_),
        read_timer_(strand_),
        retry_timer_(strand_),
        conn_(config_.connection),
        backoff_(config_.recovery, static_cast<std::uint64_t>(clock::now().time_since_epoch().count())) {
    rbuf_.resize(kInitialReadBuffer);
  }

  [[nodiscard]] const RabbitMQConfig& config() const noexcept { return config_; }
  [[nodiscard]] strand_type& strand() noexcept { return strand_; }
  [[nodiscard]] const asio::any_io_executor& handler_executor() const noexcept { return handler_executor_; }
  [[nodiscard]] bool is_open() const noexcept { return open_.load(std::memory_order_acquire); }
  [[nodiscard]] bool blocked() const noexcept { return blocked_.load(std::memory_order_acquire); }

  [[nodiscard]] std::error_code error() const {
    const std::lock_guard lock(status_mutex_);
    return status_error_;
  }
  [[nodiscard]] std::string server_message() const {
    const std::lock_guard lock(status_mutex_);
    return server_message_;
  }
  [[nodiscard]] std::string blocked_reason() const {
    const std::lock_guard lock(status_mutex_);
    return blocked_reason_;
  }
  [[nodiscard]] amqp::Tuning tuning() const {
    const std::lock_guard lock(status_mutex_);
    return tuning_;
  }
  [[nodiscard]] RecoveryStats recovery_stats() const {
    const std::lock_guard lock(status_mutex_);
    return stats_;
  }
  /// Lost and reconnecting. Any thread.
  [[nodiscard]] bool is_recovering() const noexcept { return recovering_flag_.load(std::memory_order_acquire); }

  // --- strand ---
  [[nodiscard]] Phase phase() const noexcept { return phase_; }
  /// The connection failed (not closed cleanly by us): lost confirms are `message_lost`.
  [[nodiscard]] bool failed() const noexcept { return failed_; }
  /// Lost and being recovered: what waits for the connection should keep waiting (strand).
  [[nodiscard]] bool recovering() const noexcept { return recovering_; }
  /// Counts connections: a listener compares it to tell a new connection from the old one.
  [[nodiscard]] std::uint64_t epoch() const noexcept { return epoch_; }

  /// `l` hears of recoveries and of the end of the connection (strand; held weakly).
  void add_listener(std::weak_ptr<ConnectionListener> l) {
    std::erase_if(listeners_, [](const auto& w) { return w.expired(); });
    listeners_.push_back(std::move(l));
  }

  void start(std::function<void(std::error_code)> done) {
    open_done_ = std::move(done);
    if (config_.tls.enabled) {
#if KINCIR_RABBITMQ_TLS
      std::string why;
      const std::error_code ec = make_tls_context(why);
      if (ec) {
        conn_.diagnostics.assign(why);  // what set_error reports as the text
        return fail(ec);
      }
#else
      return fail(errc::tls_unavailable);
#endif
    }
    connect_endpoint(0);
  }

  void async_open_channel(ChannelEvents events, std::function<void(std::error_code, std::shared_ptr<Channel>)> done);

  /// connection.update-secret; `done` gets update-secret-ok (or the error, or `call_timeout`).
  /// Later reconnections log in with the new secret.
  void async_update_secret(const std::string& secret, const std::string& reason,
                           std::function<void(std::error_code)> done) {
    if (phase_ != Phase::open) return done(errc::connection_closed);
    std::error_code ec;
    amqp::update_secret(conn_, secret, reason, ec);
    if (ec) return done(ec);
    secret_ = secret;
    auto w = std::make_shared<SecretWaiter>();
    w->done = std::move(done);
    if (config_.call_timeout.count() > 0) {
      w->timer = std::make_unique<asio::steady_timer>(strand_, config_.call_timeout);
      w->timer->async_wait(asio::bind_executor(strand_, [weak = std::weak_ptr<SecretWaiter>(w)](std::error_code tec) {
        auto waiter = weak.lock();
        if (tec || !waiter || !waiter->done) return;
        std::exchange(waiter->done, nullptr)(errc::call_timeout);
      }));
    }
    secret_waiters_.push_back(std::move(w));
    do_write();
  }

  void close(std::function<void(std::error_code)> done) {
    user_closed_ = true;
    if (phase_ == Phase::closed) {
      if (recovering_) {  // waiting between attempts: give up now
        retry_timer_.cancel();
        end_recovery(errc::connection_closed, false);
      }
      return done({});
    }
    if (recovering_) aborted_recovery_ = true;
    if (phase_ != Phase::open) {
      close_waiters_.push_back(std::move(done));
      if (phase_ != Phase::closing) fail(asio::error::operation_aborted);
      return;
    }
    close_waiters_.push_back(std::move(done));
    begin_close(200, "kincir closing", {});
  }

  /// Frames of `ch` to write this turn.
  void mark_dirty(Channel& ch) { dirty_.push_back(ch.shared_from_this()); }
  void keep(const Bytes& body) { keep_queued_.push_back(body); }

  /// Ends the turn: every channel's frames go into the next write.
  void end_turn() { do_write(); }

  /// Read batching: the frames just routed stood for `n` more units of work than one each (a
  /// confirm of many messages is one frame). They count toward `read_batch_frames`.
  void add_read_weight(std::size_t n) noexcept { read_weight_ += n; }

  /// Read batching: the next read goes at once even under a stream (a publisher whose window
  /// would run dry while its confirms wait in the socket).
  void read_promptly() noexcept { read_promptly_ = true; }

  /// A protocol error on a channel or the connection: connection.close with its reply code.
  void protocol_error(std::error_code ec, const std::string& text) {
    if (phase_ != Phase::open) return fail(ec);
    set_error(ec);
    begin_close(static_cast<std::uint16_t>(amqp::reply_code_for(ec)), text, ec);
  }

  /// `ch` closed: its id is free. `by_server`: the broker closed it (we answered close-ok), and
  /// what the broker sent on it before reading our close-ok still comes (RabbitMQ forwards the
  /// deliveries its queues had already handed to the channel after its channel.close): frames on
  /// that id are dropped, not a connection error, until the id is opened again.
  void release(Channel& ch, bool by_server) {
    stage(ch.st_.out);
    const auto id = ch.st_.id;
    if (id < channels_.size() && channels_[id].get() == &ch) {
      channels_[id].reset();
      if (by_server) {
        if (id >= server_closed_.size()) server_closed_.resize(id + 1);
        server_closed_[id] = true;
      }
    }
  }

 private:
  static constexpr std::size_t kInitialReadBuffer = std::size_t{64} * 1024;
  /// A read that fills the buffer doubles it up to this (a larger frame grows it further): under
  /// a stream one batched read takes an interval's worth, not a buffer's worth and then another.
  static constexpr std::size_t kMaxReadBuffer = std::size_t{512} * 1024;
  static constexpr std::size_t kMaxSpares = 64;

  template <class F>
  auto on_strand(F&& f) {
    return asio::bind_executor(strand_, std::forward<F>(f));
  }

  void set_error(std::error_code ec) {
    if (!error_) error_ = ec;
    const std::lock_guard lock(status_mutex_);
    if (!status_error_) status_error_ = ec;
    server_message_ = conn_.diagnostics.server_message();
  }

  // --- connecting ---
  void connect_endpoint(std::size_t i) {
    if (phase_ != Phase::connecting) return;
    if (i >= config_.endpoints.size()) {
      if (!last_connect_error_) last_connect_error_ = errc::connect_timeout;
      return fail(last_connect_error_);
    }
    const auto attempt = ++attempt_;
    deadline_.expires_after(config_.connect_timeout);
    deadline_.async_wait(on_strand([self = shared_from_this(), attempt](std::error_code ec) {
      if (ec || attempt != self->attempt_ || self->phase_ != Phase::connecting) return;
      self->timed_out_ = true;
      self->resolver_.cancel();
      std::error_code ignored;
      self->socket_.close(ignored);
    }));
    timed_out_ = false;
    const auto& ep = config_.endpoints[i];
    resolver_.async_resolve(
        ep.host, std::to_string(ep.port),
        on_strand([self = shared_from_this(), i, attempt](std::error_code ec,
                                                          const asio::ip::tcp::resolver::results_type& results) {
          if (attempt != self->attempt_ || self->phase_ != Phase::connecting) return;
          if (ec) return self->next_endpoint(i, ec);
          asio::async_connect(self->socket_, results,
                              self->on_strand([self, i, attempt](std::error_code cec, const asio::ip::tcp::endpoint&) {
                                if (attempt != self->attempt_ || self->phase_ != Phase::connecting) return;
                                if (cec) return self->next_endpoint(i, cec);
                                self->connected(i);
                              }));
        }));
  }

  void next_endpoint(std::size_t i, std::error_code ec) {
    last_connect_error_ = timed_out_ ? std::error_code(errc::connect_timeout) : ec;
    std::error_code ignored;
    socket_.close(ignored);
    connect_endpoint(i + 1);
  }

  void connected(std::size_t endpoint) {
    deadline_.cancel();
    std::error_code ignored;
    socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
    phase_ = Phase::handshake;
    ++attempt_;
    deadline_.expires_after(config_.handshake_timeout);
    deadline_.async_wait(on_strand([self = shared_from_this()](std::error_code ec) {
      if (ec || self->phase_ != Phase::handshake) return;
      if (!self->handshake_) return self->fail(errc::handshake_timeout);  // still in TLS
      self->drive_handshake(amqp::Event::timeout());
    }));
#if KINCIR_RABBITMQ_TLS
    if (config_.tls.enabled) return tls_handshake(config_.endpoints[endpoint].host);
#else
    (void)endpoint;
#endif
    amqp_handshake();
  }

  void amqp_handshake() {
    handshake_.emplace();
    start_read();
    drive_handshake(amqp::Event::start());
  }

#if KINCIR_RABBITMQ_TLS
  /// The TLS context of every attempt: verification, CA file, client certificate.
  std::error_code make_tls_context(std::string& why) {
    const TlsConfig& t = config_.tls;
    tls_context_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    std::error_code ec;
    tls_context_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                                  asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                                  asio::ssl::context::no_tlsv1_1,
                              ec);
    if (t.verify_peer) {
      tls_context_->set_verify_mode(asio::ssl::verify_peer, ec);
      if (t.ca_file.empty())
        tls_context_->set_default_verify_paths(ec);
      else
        tls_context_->load_verify_file(t.ca_file, ec);
      if (ec) {
        why = "cannot load the CA certificates '" + t.ca_file + "': " + ec.message();
        return ec;
      }
    } else {
      tls_context_->set_verify_mode(asio::ssl::verify_none, ec);
    }
    if (!t.cert_file.empty()) {
      tls_context_->use_certificate_chain_file(t.cert_file, ec);
      if (ec) {
        why = "cannot load the client certificate '" + t.cert_file + "': " + ec.message();
        return ec;
      }
      tls_context_->use_private_key_file(t.key_file.empty() ? t.cert_file : t.key_file, asio::ssl::context::pem, ec);
      if (ec) {
        why = "cannot load the client key '" + (t.key_file.empty() ? t.cert_file : t.key_file) + "': " + ec.message();
        return ec;
      }
    }
    return {};
  }

  /// TLS over the connected socket: SNI and host name check with the configured name or the
  /// endpoint's host, then the AMQP handshake inside it.
  void tls_handshake(const std::string& host) {
    const std::string& name = config_.tls.server_name.empty() ? host : config_.tls.server_name;
    tls_.emplace(socket_, *tls_context_);
    // SNI is for host names only, not IP literals.
    std::error_code parse_error;
    (void)asio::ip::make_address(name, parse_error);
    if (parse_error) SSL_set_tlsext_host_name(tls_->native_handle(), name.c_str());  // NOLINT: OpenSSL macro
    if (config_.tls.verify_peer) tls_->set_verify_callback(asio::ssl::host_name_verification(name));
    tls_->async_handshake(asio::ssl::stream_base::client,
                          on_strand([self = shared_from_this(), epoch = epoch_](std::error_code ec) {
                            if (epoch != self->epoch_ || self->phase_ != Phase::handshake) return;
                            if (ec) {
                              self->conn_.diagnostics.assign("TLS handshake: " + ec.message());
                              return self->fail(ec);
                            }
                            self->amqp_handshake();
                          }));
  }
#endif

  void drive_handshake(amqp::Event ev) {
    for (;;) {
      const amqp::Action a = handshake_->resume(conn_, ev);
      switch (a.kind) {
        case amqp::Action::Kind::write:
          stage(conn_.out);
          ev = amqp::Event::written();
          continue;
        case amqp::Action::Kind::done:
          handshake_.reset();
          deadline_.cancel();
          if (a.ec) {
            set_error(a.ec);
            return shutdown_after_write(a.ec);
          }
          return opened();
        default: do_write(); return;
      }
    }
  }

  void opened() {
    phase_ = Phase::open;
    {
      const std::lock_guard lock(status_mutex_);
      tuning_ = conn_.tuning;
    }
    open_.store(true, std::memory_order_release);
    conn_.heartbeat.start(std::chrono::seconds(conn_.tuning.heartbeat), detail::clock::now());
    schedule_heartbeat();
    ever_open_ = true;
    if (recovering_) {
      recovered();
    } else {
      {
        const std::lock_guard lock(status_mutex_);
        ++stats_.connected;
      }
      report(RecoveryEvent{RecoveryState::connected, {}, 0, {}});
    }
    if (auto done = std::move(open_done_)) done({});
  }

  /// The oldest update-secret is answered (or all fail with the connection).
  void settle_secret(std::error_code ec) {
    while (!secret_waiters_.empty()) {
      auto w = std::move(secret_waiters_.front());
      secret_waiters_.pop_front();
      if (w->timer) w->timer->cancel();
      if (w->done) std::exchange(w->done, nullptr)(ec);
      if (!ec) return;  // one answer settles one call
    }
  }

  // --- recovery ---
  void report(const RecoveryEvent& ev) {
    if (!config_.recovery.on_state) return;
    asio::post(handler_executor_, [cb = config_.recovery.on_state, ev] {
      try {
        cb(ev);
      } catch (...) {  // NOLINT(bugprone-empty-catch): it would end the handler thread (and the process)
      }
    });
  }

  template <class F>
  void for_each_listener(F&& f) {
    auto listeners = listeners_;  // a listener may add listeners
    for (auto& w : listeners)
      if (auto l = w.lock()) f(*l);
  }

  /// After `fail` settled the lost connection's channels: the next attempt after a backoff.
  void schedule_reconnect(std::error_code why, bool fresh) {
    if (fresh) {
      outage_attempts_ = 0;
      lost_at_ = detail::clock::now();
      backoff_.reset();
      {
        const std::lock_guard lock(status_mutex_);
        ++stats_.recovering;
      }
      report(RecoveryEvent{RecoveryState::recovering, why, 0, {}});
    }
    const auto& rc = config_.recovery;
    if (rc.max_attempts != 0 && outage_attempts_ >= rc.max_attempts) return end_recovery(why, true);
    retry_pending_ = true;
    retry_timer_.expires_after(backoff_.next());
    retry_timer_.async_wait(on_strand([self = shared_from_this()](std::error_code ec) {
      if (ec || !self->recovering_ || !self->retry_pending_) return;
      self->retry_pending_ = false;
      self->reconnect();
    }));
  }

  /// One attempt: a fresh protocol state, then every endpoint in order.
  void reconnect() {
    ++outage_attempts_;
    {
      const std::lock_guard lock(status_mutex_);
      ++stats_.attempts;
    }
    ++epoch_;
    conn_ = amqp::ConnectionState(config_.connection);
    if (secret_) conn_.config.password = *secret_;  // updated with update-secret
    rbegin_ = rend_ = 0;
    error_.clear();
    failed_ = clean_close_ = close_after_write_ = finalize_after_write_ = false;
    handshake_.reset();
    close_.reset();
#if KINCIR_RABBITMQ_TLS
    tls_.reset();  // a TLS session does not survive its socket
#endif
    last_connect_error_.clear();
    phase_ = Phase::connecting;
    connect_endpoint(0);
  }

  void recovered() {
    recovering_ = false;
    recovering_flag_.store(false, std::memory_order_release);
    const auto downtime = detail::clock::now() - lost_at_;
    RecoveryEvent ev{RecoveryState::recovered, {}, outage_attempts_, downtime};
    outage_attempts_ = 0;
    {
      const std::lock_guard lock(status_mutex_);
      status_error_.clear();
      server_message_.clear();
      ++stats_.recovered;
      stats_.last_downtime = downtime;
      stats_.max_downtime = std::max(stats_.max_downtime, downtime);
    }
    report(ev);
    for_each_listener([](ConnectionListener& l) { l.on_recovered(); });
    do_write();
  }

  /// The outage ends without a connection (`report`: recovery gave up, not the user's close).
  void end_recovery(std::error_code why, bool report_failure) {
    recovering_ = false;
    retry_pending_ = false;
    recovering_flag_.store(false, std::memory_order_release);
    if (!error_) error_ = why;
    {
      const std::lock_guard lock(status_mutex_);
      status_error_ = why;
      if (report_failure) ++stats_.failed;
    }
    if (report_failure) report(RecoveryEvent{RecoveryState::failed, why, outage_attempts_, {}});
    for_each_listener([why](ConnectionListener& l) { l.on_failed(why); });
  }

  // --- reading ---
  void start_read() {
    if (!socket_.is_open()) return;
    if (rend_ == rbuf_.size()) rbuf_.resize(rbuf_.size() * 2);
    auto done = on_strand([self = shared_from_this(), epoch = epoch_](std::error_code ec, std::size_t n) {
      if (epoch == self->epoch_) self->on_read(ec, n);
    });
    const auto buffer = asio::buffer(rbuf_.data() + rend_, rbuf_.size() - rend_);
#if KINCIR_RABBITMQ_TLS
    if (tls_) return tls_->async_read_some(buffer, std::move(done));
#endif
    socket_.async_read_some(buffer, std::move(done));
  }

  void on_read(std::error_code ec, std::size_t n) {
    if (phase_ == Phase::closed) return;
    if (ec) return fail(ec == asio::error::eof ? std::error_code(errc::connection_closed) : ec);
    conn_.heartbeat.on_read(detail::clock::now());
    // A read that filled the buffer leaves more in the socket: the next one goes at once.
    const bool filled = n == rbuf_.size() - rend_;
    rend_ += n;
    std::size_t needed = 0;
    std::size_t frames = 0;
    while (phase_ != Phase::closed && rbegin_ < rend_) {
      std::error_code pec;
      const auto r = conn_.reader.parse(std::span<const std::uint8_t>(rbuf_.data() + rbegin_, rend_ - rbegin_), pec);
      if (r.status == amqp::ParseStatus::error) {
        protocol_error(pec, "malformed frame");
        break;
      }
      if (r.status == amqp::ParseStatus::need_more) {
        needed = r.size;
        break;
      }
      rbegin_ += r.size;
      ++frames;
      on_frame(r.frame);
    }
    if (phase_ == Phase::closed) return;
    // Keep the unparsed tail at the front, with room for the frame it starts.
    if (rbegin_ == rend_) {
      rbegin_ = rend_ = 0;
    } else if (rbegin_ != 0) {
      std::memmove(rbuf_.data(), rbuf_.data() + rbegin_, rend_ - rbegin_);
      rend_ -= rbegin_;
      rbegin_ = 0;
    }
    if (needed > rbuf_.size()) rbuf_.resize(needed);
    if (filled && rbuf_.size() < kMaxReadBuffer) rbuf_.resize(std::min(rbuf_.size() * 2, kMaxReadBuffer));
    do_write();
    next_read(frames, filled);
  }

  /// Read batching (`RabbitMQConfig::read_batch_interval`): once `read_batch_frames` frames (plus
  /// `add_read_weight`) came within the current interval, the next read waits for the interval's
  /// end; otherwise, or after `read_promptly` or a read that filled the buffer, it starts at once.
  void next_read(std::size_t frames, bool filled) {
    const std::size_t weight = frames + std::exchange(read_weight_, 0);
    const bool promptly = std::exchange(read_promptly_, false);
    const auto interval = config_.read_batch_interval;
    if (interval.count() <= 0 || config_.read_batch_frames == 0 || phase_ != Phase::open || filled || promptly)
      return start_read();
    const auto now = detail::clock::now();
    if (now - batch_start_ >= interval) {
      batch_start_ = now;
      batch_frames_ = 0;
    }
    batch_frames_ += weight;
    if (batch_frames_ < config_.read_batch_frames) return start_read();
#if KINCIR_RABBITMQ_TLS
    // A TLS read returns one record (at most 16 KiB of it), never a full read buffer: the read
    // again at once that a full buffer gets is given while the TLS layer or the socket holds
    // more, or batching would cap a TLS stream at a few records per interval.
    if (tls_ && tls_has_more()) return start_read();
#endif
    // No read is pending until the interval ends, but the socket would still report each arrival
    // to the reactor (a wake-up each): a low-water mark of the buffer's free space keeps it quiet
    // until a read would fill the buffer.
    const std::size_t room = std::min<std::size_t>(rbuf_.size() - rend_, std::numeric_limits<int>::max());
    std::error_code ignored;
    socket_.set_option(asio::socket_base::receive_low_watermark(static_cast<int>(std::max<std::size_t>(room, 1))),
                       ignored);
    read_timer_.expires_at(batch_start_ + interval);
    read_timer_.async_wait(on_strand([self = shared_from_this(), epoch = epoch_](std::error_code ec) {
      if (ec || epoch != self->epoch_ || self->phase_ == Phase::closed) return;
      self->batch_start_ = detail::clock::now();
      self->batch_frames_ = 0;
      std::error_code ignored_ec;
      self->socket_.set_option(asio::socket_base::receive_low_watermark(1), ignored_ec);
      self->start_read();
    }));
  }

#if KINCIR_RABBITMQ_TLS
  /// Whether a TLS read would return at once: decrypted bytes not yet read, ciphertext taken
  /// from the socket and not yet decrypted, or bytes waiting in the socket.
  bool tls_has_more() {
    SSL* ssl = tls_->native_handle();
    if (SSL_pending(ssl) > 0) return true;
    if (BIO* in = SSL_get_rbio(ssl); in != nullptr && BIO_ctrl_pending(in) > 0) return true;
    std::error_code ec;
    return socket_.available(ec) > 0 && !ec;
  }
#endif

  void on_frame(const amqp::Frame& frame) {
    const amqp::Event ev = amqp::Event::received(frame);
    switch (phase_) {
      case Phase::handshake: return drive_handshake(ev);
      case Phase::closing:
        if (close_) return drive_close(ev);
        return;
      case Phase::open: break;
      default: return;
    }
    if (frame.channel == 0 || frame.type == amqp::FrameType::heartbeat) {
      const amqp::Action a = amqp::resume(conn_, ev);
      switch (a.kind) {
        case amqp::Action::Kind::connection_closed:
          set_error(a.ec ? a.ec : std::error_code(errc::connection_closed));
          return shutdown_after_write(error_);
        case amqp::Action::Kind::blocked:
        case amqp::Action::Kind::unblocked: return set_blocked(a.kind == amqp::Action::Kind::blocked);
        case amqp::Action::Kind::secret_updated: return settle_secret({});
        case amqp::Action::Kind::protocol_error: return protocol_error(a.ec, "unexpected frame on channel 0");
        default: return;
      }
    }
    Channel* ch = frame.channel < channels_.size() ? channels_[frame.channel].get() : nullptr;
    if (ch == nullptr && frame.channel < server_closed_.size() && server_closed_[frame.channel])
      return;  // sent by the broker before it read our close-ok: stale
    if (ch == nullptr)
      return protocol_error(reply_code::channel_error,
                            "frame on channel " + std::to_string(frame.channel) + ", which is not open");
    auto keep_alive = ch->shared_from_this();
    ch->handle(amqp::resume(ch->st_, ev));
    if (!ch->st_.out.empty()) mark_dirty(*ch);
  }

  void set_blocked(bool blocked) {
    blocked_.store(blocked, std::memory_order_release);
    {
      const std::lock_guard lock(status_mutex_);
      blocked_reason_ = conn_.blocked_reason;
    }
    for (auto& ch : channels_) {
      if (ch && ch->events_.on_blocked) {
        auto keep_alive = ch;
        keep_alive->events_.on_blocked(blocked);
      }
    }
  }

  // --- heartbeats ---
  void schedule_heartbeat() {
    if (!conn_.heartbeat.enabled()) return;
    heartbeat_timer_.expires_at(conn_.heartbeat.next_deadline());
    heartbeat_timer_.async_wait(on_strand([self = shared_from_this()](std::error_code ec) {
      if (ec || self->phase_ != Phase::open) return;
      self->on_heartbeat();
    }));
  }

  void on_heartbeat() {
    const auto now = detail::clock::now();
    const amqp::Action a = amqp::resume(conn_, amqp::Event::tick(now));
    if (a.kind == amqp::Action::Kind::protocol_error) {
      // Bytes that arrived but are not read yet prove the peer alive.
      std::error_code ec;
      if (socket_.available(ec) > 0 && !ec) {
        conn_.heartbeat.on_read(now);
        conn_.error.clear();
      } else {
        return fail(errc::heartbeat_timeout);
      }
    }
    do_write();
    schedule_heartbeat();
  }

  // --- closing ---
  void begin_close(std::uint16_t code, const std::string& text, std::error_code ec) {
    phase_ = Phase::closing;
    open_.store(false, std::memory_order_release);
    if (ec) set_error(ec);
    close_.emplace(code, text.substr(0, 255));
    deadline_.expires_after(config_.close_timeout);
    deadline_.async_wait(on_strand([self = shared_from_this()](std::error_code tec) {
      if (tec || self->phase_ != Phase::closing) return;
      if (self->close_) return self->drive_close(amqp::Event::timeout());
      self->fail(errc::close_timeout);
    }));
    drive_close(amqp::Event::start());
  }

  void drive_close(amqp::Event ev) {
    for (;;) {
      const amqp::Action a = close_->resume(conn_, ev);
      if (a.kind == amqp::Action::Kind::write) {
        stage(conn_.out);
        ev = amqp::Event::written();
        continue;
      }
      if (a.kind == amqp::Action::Kind::done) {
        close_.reset();
        if (!error_) {
          clean_close_ = true;
          set_error(errc::connection_closed);
        }
        return shutdown_after_write(error_);
      }
      do_write();
      return;
    }
  }

  /// Writes what is queued (a close-ok, a close), then drops the socket.
  void shutdown_after_write(std::error_code ec) {
    set_error(ec);
    open_.store(false, std::memory_order_release);
    if (phase_ != Phase::closing) phase_ = Phase::closing;
    close_after_write_ = true;
    do_write();
    if (!write_in_progress_) return fail(ec);
    deadline_.expires_after(config_.close_timeout);
    deadline_.async_wait(on_strand([self = shared_from_this(), ec](std::error_code tec) {
      if (!tec) self->fail(ec);
    }));
  }

 public:
  /// Drops the socket and settles everything: channels close with `ec`, their calls fail and
  /// their outstanding confirms are lost.
  void fail(std::error_code ec) {
    if (phase_ == Phase::closed) return;
    if (!clean_close_) failed_ = true;
    set_error(ec);
    const std::error_code why = error_ ? error_ : ec;
    in_outage_ = recovering_;
    recovering_ = !user_closed_ && !clean_close_ && ever_open_ && config_.recovery.enabled && is_recoverable(why);
    recovering_flag_.store(recovering_, std::memory_order_release);
    phase_ = Phase::closed;
    open_.store(false, std::memory_order_release);
    std::error_code ignored;
    deadline_.cancel();
    heartbeat_timer_.cancel();
    read_timer_.cancel();
    resolver_.cancel();
    socket_.close(ignored);
    if (write_in_progress_) {
      finalize_after_write_ = true;  // the buffers in flight stay valid until the write returns
      return;
    }
    finalize();
  }

 private:
  void finalize() {
    const std::error_code ec = error_ ? error_ : std::error_code(errc::connection_closed);
    auto channels = std::move(channels_);
    channels_.clear();
    server_closed_.clear();
    for (auto& ch : channels) {
      if (!ch) continue;
      ch->handle(amqp::abandon(ch->st_, ec));
    }
    dirty_.clear();
    queued_.clear();
    keep_queued_.clear();
    settle_secret(ec);
    blocked_.store(false, std::memory_order_release);
    if (auto done = std::move(open_done_)) done(ec);
    auto waiters = std::move(close_waiters_);
    for (auto& w : waiters) w(clean_close_ || aborted_recovery_ ? std::error_code() : ec);
    if (recovering_) {
      const bool fresh = !in_outage_;
      in_outage_ = false;
      return schedule_reconnect(ec, fresh);
    }
    if (in_outage_) {
      in_outage_ = false;
      return end_recovery(user_closed_ ? std::error_code(errc::connection_closed) : ec, !user_closed_);
    }
    if (!ever_open_) return;
    if (!user_closed_ && !clean_close_) {
      {
        const std::lock_guard lock(status_mutex_);
        ++stats_.failed;
      }
      report(RecoveryEvent{RecoveryState::failed, ec, 0, {}});
    }
    for_each_listener([ec](ConnectionListener& l) { l.on_failed(ec); });
  }

  // --- writing ---
  void stage(amqp::OutputBuffer& out) {
    if (out.empty()) return;
    amqp::OutputBuffer full;
    if (!spares_.empty()) {
      full = std::move(spares_.back());
      spares_.pop_back();
    }
    std::swap(full, out);
    queued_.push_back(std::move(full));
  }

  void do_write() {
    for (auto& ch : dirty_) stage(ch->st_.out);
    for (auto& ch : dirty_) ch->dirty_ = false;
    dirty_.clear();
    stage(conn_.out);
    if (write_in_progress_ || queued_.empty() || !socket_.is_open()) return;
    std::swap(queued_, writing_);
    std::swap(keep_queued_, keep_writing_);
    iov_.clear();
    for (const auto& b : writing_)
      b.for_each_buffer([this](std::span<const std::uint8_t> s) { iov_.emplace_back(s.data(), s.size()); });
    write_in_progress_ = true;
    auto done = on_strand([self = shared_from_this()](std::error_code ec, std::size_t) { self->on_written(ec); });
#if KINCIR_RABBITMQ_TLS
    if (tls_) return asio::async_write(*tls_, iov_, std::move(done));
#endif
    asio::async_write(socket_, iov_, std::move(done));
  }

  void on_written(std::error_code ec) {
    write_in_progress_ = false;
    for (auto& b : writing_) {
      b.clear();
      if (spares_.size() < kMaxSpares) spares_.push_back(std::move(b));
    }
    writing_.clear();
    keep_writing_.clear();
    if (finalize_after_write_) {
      finalize_after_write_ = false;
      return finalize();
    }
    if (phase_ == Phase::closed) return;
    if (ec) return fail(ec);
    conn_.heartbeat.on_write(detail::clock::now());
    do_write();
    if (close_after_write_ && !write_in_progress_) fail(error_);
  }

  friend class kincir::rabbitmq::Channel;

  RabbitMQConfig config_;
  strand_type strand_;
  asio::any_io_executor handler_executor_;
  asio::ip::tcp::resolver resolver_;
  asio::ip::tcp::socket socket_;
  asio::steady_timer deadline_;
  asio::steady_timer heartbeat_timer_;
  asio::steady_timer read_timer_;  // a batched read waits for its interval's end
  asio::steady_timer retry_timer_;
  amqp::ConnectionState conn_;
#if KINCIR_RABBITMQ_TLS
  std::unique_ptr<asio::ssl::context> tls_context_;
  std::optional<asio::ssl::stream<asio::ip::tcp::socket&>> tls_;  // per attempt, over socket_
#endif
  std::optional<amqp::HandshakeAlgo> handshake_;
  std::optional<amqp::CloseAlgo> close_;
  Phase phase_ = Phase::connecting;
  std::uint64_t attempt_ = 0;
  bool timed_out_ = false;
  std::error_code last_connect_error_;
  std::error_code error_;
  bool failed_ = false;
  bool clean_close_ = false;
  bool close_after_write_ = false;
  bool finalize_after_write_ = false;
  std::function<void(std::error_code)> open_done_;
  std::vector<std::function<void(std::error_code)>> close_waiters_;

  struct SecretWaiter {
    std::function<void(std::error_code)> done;
    std::unique_ptr<asio::steady_timer> timer;
  };
  std::deque<std::shared_ptr<SecretWaiter>> secret_waiters_;
  std::optional<std::string> secret_;  // the password given by update-secret, for reconnections

  // Recovery (strand).
  Backoff backoff_;
  std::uint64_t epoch_ = 0;
  bool ever_open_ = false;
  bool user_closed_ = false;
  bool recovering_ = false;
  bool in_outage_ = false;
  bool retry_pending_ = false;
  bool aborted_recovery_ = false;
  std::uint32_t outage_attempts_ = 0;
  detail::clock::time_point lost_at_{};
  std::vector<std::weak_ptr<ConnectionListener>> listeners_;

  std::vector<std::uint8_t> rbuf_;
  std::size_t rbegin_ = 0;
  std::size_t rend_ = 0;
  detail::clock::time_point batch_start_{};  // the current read-batching interval
  std::size_t batch_frames_ = 0;             // frames (and read weight) read in it
  std::size_t read_weight_ = 0;              // add_read_weight since the last read
  bool read_promptly_ = false;               // read_promptly since the last read

  std::vector<amqp::OutputBuffer> queued_;
  std::vector<amqp::OutputBuffer> writing_;
  std::vector<amqp::OutputBuffer> spares_;
  std::vector<Bytes> keep_queued_;
  std::vector<Bytes> keep_writing_;
  std::vector<asio::const_buffer> iov_;
  bool write_in_progress_ = false;

  std::vector<std::shared_ptr<Channel>> channels_;
  /// Ids the broker closed and not opened since: its frames sent before our close-ok are dropped.
  std::vector<bool> server_closed_;
  std::vector<std::shared_ptr<Channel>> dirty_;

  std::atomic<bool> open_{false};
  std::atomic<bool> blocked_{false};
  std::atomic<bool> recovering_flag_{false};
  mutable std::mutex status_mutex_;
  RecoveryStats stats_;
  std::error_code status_error_;
  std::string server_message_;
  std::string blocked_reason_;
  amqp::Tuning tuning_;
};

KINCIR_DECL void ConnectionCore::async_open_channel(
    ChannelEvents events, std::function<void(std::error_code, std::shared_ptr<Channel>)> done) {
  if (phase_ != Phase::open) return done(errc::connection_closed, nullptr);
  const std::size_t max = conn_.tuning.channel_max == 0 ? amqp::kMaxChannelId : conn_.tuning.channel_max;
  // An id the broker closed comes last: what it sent on it before our close-ok may still be on
  // the way, and would reach the new channel (a stale delivery before its open-ok).
  const auto closed_by_server = [this](std::size_t i) { return i < server_closed_.size() && server_closed_[i]; };
  std::size_t id = 1;
  while (id < channels_.size() && (channels_[id] || closed_by_server(id))) ++id;
  if (id > max) {
    id = 1;
    while (id < channels_.size() && channels_[id]) ++id;
  }
  if (id > max) return done(errc::too_many_channels, nullptr);
  if (id >= channels_.size()) channels_.resize(id + 1);
  if (closed_by_server(id)) server_closed_[id] = false;
  auto ch = std::make_shared<Channel>(shared_from_this(), static_cast<std::uint16_t>(id), conn_.tuning.frame_max,
                                      std::move(events));
  channels_[id] = ch;
  std::error_code ec;
  amqp::open_channel(ch->st_, ec);
  if (ec) {
    channels_[id].reset();
    return done(ec, nullptr);
  }
  auto call = std::make_shared<Channel::Call>();
  call->done = [ch, done = std::move(done)](std::error_code cec, amqp::Method&) {
    if (!cec) ch->open_.store(true, std::memory_order_release);
    done(cec, cec ? nullptr : ch);
  };
  ch->calls_.push_back(call);
  ch->arm_timer(call);
  ch->touch();
}

}  // namespace detail

// --- Channel, strand side ---

KINCIR_DECL void Channel::touch() {
  if (dirty_) return;
  dirty_ = true;
  core_->mark_dirty(*this);
}

KINCIR_DECL void Channel::keep(const Bytes& body) { core_->keep(body); }

KINCIR_DECL void Channel::arm_timer(const std::shared_ptr<Call>& call) {
  const auto timeout = core_->config().call_timeout;
  if (timeout.count() <= 0) return;
  call->timer = std::make_unique<asio::steady_timer>(core_->strand(), timeout);
  call->timer->async_wait(asio::bind_executor(
      core_->strand(), [weak = std::weak_ptr<Call>(call), self = shared_from_this()](std::error_code ec) {
        auto c = weak.lock();
        if (ec || !c || !c->done) return;
        auto done = std::move(c->done);
        c->done = nullptr;
        amqp::Method none;
        done(errc::call_timeout, none);
        // The reply may still come and would answer the wrong call: give the channel up.
        std::error_code ignored;
        if (self->st_.phase == amqp::ChannelPhase::open || self->st_.phase == amqp::ChannelPhase::opening) {
          self->open_.store(false, std::memory_order_release);
          amqp::close_channel(self->st_, ignored, 200, "call timed out");
          self->touch();
          self->core_->end_turn();
        }
      }));
}

template <class M>
void Channel::async_call(const M& m, Completion done) {
  std::error_code ec;
  amqp::send_method(st_, m, ec);
  if (ec) {
    amqp::Method none;
    return done(ec == errc::channel_closed && st_.error ? st_.error : ec, none);
  }
  touch();
  if (!m.expects_reply()) {
    amqp::Method none;
    return done({}, none);
  }
  auto call = std::make_shared<Call>();
  call->done = std::move(done);
  calls_.push_back(call);
  arm_timer(call);
}

KINCIR_DECL void Channel::async_close(std::function<void()> done) {
  if (st_.phase == amqp::ChannelPhase::closed || close_gave_up_) return done();
  close_waiters_.push_back(std::move(done));
  const auto timeout = core_->config().call_timeout;
  if (!close_timer_ && timeout.count() > 0) {
    // A broker that blocks the connection (a resource alarm) stops reading it: close-ok would
    // not come before the alarm clears, and unsubscribe() or a publisher's destructor would
    // hang until then.
    close_timer_ = std::make_unique<asio::steady_timer>(core_->strand(), timeout);
    close_timer_->async_wait(asio::bind_executor(core_->strand(), [self = shared_from_this()](std::error_code ec) {
      if (ec || self->st_.phase == amqp::ChannelPhase::closed) return;
      self->close_gave_up_ = true;
      auto waiters = std::move(self->close_waiters_);
      self->close_waiters_.clear();
      for (auto& w : waiters) w();
    }));
  }
  if (st_.phase == amqp::ChannelPhase::closing) return;
  std::error_code ec;
  open_.store(false, std::memory_order_release);
  amqp::close_channel(st_, ec);
  touch();
}

KINCIR_DECL void Channel::fail_calls(std::error_code ec) {
  auto calls = std::move(calls_);
  calls_.clear();
  for (auto& c : calls) {
    if (!c->done) continue;
    auto done = std::move(c->done);
    c->done = nullptr;
    if (c->timer) c->timer->cancel();
    amqp::Method none;
    done(ec, none);
  }
}

KINCIR_DECL void Channel::handle(const amqp::Action& a) {
  using Kind = amqp::Action::Kind;
  switch (a.kind) {
    case Kind::reply: {
      if (calls_.empty()) return;
      auto c = std::move(calls_.front());
      calls_.pop_front();
      if (c->timer) c->timer->cancel();
      if (c->done) {
        auto done = std::move(c->done);
        c->done = nullptr;
        done({}, st_.reply);
      }
      return;
    }
    case Kind::delivery:
      if (events_.on_delivery) events_.on_delivery(st_.delivery);
      return;
    case Kind::returned:
      if (events_.on_return) events_.on_return(st_.returned);
      return;
    case Kind::confirm:
      if (events_.on_confirm) events_.on_confirm(st_.settled, a.ec);
      return;
    case Kind::consumer_cancelled:
      if (events_.on_cancel) events_.on_cancel(st_.cancelled_consumer);
      return;
    case Kind::channel_closed: {
      open_.store(false, std::memory_order_release);
      const std::error_code why = a.ec ? a.ec : std::error_code(errc::channel_closed);
      {
        const std::lock_guard lock(mutex_);
        server_message_ = st_.diagnostics.server_message();
      }
      if (!st_.settled.empty() && events_.on_confirm)
        events_.on_confirm(st_.settled, core_->phase() == detail::ConnectionCore::Phase::closed
                                            ? std::error_code(errc::message_lost)
                                            : why);
      st_.settled.clear();
      fail_calls(why);
      // An error code with the connection open: the broker closed the channel (also when its
      // close crossed ours, which is harmless here).
      core_->release(*this, a.ec && core_->phase() == detail::ConnectionCore::Phase::open);
      if (events_.on_closed) events_.on_closed(a.ec);
      if (close_timer_) close_timer_->cancel();
      auto waiters = std::move(close_waiters_);
      close_waiters_.clear();
      for (auto& w : waiters) w();
      return;
    }
    case Kind::protocol_error: return core_->protocol_error(a.ec, "protocol error on a channel");
    default: return;
  }
}

// --- Channel, any thread ---

template <class M>
amqp::Method Channel::call(const M& m, std::error_code& ec) {
  auto waiter = std::make_shared<detail::Waiter<amqp::Method>>();
  asio::post(core_->strand(), [self = shared_from_this(), m, waiter] {
    self->async_call(m, [waiter](std::error_code cec, amqp::Method& reply) { waiter->set(cec, std::move(reply)); });
    self->core_->end_turn();
  });
  return waiter->wait(ec);
}

KINCIR_DECL void Channel::close(std::error_code& ec) {
  auto waiter = std::make_shared<detail::Waiter<int>>();
  asio::post(core_->strand(), [self = shared_from_this(), waiter] {
    self->async_close([weak = self->weak_from_this(), waiter] {
      const auto ch = weak.lock();
      waiter->set(!ch || ch->st_.phase == amqp::ChannelPhase::closed ? std::error_code() : errc::call_timeout, 0);
    });
    self->core_->end_turn();
  });
  waiter->wait(ec);
}

/// A connection to RabbitMQ: one socket, one I/O thread with one strand, one thread for user
/// handlers. Create it with `Connection::open`; share it (`std::shared_ptr`) between publishers
/// and subscribers, each of which uses channels of its own. Thread-safe.
///
/// The last reference may go inside one of its completion handlers or its `on_state` callback
/// (the handler thread is then joined by another thread), but not inside a `ChannelEvents`
/// callback of a raw channel (those run on the I/O thread, which the destructor joins).
class Connection {
 public:
  /// Connects to the first endpoint that answers and completes the handshake. Errors:
  /// `kincir::errc::invalid_argument` for a config that `RabbitMQConfig::validate` refuses (no
  /// thread is started), `errc::connect_timeout` or a socket error, `errc::handshake_timeout`,
  /// the server's reply code (`reply_code::access_refused` for a bad login: `server_message()`
  /// has its text), `errc::protocol_version_mismatch` ...
  static std::shared_ptr<Connection> open(const RabbitMQConfig& config, std::error_code& ec) {
    std::string ignored;
    return open_reporting(config, ec, ignored);
  }
  /// Throws `kincir::Error`; its text names the endpoints and includes the server's reason
  /// (never the password).
  static std::shared_ptr<Connection> open(const RabbitMQConfig& config) {
    std::error_code ec;
    std::string text;
    auto c = open_reporting(config, ec, text);
    if (ec) {
      std::string what = "RabbitMQ connection to " + config.to_string();
      if (!text.empty()) what += ": " + text;
      throw Error(ec, what);
    }
    return c;
  }
  /// `open(RabbitMQConfig::from_uri(uri))`.
  static std::shared_ptr<Connection> open(std::string_view uri) { return open(RabbitMQConfig::from_uri(uri)); }

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Closes (at most `close_timeout`) and joins the connection's threads. When the last
  /// reference goes inside one of the connection's own handlers (or its `on_state` callback),
  /// the handler thread cannot join itself: a thread of its own joins it once the handler returns.
  ~Connection() {
    std::error_code ignored;
    close(ignored);
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
    if (handlers_->get_executor().running_in_this_thread()) {
      std::thread([pool = std::move(handlers_)] { pool->join(); }).detach();
      return;
    }
    handlers_->join();
  }

  /// connection.close(200), waits for close-ok (at most `close_timeout`), drops the socket.
  /// Every channel closes; unconfirmed publishes are lost. Idempotent.
  void close(std::error_code& ec) {
    ec.clear();
    if (thread_.get_id() == std::this_thread::get_id()) return;
    auto waiter = std::make_shared<detail::Waiter<int>>();
    asio::post(core_->strand(),
               [core = core_, waiter] { core->close([waiter](std::error_code cec) { waiter->set(cec, 0); }); });
    waiter->wait(ec);
  }
  void close() {
    std::error_code ec;
    close(ec);
    throw_if(ec, "Connection::close");
  }

  [[nodiscard]] bool is_open() const noexcept { return core_->is_open(); }
  /// The broker sent connection.blocked (a memory or disk alarm) and not yet unblocked.
  [[nodiscard]] bool blocked() const noexcept { return core_->blocked(); }
  [[nodiscard]] std::string blocked_reason() const { return core_->blocked_reason(); }
  /// Why the connection closed (empty while open); while recovering, why it was lost.
  [[nodiscard]] std::error_code error() const { return core_->error(); }
  /// Lost and reconnecting (see `RecoveryConfig`): `is_open()` is false meanwhile.
  [[nodiscard]] bool is_recovering() const noexcept { return core_->is_recovering(); }
  /// How often the connection was lost, recovered, failed; reconnection attempts; downtimes.
  [[nodiscard]] RecoveryStats recovery_stats() const { return core_->recovery_stats(); }
  /// The server's text when it closed the connection.
  [[nodiscard]] std::string server_message() const { return core_->server_message(); }
  /// The negotiated channel_max, frame_max and heartbeat.
  [[nodiscard]] amqp::Tuning tuning() const { return core_->tuning(); }
  [[nodiscard]] const RabbitMQConfig& config() const noexcept { return core_->config(); }

  /// Replaces the credentials of the open connection (connection.update-secret: e.g. a refreshed
  /// OAuth 2 token as the password) and waits for update-secret-ok, at most `call_timeout`; later
  /// reconnections use the new secret. Errors: `connection_closed`, `call_timeout`; a broker that
  /// refuses the secret closes the connection (`error()` has its reply code). The secret never
  /// appears in errors or logs.
  void update_secret(std::string_view new_secret, std::string_view reason, std::error_code& ec) {
    auto waiter = std::make_shared<detail::Waiter<int>>();
    asio::post(core_->strand(), [core = core_, waiter, secret = std::string(new_secret), why = std::string(reason)] {
      core->async_update_secret(secret, why, [waiter](std::error_code uec) { waiter->set(uec, 0); });
    });
    waiter->wait(ec);
  }
  void update_secret(std::string_view new_secret, std::string_view reason = "kincir") {
    std::error_code ec;
    update_secret(new_secret, reason, ec);
    throw_if(ec, "Connection::update_secret");
  }

  /// Opens a channel (the lowest free id up to `channel_max`). Errors: `too_many_channels`,
  /// `connection_closed`, `call_timeout`.
  std::shared_ptr<Channel> open_channel(std::error_code& ec, ChannelEvents events = {}) {
    auto waiter = std::make_shared<detail::Waiter<std::shared_ptr<Channel>>>();
    asio::post(core_->strand(), [core = core_, waiter, events = std::move(events)]() mutable {
      core->async_open_channel(std::move(events), [waiter](std::error_code ec2, std::shared_ptr<Channel> ch) {
        waiter->set(ec2, std::move(ch));
      });
      core->end_turn();
    });
    return waiter->wait(ec);
  }
  std::shared_ptr<Channel> open_channel(ChannelEvents events = {}) {
    std::error_code ec;
    auto ch = open_channel(ec, std::move(events));
    throw_if(ec, "Connection::open_channel");
    return ch;
  }

  /// The executor of the I/O strand.
  [[nodiscard]] asio::any_io_executor executor() const { return core_->strand(); }
  /// Where completion handlers without an associated executor run (one thread).
  [[nodiscard]] asio::any_io_executor handler_executor() const { return core_->handler_executor(); }

  /// The strand-side core, for publishers and subscribers.
  [[nodiscard]] const std::shared_ptr<detail::ConnectionCore>& core() const noexcept { return core_; }

 private:
  explicit Connection(const RabbitMQConfig& config)
      : work_(asio::make_work_guard(io_)),
        core_(std::make_shared<detail::ConnectionCore>(io_, handlers_->get_executor(), config)),
        thread_([this] { io_.run(); }) {}

  static std::shared_ptr<Connection> open_reporting(const RabbitMQConfig& config, std::error_code& ec,
                                                    std::string& text) {
    ec = config.validate(&text);  // before any thread or socket
    if (ec) return nullptr;
    std::shared_ptr<Connection> c(new Connection(config));
    auto waiter = std::make_shared<detail::Waiter<int>>();
    asio::post(c->core_->strand(),
               [core = c->core_, waiter] { core->start([waiter](std::error_code oec) { waiter->set(oec, 0); }); });
    waiter->wait(ec);
    if (ec) {
      text = c->core_->server_message();
      return nullptr;
    }
    return c;
  }

  asio::io_context io_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::shared_ptr<asio::thread_pool> handlers_ = std::make_shared<asio::thread_pool>(1);
  std::shared_ptr<detail::ConnectionCore> core_;
  std::thread thread_;
};

}  // namespace kincir::rabbitmq
