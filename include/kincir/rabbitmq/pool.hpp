/// @file
/// `kincir::rabbitmq::RabbitMQConnectionPool`: at most N publishers, each on a connection of its
/// own, handed out as RAII `PooledPublisher`s that go back to the pool when destroyed.
#pragma once

#include <kincir/config.hpp>

#include <kincir/core/error.hpp>           // kincir::errc::timeout, operation_aborted, Error
#include <kincir/rabbitmq/config.hpp>      // RabbitMQConfig
#include <kincir/rabbitmq/connection.hpp>  // Connection
#include <kincir/rabbitmq/publisher.hpp>   // RabbitMQPublisher

#include <asio/associated_executor.hpp>  // the handler's executor
#include <asio/async_result.hpp>         // asio::async_initiate
#include <asio/executor_work_guard.hpp>  // keeps the handler's executor alive
#include <asio/post.hpp>                 // asio::post
#include <asio/steady_timer.hpp>         // deadlines of asynchronous waits
#include <asio/thread_pool.hpp>          // where connections are opened for asynchronous calls

#include <chrono>              // acquire deadlines
#include <condition_variable>  // synchronous waits
#include <cstddef>             // std::size_t
#include <deque>               // idle publishers, waiters
#include <functional>          // type-erased asynchronous completions
#include <memory>              // shared state, publishers
#include <mutex>               // the pool's state
#include <string>              // error text
#include <string_view>         // URIs
#include <system_error>        // std::error_code
#include <type_traits>         // token constraint
#include <utility>             // std::move

namespace kincir::rabbitmq {

class PooledPublisher;

namespace detail {

/// What the pool and its outstanding `PooledPublisher`s share.
class PoolState : public std::enable_shared_from_this<PoolState> {
 public:
  /// A caller waiting for a permit. Granted under the mutex; a synchronous waiter then takes a
  /// publisher itself, an asynchronous one has it taken on the pool's thread.
  struct Waiter {
    bool granted = false;
    bool abandoned = false;
    std::condition_variable cv;
    std::function<void(std::error_code)> on_grant;  // asynchronous waiters
    std::unique_ptr<asio::steady_timer> timer;
  };

  PoolState(RabbitMQConfig config, std::size_t max_connections, asio::any_io_executor executor)
      : config_(std::move(config)), max_(max_connections), executor_(std::move(executor)), permits_(max_connections) {}

  [[nodiscard]] const RabbitMQConfig& config() const noexcept { return config_; }
  [[nodiscard]] std::size_t max_connections() const noexcept { return max_; }
  [[nodiscard]] const asio::any_io_executor& executor() const noexcept { return executor_; }

  [[nodiscard]] std::size_t idle() {
    const std::lock_guard lock(mutex_);
    return idle_.size();
  }
  [[nodiscard]] std::size_t in_use() {
    const std::lock_guard lock(mutex_);
    return max_ - permits_ - granted_pending_;
  }

  /// Takes a permit within `timeout` (synchronous). Errors: `kincir::errc::timeout`,
  /// `kincir::errc::closed`.
  void acquire(std::chrono::steady_clock::duration timeout, std::error_code& ec) {
    std::unique_lock lock(mutex_);
    if (closed_) {
      ec = kincir::errc::closed;
      return;
    }
    if (permits_ > 0 && waiters_.empty()) {
      --permits_;
      return;
    }
    auto w = std::make_shared<Waiter>();
    waiters_.push_back(w);
    const bool granted = w->cv.wait_for(lock, timeout, [&w, this] { return w->granted || closed_; });
    if (granted && w->granted) {
      --granted_pending_;
      return;
    }
    erase_waiter(w);
    ec = closed_ ? std::error_code(kincir::errc::closed) : std::error_code(kincir::errc::timeout);
  }

  /// Takes a permit asynchronously: `on_grant({})` once one is ours, or `on_grant(error)` at the
  /// deadline or when the pool closes. `on_grant` runs on the pool's thread, never inside this call.
  void async_acquire(std::chrono::steady_clock::duration timeout, std::function<void(std::error_code)> on_grant) {
    auto w = std::make_shared<Waiter>();
    w->on_grant = std::move(on_grant);
    const std::lock_guard lock(mutex_);
    if (closed_) {
      asio::post(executor_, [w] { w->on_grant(kincir::errc::closed); });
      return;
    }
    if (permits_ > 0 && waiters_.empty()) {
      --permits_;
      asio::post(executor_, [w] { w->on_grant({}); });
      return;
    }
    waiters_.push_back(w);
    w->timer = std::make_unique<asio::steady_timer>(executor_, timeout);
    w->timer->async_wait([self = shared_from_this(), w](std::error_code ec) {
      if (ec) return;
      {
        const std::lock_guard inner(self->mutex_);
        if (w->granted) return;
        self->erase_waiter(w);
      }
      w->on_grant(kincir::errc::timeout);
    });
  }

  /// A healthy idle publisher, or nullptr (then the caller opens a new one). Broken ones (their
  /// connection closed while idle) are dropped here.
  std::unique_ptr<RabbitMQPublisher> take_idle() {
    std::deque<std::unique_ptr<RabbitMQPublisher>> broken;
    std::unique_ptr<RabbitMQPublisher> p;
    {
      const std::lock_guard lock(mutex_);
      while (!idle_.empty()) {
        auto candidate = std::move(idle_.front());
        idle_.pop_front();
        if (usable(*candidate)) {
          p = std::move(candidate);
          break;
        }
        broken.push_back(std::move(candidate));
      }
    }
    return p;  // `broken` closes outside the lock
  }

  /// Open, or lost and being recovered (its publishes wait in its outage buffer meanwhile).
  static bool usable(const RabbitMQPublisher& p) noexcept {
    return p.connection()->is_open() || p.connection()->is_recovering();
  }

  /// Opens a publisher on a new connection (blocking: at most connect + handshake timeouts).
  std::unique_ptr<RabbitMQPublisher> open(std::error_code& ec) {
    auto conn = Connection::open(config_, ec);
    if (ec) return nullptr;
    return std::make_unique<RabbitMQPublisher>(std::move(conn));
  }

  /// A permit holder's publisher comes back (or not, if broken or null); the permit goes to the
  /// first waiter, else back to the pool.
  void release(std::unique_ptr<RabbitMQPublisher> p) {
    std::shared_ptr<Waiter> next;
    {
      const std::lock_guard lock(mutex_);
      if (p && !closed_ && usable(*p)) idle_.push_back(std::move(p));
      if (!waiters_.empty()) {
        next = std::move(waiters_.front());
        waiters_.pop_front();
        next->granted = true;
        if (!next->on_grant) ++granted_pending_;
      } else {
        ++permits_;
      }
    }
    // `p`, if still ours (broken or the pool closed), closes its connection here, unlocked.
    if (!next) return;
    if (!next->on_grant) return next->cv.notify_all();
    // The timer belongs to the pool's thread: cancel it there (its handler sees `granted`).
    asio::post(executor_, [next] {
      next->timer->cancel();
      next->on_grant({});
    });
  }

  /// Fails every waiter with `kincir::errc::closed`, drops the idle publishers; publishers still
  /// handed out are dropped when they come back.
  void close() {
    std::deque<std::shared_ptr<Waiter>> waiters;
    std::deque<std::unique_ptr<RabbitMQPublisher>> idle;
    {
      const std::lock_guard lock(mutex_);
      if (closed_) return;
      closed_ = true;
      waiters.swap(waiters_);
      idle.swap(idle_);
    }
    for (auto& w : waiters) {
      if (!w->on_grant) {
        w->cv.notify_all();
        continue;
      }
      asio::post(executor_, [w] {
        w->timer->cancel();
        w->on_grant(kincir::errc::closed);
      });
    }
  }

 private:
  void erase_waiter(const std::shared_ptr<Waiter>& w) {
    for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
      if (*it == w) {
        waiters_.erase(it);
        return;
      }
    }
  }

  RabbitMQConfig config_;
  std::size_t max_;
  asio::any_io_executor executor_;
  std::mutex mutex_;
  std::size_t permits_;
  std::size_t granted_pending_ = 0;  // granted to a synchronous waiter that has not woken yet
  bool closed_ = false;
  std::deque<std::unique_ptr<RabbitMQPublisher>> idle_;
  std::deque<std::shared_ptr<Waiter>> waiters_;
};

}  // namespace detail

/// A publisher borrowed from a `RabbitMQConnectionPool`; destroying it (or `reset()`) gives it
/// back. A publisher whose connection closed is not given back: the pool opens a new one. Use it
/// from one place at a time (the publisher itself is thread-safe). Move-only.
class PooledPublisher {
 public:
  PooledPublisher() = default;
  PooledPublisher(PooledPublisher&& other) noexcept = default;
  PooledPublisher& operator=(PooledPublisher&& other) noexcept {
    if (this != &other) {
      reset();
      pool_ = std::move(other.pool_);
      publisher_ = std::move(other.publisher_);
    }
    return *this;
  }
  PooledPublisher(const PooledPublisher&) = delete;
  PooledPublisher& operator=(const PooledPublisher&) = delete;
  ~PooledPublisher() { reset(); }

  /// The publisher (the guide's `get()`). Precondition: not empty.
  [[nodiscard]] RabbitMQPublisher& get() const noexcept { return *publisher_; }
  RabbitMQPublisher* operator->() const noexcept { return publisher_.get(); }
  RabbitMQPublisher& operator*() const noexcept { return *publisher_; }
  [[nodiscard]] explicit operator bool() const noexcept { return publisher_ != nullptr; }

  /// Gives the publisher back to its pool now.
  void reset() {
    if (auto pool = std::move(pool_)) pool->release(std::move(publisher_));
    publisher_.reset();
  }

 private:
  friend class RabbitMQConnectionPool;
  PooledPublisher(std::shared_ptr<detail::PoolState> pool, std::unique_ptr<RabbitMQPublisher> p)
      : pool_(std::move(pool)), publisher_(std::move(p)) {}

  std::shared_ptr<detail::PoolState> pool_;
  std::unique_ptr<RabbitMQPublisher> publisher_;
};

/// At most `max_connections` publishers, each with a connection of its own, opened on demand
/// and reused (the performance guide's pool). `get_publisher()` waits for a free one — at most
/// `acquire_timeout`, then `kincir::errc::timeout` — and hands it out as a `PooledPublisher`
/// that returns it when destroyed. A publisher whose connection closed is never handed out again.
///
/// Thread-safe. `PooledPublisher`s may outlive the pool (they are then closed instead of
/// returned); destroy the pool outside its own completion handlers.
class RabbitMQConnectionPool {
 public:
  static constexpr std::chrono::milliseconds kDefaultAcquireTimeout{30000};

  /// `uri` as for `RabbitMQConfig::from_uri` (a bad URI throws `kincir::Error`).
  RabbitMQConnectionPool(std::string_view uri, std::size_t max_connections,
                         std::chrono::milliseconds acquire_timeout = kDefaultAcquireTimeout)
      : RabbitMQConnectionPool(RabbitMQConfig::from_uri(uri), max_connections, acquire_timeout) {}
  RabbitMQConnectionPool(RabbitMQConfig config, std::size_t max_connections,
                         std::chrono::milliseconds acquire_timeout = kDefaultAcquireTimeout)
      : acquire_timeout_(acquire_timeout),
        state_(std::make_shared<detail::PoolState>(std::move(config), max_connections == 0 ? 1 : max_connections,
                                                   thread_.get_executor())) {}

  RabbitMQConnectionPool(const RabbitMQConnectionPool&) = delete;
  RabbitMQConnectionPool& operator=(const RabbitMQConnectionPool&) = delete;

  /// Fails pending `get_publisher` calls with `kincir::errc::closed` and closes idle connections.
  ~RabbitMQConnectionPool() {
    state_->close();
    thread_.join();
  }

  /// A publisher: an idle one, or a new one on a new connection while fewer than
  /// `max_connections` are out; otherwise waits until one comes back, at most
  /// `acquire_timeout`. Errors: `kincir::errc::timeout` (all in use until the deadline), the
  /// connection's error (`Connection::open`), `kincir::errc::closed`.
  PooledPublisher get_publisher(std::error_code& ec) { return get_publisher_for(acquire_timeout_, ec); }
  /// Throws `kincir::Error` (the text names the pool's size and deadline, never the password).
  PooledPublisher get_publisher() {
    std::error_code ec;
    auto p = get_publisher(ec);
    if (ec) throw Error(ec, describe(ec, acquire_timeout_));
    return p;
  }
  /// As `get_publisher(ec)`, waiting at most `timeout`.
  template <class Rep, class Period>
  PooledPublisher get_publisher_for(std::chrono::duration<Rep, Period> timeout, std::error_code& ec) {
    ec.clear();
    state_->acquire(std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout), ec);
    if (ec) return {};
    return obtain(ec);
  }

  /// Asynchronously: completion signature `void(std::error_code, PooledPublisher)`, errors as
  /// for `get_publisher(ec)` (the deadline is `acquire_timeout`). Connections are opened on the
  /// pool's own thread; the handler runs on its associated executor (the pool's thread if it
  /// has none), never inside this call.
  template <class CompletionToken>
  requires(!std::is_same_v<std::remove_cvref_t<CompletionToken>, std::error_code>) auto get_publisher(
      CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(std::error_code, PooledPublisher)>(
        [this](auto handler) {
          auto executor = asio::get_associated_executor(handler, thread_.get_executor());
          auto work = asio::make_work_guard(executor);
          auto op = std::make_shared<Pending<decltype(handler), decltype(work)>>(std::move(handler), std::move(work));
          state_->async_acquire(acquire_timeout_, [op, state = state_](std::error_code ec) {
            PooledPublisher p;
            if (!ec) p = obtain(state, ec);
            op->complete(ec, std::move(p));
          });
        },
        token);
  }

  [[nodiscard]] std::size_t max_connections() const noexcept { return state_->max_connections(); }
  /// Publishers waiting in the pool (connected, not handed out).
  [[nodiscard]] std::size_t idle() const { return state_->idle(); }
  /// Publishers handed out now.
  [[nodiscard]] std::size_t in_use() const { return state_->in_use(); }
  [[nodiscard]] std::chrono::milliseconds acquire_timeout() const noexcept { return acquire_timeout_; }
  [[nodiscard]] const RabbitMQConfig& config() const noexcept { return state_->config(); }

 private:
  template <class Handler, class Work>
  struct Pending {
    Pending(Handler h, Work w) : handler(std::move(h)), work(std::move(w)) {}
    void complete(std::error_code ec, PooledPublisher p) {
      auto ex = work.get_executor();
      asio::post(ex, [h = std::move(handler), ec, p = std::move(p)]() mutable { std::move(h)(ec, std::move(p)); });
      work.reset();
    }
    Handler handler;
    Work work;
  };

  /// With a permit held: an idle publisher or a new one; on failure the permit goes back.
  static PooledPublisher obtain(const std::shared_ptr<detail::PoolState>& state, std::error_code& ec) {
    auto p = state->take_idle();
    if (!p) p = state->open(ec);
    if (ec) {
      state->release(nullptr);
      return {};
    }
    return PooledPublisher(state, std::move(p));
  }
  PooledPublisher obtain(std::error_code& ec) { return obtain(state_, ec); }

  std::string describe(std::error_code ec, std::chrono::milliseconds timeout) const {
    if (ec == kincir::errc::timeout)
      return "RabbitMQConnectionPool::get_publisher: all " + std::to_string(max_connections()) +
             " publishers stayed in use for " + std::to_string(timeout.count()) + " ms";
    return "RabbitMQConnectionPool::get_publisher (" + config().to_string() + ")";
  }

  std::chrono::milliseconds acquire_timeout_;
  asio::thread_pool thread_{1};
  std::shared_ptr<detail::PoolState> state_;
};

}  // namespace kincir::rabbitmq
