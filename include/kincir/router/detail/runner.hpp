/// @file
/// Internal: `Runner<S, P>`, a router handler over a concrete subscriber `S` and publisher `P`
/// (each held by reference when given as an lvalue, owned when given as an rvalue).
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/concepts.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>
#include <kincir/log.hpp>
#include <kincir/router/detail/core.hpp>
#include <kincir/router/handler.hpp>
#include <kincir/router/options.hpp>
#include <kincir/router/router_handler.hpp>

#include <atomic>        // stop flag
#include <chrono>        // receive timeouts
#include <cstddef>       // std::size_t
#include <cstdint>       // delivery counts
#include <exception>     // exceptions from subscribers
#include <mutex>         // receive serialisation, slots
#include <optional>      // receive results
#include <stop_token>    // the handlers' stop token
#include <string>        // names
#include <system_error>  // std::error_code
#include <thread>        // workers
#include <type_traits>   // std::remove_reference_t
#include <utility>       // std::move, std::forward
#include <vector>        // workers, slots, outputs

namespace kincir::detail::router {

/// The publisher of a consumer handler: there is none.
struct NoPublisher {};

struct NoHandle {};

template <class S>
struct HandleOf {
  using type = NoHandle;
};
template <AckSubscriber S>
struct HandleOf<S> {
  using type = typename S::handle_type;
};

/// Errors after which a subscription delivers nothing more (see `kincir::receive_condition`).
inline bool is_terminal_receive_error(const std::error_code& ec) noexcept { return ec == receive_condition::ended; }

/// Whether `S` can leave its subscription (`unsubscribe()`; not part of the `Subscriber` concept).
template <class S>
concept Unsubscribable = requires(S& s) {
  s.unsubscribe();
};

template <class S, class P>
class Runner final : public RouterHandler {
 public:
  using subscriber_type = std::remove_reference_t<S>;
  using publisher_type = std::remove_reference_t<P>;
  static constexpr bool kAcks = AckSubscriber<subscriber_type>;
  static constexpr bool kPublishes = !std::is_same_v<publisher_type, NoPublisher>;
  using handle_type = typename HandleOf<subscriber_type>::type;

  Runner(std::string name, std::string subscribe_topic, S&& subscriber, std::string publish_topic, P&& publisher,
         HandlerFunc handler, HandlerOptions options)
      : RouterHandler(std::move(name), std::move(subscribe_topic), std::move(publish_topic), std::move(options)),
        subscriber_(std::forward<S>(subscriber)),
        publisher_(std::forward<P>(publisher)),
        handler_(std::move(handler)) {}

  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;
  ~Runner() override { join(); }

 protected:
  void subscribe(std::error_code& ec) override {
    ec.clear();
    try {
      if (options_.group.empty()) {
        subscriber_.subscribe(subscribe_topic_, ec);
      } else {
        if constexpr (requires(std::error_code & e) { subscriber_.subscribe(subscribe_topic_, options_.group, e); }) {
          subscriber_.subscribe(subscribe_topic_, options_.group, ec);
        } else {
          ec = make_error_code(errc::invalid_argument);  // checked by add_handler already
        }
      }
    } catch (const std::system_error& e) {
      ec = e.code();
    }
  }

  void build_chain(const std::vector<Middleware>& router_middleware) override {
    started_ = true;
    // The first middleware added is the outermost: wrap from the innermost outwards.
    HandlerFunc chain = handler_;
    for (auto it = middleware_.rbegin(); it != middleware_.rend(); ++it) chain = (*it)(std::move(chain));
    for (auto it = router_middleware.rbegin(); it != router_middleware.rend(); ++it) chain = (*it)(std::move(chain));
    if (!chain) throw_error(make_error_code(errc::invalid_argument), "Router: a middleware returned an empty handler");
    chain_ = std::move(chain);
  }

  void start(RouterCore& core, const RouterConfig& config) override {
    core_ = &core;
    config_ = config;
    slots_ = std::vector<Slot>(options_.concurrency);
    workers_.reserve(options_.concurrency);
    for (std::size_t i = 0; i < options_.concurrency; ++i) {
      workers_.emplace_back([this, i] { worker(i); });
    }
  }

  void stop_taking() noexcept override {
    taking_.store(false);
    stop_.request_stop();
  }

  void quiesce_receive() override { const std::lock_guard lock(receive_mutex_); }

  void release() noexcept override {
    if constexpr (Unsubscribable<subscriber_type>) {
      try {
        subscriber_.unsubscribe();
      } catch (const std::exception& e) {
        core_logger().log(LogLevel::error, "unsubscribe failed",
                          {{"handler", name_}, {"topic", subscribe_topic_}, {"error", e.what()}});
      } catch (...) {
        core_logger().log(LogLevel::error, "unsubscribe failed", {{"handler", name_}, {"topic", subscribe_topic_}});
      }
    }
  }

  std::size_t abandon_in_flight() override {
    std::vector<handle_type> handles;
    {
      const std::lock_guard lock(slots_mutex_);
      for (auto& slot : slots_) {
        if (slot.active && !slot.settled) {
          slot.settled = true;
          handles.push_back(slot.handle);
        }
      }
    }
    for (const auto& h : handles) {
      abandoned_.fetch_add(1, std::memory_order_relaxed);
      core_->logger->log(LogLevel::warn, "close timed out: message still in progress, nacked for redelivery",
                         {{"handler", name_}, {"topic", subscribe_topic_}});
      if constexpr (kAcks) {
        std::error_code ec;
        nack_noexcept(h, /*requeue=*/true, ec);
        if (!ec) nacked_.fetch_add(1, std::memory_order_relaxed);
      } else {
        lost_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    return handles.size();
  }

  void join() noexcept override {
    for (auto& w : workers_) {
      if (w.joinable()) w.join();
    }
    workers_.clear();
  }

 private:
  struct Slot {
    bool active = false;
    bool settled = false;
    bool early = false;  // settled by an early ack
    handle_type handle{};
  };

  struct Delivery {
    Message message;
    handle_type handle{};
    std::uint32_t delivery_count = 1;
  };

  /// Lets `HandlerContext::ack_now` settle the delivery of one worker early.
  class Early final : public EarlySettle {
   public:
    Early(Runner& r, std::size_t i) noexcept : runner_(&r), index_(i) {}
    bool ack_now() noexcept override { return runner_->settle(index_, /*ok=*/true, /*early=*/true); }

   private:
    Runner* runner_;
    std::size_t index_;
  };

  void worker(std::size_t index) {
    tls_current_router = core_;
    // The context's constant part, built once (the stop token is reference-counted).
    Early early(*this, index);
    HandlerContext ctx;
    ctx.handler_name = name_;
    ctx.subscribe_topic = subscribe_topic_;
    ctx.publish_topic = publish_topic_;
    ctx.stop = stop_.get_token();
    ctx.logger = core_->logger;
    ctx.early_settle = &early;
    while (taking_.load()) {
      std::error_code ec;
      std::optional<Delivery> delivery;
      {
        const std::lock_guard lock(receive_mutex_);
        if (!taking_.load()) break;
        delivery = receive(ec);
        if (delivery) {
          core_->in_flight.fetch_add(1);
          const std::lock_guard slots_lock(slots_mutex_);
          slots_[index].active = true;
          slots_[index].settled = false;
          slots_[index].early = false;
          slots_[index].handle = std::move(delivery->handle);  // settled from the slot
        }
      }
      if (ec) {
        if (is_terminal_receive_error(ec)) {
          core_->logger->log(LogLevel::info, "subscription ended; handler stops",
                             {{"handler", name_}, {"topic", subscribe_topic_}, {"error", ec.message()}});
          break;
        }
        core_->logger->log(LogLevel::warn, "receive failed; retrying",
                           {{"handler", name_}, {"topic", subscribe_topic_}, {"error", ec.message()}});
        HandlerContext pause;
        pause.stop = stop_.get_token();
        pause.sleep_for(config_.receive_error_backoff);
        continue;
      }
      if (delivery) handle(index, *delivery, ctx);
    }
    bool last = false;
    {
      const std::lock_guard lock(receive_mutex_);
      taking_.store(false);
      last = ++exited_ == options_.concurrency;
    }
    if (last) core_->handler_ended();
    tls_current_router = nullptr;
  }

  std::optional<Delivery> receive(std::error_code& ec) {
    ec.clear();
    try {
      if constexpr (kAcks) {
        auto d = subscriber_.receive_with_ack_for(config_.poll_interval, ec);
        if (!d || ec) return std::nullopt;
        Delivery out{std::move(d->first), std::move(d->second), 1};
        out.delivery_count = static_cast<std::uint32_t>(out.handle.delivery_count());
        return out;
      } else if constexpr (requires { subscriber_.receive_for(config_.poll_interval, ec); }) {
        auto m = subscriber_.receive_for(config_.poll_interval, ec);
        if (!m || ec) return std::nullopt;
        return Delivery{std::move(*m), {}, 1};
      } else {
        auto m = subscriber_.receive_for(config_.poll_interval);
        if (!m) return std::nullopt;
        return Delivery{std::move(*m), {}, 1};
      }
    } catch (const std::system_error& e) {
      ec = e.code();
    } catch (...) {
      ec = make_error_code(handler_errc::exception);
    }
    return std::nullopt;
  }

  void handle(std::size_t index, Delivery& delivery, HandlerContext& ctx) {
    count(received_);
    ctx.delivery_count = delivery.delivery_count;

    HandlerResult result = call_guarded(chain_, delivery.message, ctx);
    if constexpr (kPublishes) {
      if (result.ok() && !result.messages().empty() && !is_abandoned(index)) publish(result);
    }
    if (result.ok()) {
      count(succeeded_);
    } else {
      count(failed_);
      core_->logger->log(LogLevel::warn, "handler failed; message nacked",
                         {{"handler", name_},
                          {"topic", subscribe_topic_},
                          {"message_id", delivery.message.uuid.to_string()},
                          {"delivery_count", delivery.delivery_count},
                          {"error", result.error().message()},
                          {"reason", result.reason()}});
    }
    settle(index, result.ok(), /*early=*/false);
    recycle_outputs(result.messages());
    core_->delivery_settled();
  }

  void publish(HandlerResult& result) {
    if constexpr (kPublishes) {
      auto& outputs = result.messages();
      const std::size_t n = outputs.size();
      std::error_code ec;
      try {
        if (n == 1) {
          // The single-message form skips the batch path (and leaves the message in place on failure).
          publisher_.publish(publish_topic_, std::move(outputs.front()), ec);
        } else {
          publisher_.publish(publish_topic_, std::move(outputs), ec);
        }
      } catch (const std::system_error& e) {
        ec = e.code();
      } catch (...) {
        ec = make_error_code(handler_errc::exception);
      }
      if (ec) {
        core_->logger->log(LogLevel::error, "publishing the handler's output failed; message nacked",
                           {{"handler", name_}, {"topic", publish_topic_}, {"error", ec.message()}});
        result = HandlerResult::failure(ec, "publishing to " + publish_topic_ + " failed: " + ec.message());
        return;
      }
      count(published_, n);
    }
  }

  /// Whether a close timed out on this delivery and nacked it (its outputs are then dropped: the
  /// message will be handled again).
  bool is_abandoned(std::size_t index) {
    // Only a close abandons deliveries, and only after it set `stopping`. One abandoned just after
    // this check has its outputs published anyway: a duplicate, as at-least-once allows.
    if (!core_->stopping.load()) return false;
    const std::lock_guard lock(slots_mutex_);
    return slots_[index].settled && !slots_[index].early;
  }

  /// Settles the delivery of worker `index` unless it already was (early ack, close timeout).
  /// Returns whether the settlement succeeded.
  bool settle(std::size_t index, bool ok, bool early) noexcept {
    bool already = false;
    {
      const std::lock_guard lock(slots_mutex_);
      Slot& slot = slots_[index];
      already = slot.settled;
      slot.settled = true;
      if (early && !already) slot.early = true;
      if (!early) slot.active = false;
    }
    if (already) return false;
    bool settled_ok = true;
    if constexpr (kAcks) {
      // Read without the lock: only this worker writes its slot's handle (at its next receive),
      // and a settled slot is never read by abandon_in_flight.
      const handle_type& h = slots_[index].handle;
      std::error_code ec;
      if (ok) {
        ack_noexcept(h, ec);
        if (!ec) count(acked_);
      } else {
        nack_noexcept(h, options_.requeue_on_failure, ec);
        if (!ec) nacked_.fetch_add(1, std::memory_order_relaxed);
      }
      if (ec) {
        settled_ok = false;
        core_->logger->log(LogLevel::error, ok ? "ack failed" : "nack failed",
                           {{"handler", name_}, {"topic", subscribe_topic_}, {"error", ec.message()}});
      }
    } else if (!ok) {
      lost_.fetch_add(1, std::memory_order_relaxed);
      core_->logger->log(LogLevel::error, "failed message lost: the subscriber cannot nack",
                         {{"handler", name_}, {"topic", subscribe_topic_}});
    }
    return settled_ok;
  }

  /// Adds to a counter that only this handler's workers write (received, succeeded, failed,
  /// published, acked). With one worker there is one writer: a plain load and store, which
  /// readers see whole, instead of a locked read-modify-write per message.
  void count(std::atomic<std::uint64_t>& counter, std::uint64_t n = 1) const noexcept {
    if (options_.concurrency == 1) {
      counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    } else {
      counter.fetch_add(n, std::memory_order_relaxed);
    }
  }

  /// The router's logger; before `start` (a failed run), the null logger.
  [[nodiscard]] Logger& core_logger() const noexcept { return core_ != nullptr ? *core_->logger : null_logger(); }

  void ack_noexcept(const handle_type& h, std::error_code& ec) noexcept {
    try {
      subscriber_.ack(h, ec);
    } catch (const std::system_error& e) {
      ec = e.code();
    } catch (...) {
      ec = make_error_code(handler_errc::exception);
    }
  }
  void nack_noexcept(const handle_type& h, bool requeue, std::error_code& ec) noexcept {
    try {
      subscriber_.nack(h, requeue, ec);
    } catch (const std::system_error& e) {
      ec = e.code();
    } catch (...) {
      ec = make_error_code(handler_errc::exception);
    }
  }

  S subscriber_;
  P publisher_;
  HandlerFunc handler_;
  HandlerFunc chain_;
  RouterCore* core_ = nullptr;
  RouterConfig config_;

  std::atomic<bool> taking_{true};
  std::stop_source stop_;
  std::mutex receive_mutex_;  // one receiver at a time; guards exited_
  std::size_t exited_ = 0;
  std::mutex slots_mutex_;
  std::vector<Slot> slots_;
  std::vector<std::thread> workers_;
};

}  // namespace kincir::detail::router
