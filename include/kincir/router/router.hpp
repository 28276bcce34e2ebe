/// @file
/// `kincir::Router`: runs named handlers (subscribe topic → handler → publish topic) over any
/// `kincir::Subscriber` / `kincir::Publisher` pair, acks after the outputs are published, nacks
/// on failure, and closes gracefully. See docs/router.md.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/concepts.hpp>
#include <kincir/core/error.hpp>
#include <kincir/log.hpp>
#include <kincir/router/detail/core.hpp>
#include <kincir/router/detail/runner.hpp>
#include <kincir/router/handler.hpp>
#include <kincir/router/options.hpp>
#include <kincir/router/router_handler.hpp>

#include <algorithm>     // std::min, std::any_of
#include <chrono>        // close deadlines
#include <cstddef>       // std::size_t
#include <exception>     // std::make_exception_ptr
#include <future>        // running()
#include <memory>        // std::unique_ptr
#include <mutex>         // router state
#include <stop_token>    // run(stop_token)
#include <string>        // names, topics
#include <system_error>  // std::error_code
#include <type_traits>   // std::remove_reference_t
#include <utility>       // std::move, std::forward
#include <vector>        // handlers, middleware

namespace kincir {

/// Runs handlers. For each delivery a handler's worker:
/// 1. receives it (`receive_with_ack_for` on an `AckSubscriber`, else `receive_for`);
/// 2. calls the middleware chain (router-level outermost, then the handler's own, first added
///    outermost) around the handler; an exception never escapes: it becomes a failure;
/// 3. on success publishes the returned messages to the publish topic as one batch, and only
///    then acks; on failure (or when publishing fails) nacks, with `requeue_on_failure`.
///
/// With an `AckSubscriber` nothing is lost: every delivery is acked after its outputs were
/// published, or nacked. A plain `Subscriber` cannot give a message back: a failed one is
/// counted in `HandlerStats::lost` and logged.
///
/// Lifecycle: add handlers and middleware, then `run()` (blocks) on some thread; `running()`
/// becomes ready once every handler is subscribed. `close(timeout)` — or the stop token given
/// to `run`, or every subscription ending — stops taking messages, lets the ones in progress
/// finish (their outputs are published and they are acked), and after `timeout` nacks with
/// requeue whatever is still in progress (its outputs, if it ever returns, are dropped), then
/// leaves every subscription (`unsubscribe()`, where the subscriber type has one): what a
/// subscriber still holds goes back to the broker. `run` returns once every worker has finished.
/// A router runs once.
///
/// Thread safety: `close`, `running`, `is_running` and handler `stats` from any thread (also from
/// inside a handler); `add_handler`/`add_middleware` before `run`. Subscribers and publishers
/// passed as lvalues must outlive the router; rvalues are moved in and owned.
class Router {
 public:
  explicit Router(RouterConfig config = {}) : config_(config) {
    if (config_.logger != nullptr) core_.logger = config_.logger;
    if (config_.poll_interval <= std::chrono::milliseconds::zero())
      config_.poll_interval = std::chrono::milliseconds(1);
    if (config_.close_timeout < std::chrono::milliseconds::zero()) config_.close_timeout = {};
    running_future_ = running_promise_.get_future().share();
  }

  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  /// Closes (`close()`) and waits until `run` has returned: destroy a router only after the
  /// thread running it can finish.
  ~Router() {
    close();
    std::unique_lock lock(core_.mutex);
    core_.cv.wait(lock, [&] { return state_ == State::idle || state_ == State::closed; });
  }

  /// Adds a handler: messages from `subscribe_topic` go to `handler`; the messages it returns are
  /// published to `publish_topic` through `publisher`, then the input is acked. `handler` is any
  /// callable `make_handler` accepts. Errors (`kincir::Error`, `errc::invalid_argument`): empty
  /// or duplicate name, empty topic, `concurrency == 0`, a group with a subscriber that has no
  /// groups, the router already running.
  template <class S, class P, class F>
  RouterHandler& add_handler(std::string name, std::string subscribe_topic, S&& subscriber, std::string publish_topic,
                             P&& publisher, F handler, HandlerOptions options = {}) {
    static_assert(Subscriber<std::remove_reference_t<S>>, "the subscriber must model kincir::Subscriber");
    static_assert(Publisher<std::remove_reference_t<P>>, "the publisher must model kincir::Publisher");
    if (publish_topic.empty()) invalid("add_handler: empty publish topic");
    check_new_handler<S>(name, subscribe_topic, options);
    return emplace(std::make_unique<detail::router::Runner<S, P>>(
        std::move(name), std::move(subscribe_topic), std::forward<S>(subscriber), std::move(publish_topic),
        std::forward<P>(publisher), make_handler(std::move(handler)), std::move(options)));
  }

  /// Adds a handler that publishes nothing (what its function returns is ignored). Errors as for
  /// `add_handler`.
  template <class S, class F>
  RouterHandler& add_consumer_handler(std::string name, std::string topic, S&& subscriber, F handler,
                                      HandlerOptions options = {}) {
    static_assert(Subscriber<std::remove_reference_t<S>>, "the subscriber must model kincir::Subscriber");
    check_new_handler<S>(name, topic, options);
    HandlerFunc inner = make_handler(std::move(handler));
    HandlerFunc consumer = [inner = std::move(inner)](Message& m, const HandlerContext& ctx) {
      HandlerResult r = inner(m, ctx);
      if (r.ok()) r.messages().clear();
      return r;
    };
    return emplace(std::make_unique<detail::router::Runner<S, detail::router::NoPublisher>>(
        std::move(name), std::move(topic), std::forward<S>(subscriber), std::string(), detail::router::NoPublisher{},
        std::move(consumer), std::move(options)));
  }

  /// Adds middleware around every handler, outside the handlers' own; the first added is the
  /// outermost. Before `run`.
  Router& add_middleware(Middleware middleware) {
    if (!middleware) invalid("add_middleware: empty middleware");
    const std::lock_guard lock(core_.mutex);
    if (state_ != State::idle) invalid("add_middleware: the router already ran");
    middleware_.push_back(std::move(middleware));
    return *this;
  }

  /// Subscribes every handler, starts their workers, and processes until `close`, a stop request
  /// on `stop`, or the end of every subscription (a receive error equivalent to
  /// `receive_condition::ended`: the broker shut down, the connection closed for good ...); then
  /// closes gracefully (see the class) and
  /// returns. `ec`: `invalid_argument` (no handlers, already ran or closed) or the error a
  /// subscription failed with (the router is then closed and nothing was received).
  void run(const std::stop_token& stop, std::error_code& ec) {
    ec.clear();
    {
      const std::lock_guard lock(core_.mutex);
      if (state_ != State::idle) {
        ec = make_error_code(errc::invalid_argument);
        core_.logger->log(LogLevel::error, "Router::run: the router already ran or was closed");
        return;
      }
      if (handlers_.empty()) {
        ec = make_error_code(errc::invalid_argument);
        core_.logger->log(LogLevel::error, "Router::run: no handlers");
        state_ = State::closed;
        fail_running(ec);
        core_.cv.notify_all();
        return;
      }
      state_ = State::starting;
    }
    try {
      for (auto& h : handlers_) h->build_chain(middleware_);
    } catch (const std::system_error& e) {
      ec = e.code();
    } catch (...) {
      ec = make_error_code(handler_errc::exception);
    }
    if (ec) {
      core_.logger->log(LogLevel::error, "a middleware failed to wrap a handler; router not started",
                        {{"error", ec.message()}});
      const std::lock_guard lock(core_.mutex);
      state_ = State::closed;
      drained_ = true;
      fail_running(ec);
      core_.cv.notify_all();
      return;
    }
    for (std::size_t i = 0; i < handlers_.size(); ++i) {
      auto& h = handlers_[i];
      h->subscribe(ec);
      if (ec) {
        core_.logger->log(LogLevel::error, "subscribe failed; router not started",
                          {{"handler", h->name()}, {"topic", h->subscribe_topic()}, {"error", ec.message()}});
        for (std::size_t j = 0; j < i; ++j) handlers_[j]->release();  // the ones subscribed before
        const std::lock_guard lock(core_.mutex);
        state_ = State::closed;
        drained_ = true;
        fail_running(ec);
        core_.cv.notify_all();
        return;
      }
    }
    {
      const std::lock_guard lock(core_.mutex);
      core_.live_handlers = handlers_.size();
      for (auto& h : handlers_) h->start(core_, config_);
      state_ = State::running;
    }
    running_promise_.set_value();
    core_.logger->log(LogLevel::info, "router running", {{"handlers", handlers_.size()}});

    const std::stop_callback on_stop(stop, [this] { request_close(config_.close_timeout); });
    std::chrono::steady_clock::time_point deadline;
    {
      std::unique_lock lock(core_.mutex);
      core_.cv.wait(lock, [&] { return close_requested_ || core_.live_handlers == 0; });
      state_ = State::stopping;
      deadline = close_requested_ ? close_deadline_ : std::chrono::steady_clock::now() + config_.close_timeout;
    }
    core_.logger->log(LogLevel::info, "router closing", {{"in_flight", core_.in_flight.load()}});
    core_.stopping.store(true);
    for (auto& h : handlers_) h->stop_taking();
    for (auto& h : handlers_) h->quiesce_receive();
    std::size_t abandoned = 0;
    bool drained = false;
    {
      std::unique_lock lock(core_.mutex);
      drained = core_.cv.wait_until(lock, deadline, [&] { return core_.in_flight.load() == 0; });
    }
    if (!drained) {
      for (auto& h : handlers_) abandoned += h->abandon_in_flight();
    }
    // Every delivery is settled (or nacked above): leave the subscriptions, so that what a
    // subscriber still holds (a RabbitMQ consumer's prefetch) goes back to the broker for the
    // other consumers — before `close` returns.
    for (auto& h : handlers_) h->release();
    {
      const std::lock_guard lock(core_.mutex);
      drained_ = true;
      abandoned_ = abandoned;
      core_.cv.notify_all();
    }
    for (auto& h : handlers_) h->join();
    core_.logger->log(LogLevel::info, "router closed", {{"abandoned", abandoned}});
    const std::lock_guard lock(core_.mutex);
    state_ = State::closed;
    core_.cv.notify_all();
  }

  /// Throws `kincir::Error` where the `ec` overload reports an error.
  void run(const std::stop_token& stop = {}) {
    std::error_code ec;
    run(stop, ec);
    throw_if(ec, "Router::run");
  }

  /// Ready once every handler is subscribed and its workers started; holds a `kincir::Error` if
  /// `run` failed to start (or the router was closed before it ran).
  [[nodiscard]] std::shared_future<void> running() const { return running_future_; }

  /// True between the start of processing and the beginning of the close.
  [[nodiscard]] bool is_running() const {
    const std::lock_guard lock(core_.mutex);
    return state_ == State::running;
  }

  /// True once `run` has returned (or the router was closed before running).
  [[nodiscard]] bool is_closed() const {
    const std::lock_guard lock(core_.mutex);
    return state_ == State::closed;
  }

  /// Stops taking messages and waits for the ones in progress, at most `timeout`; after it,
  /// what is still in progress is nacked with requeue. Then every handler's subscriber leaves its
  /// subscription (`unsubscribe()`, where its type has one), so that deliveries it still holds go
  /// back to the broker; subscribe it again to reuse it. Returns true when everything in
  /// progress finished (nothing was nacked by the close). Called from inside a handler, it
  /// requests the close and returns false at once (the handler's own message cannot finish
  /// while it waits). Before `run`: the router will not run. Idempotent; a shorter timeout
  /// given later wins.
  template <class Rep, class Period>
  bool close(std::chrono::duration<Rep, Period> timeout) {
    const auto t = std::chrono::duration_cast<std::chrono::milliseconds>(timeout);
    std::unique_lock lock(core_.mutex);
    if (state_ == State::idle) {
      state_ = State::closed;
      fail_running(make_error_code(errc::closed));
      core_.cv.notify_all();
      return true;
    }
    if (state_ == State::closed) return abandoned_ == 0;
    request_close_locked(t);
    if (detail::router::tls_current_router == &core_) return false;
    core_.cv.wait(lock, [&] { return drained_; });
    return abandoned_ == 0;
  }
  bool close() { return close(config_.close_timeout); }

  [[nodiscard]] Logger& logger() const noexcept { return *core_.logger; }
  [[nodiscard]] const RouterConfig& config() const noexcept { return config_; }

  /// The handler named `name`, or null.
  [[nodiscard]] RouterHandler* handler(std::string_view name) const noexcept {
    for (const auto& h : handlers_) {
      if (h->name() == name) return h.get();
    }
    return nullptr;
  }

 private:
  enum class State { idle, starting, running, stopping, closed };

  KINCIR_COLD static void invalid(const char* what) { throw_error(make_error_code(errc::invalid_argument), what); }

  template <class S>
  void check_new_handler(const std::string& name, const std::string& topic, const HandlerOptions& options) {
    if (name.empty()) invalid("add_handler: empty handler name");
    if (topic.empty()) invalid("add_handler: empty subscribe topic");
    if (options.concurrency == 0) invalid("add_handler: concurrency must be at least 1");
    if constexpr (!requires(std::remove_reference_t<S> & s, std::error_code & e) { s.subscribe(topic, topic, e); }) {
      if (!options.group.empty()) invalid("add_handler: this subscriber type has no consumer groups");
    }
    const std::lock_guard lock(core_.mutex);
    if (state_ != State::idle) invalid("add_handler: the router already ran");
    if (handler(name) != nullptr) invalid("add_handler: duplicate handler name");
  }

  RouterHandler& emplace(std::unique_ptr<RouterHandler> h) {
    const std::lock_guard lock(core_.mutex);
    handlers_.push_back(std::move(h));
    return *handlers_.back();
  }

  void fail_running(const std::error_code& ec) {
    if (running_failed_) return;
    running_failed_ = true;
    running_promise_.set_exception(std::make_exception_ptr(Error(ec, "Router::run")));
  }

  void request_close(std::chrono::milliseconds timeout) {
    const std::lock_guard lock(core_.mutex);
    request_close_locked(timeout);
  }

  void request_close_locked(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    close_deadline_ = close_requested_ ? std::min(close_deadline_, deadline) : deadline;
    close_requested_ = true;
    core_.cv.notify_all();
  }

  RouterConfig config_;
  mutable detail::router::RouterCore core_;
  std::vector<std::unique_ptr<RouterHandler>> handlers_;
  std::vector<Middleware> middleware_;

  // Under core_.mutex:
  State state_ = State::idle;
  bool close_requested_ = false;
  std::chrono::steady_clock::time_point close_deadline_{};
  bool drained_ = false;
  std::size_t abandoned_ = 0;
  bool running_failed_ = false;

  std::promise<void> running_promise_;
  std::shared_future<void> running_future_;
};

}  // namespace kincir
