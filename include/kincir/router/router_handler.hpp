/// @file
/// `kincir::RouterHandler`: one named handler of a `Router` (subscribe topic → handler → publish
/// topic), as `Router::add_handler` returns it.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>
#include <kincir/router/detail/core.hpp>
#include <kincir/router/handler.hpp>
#include <kincir/router/options.hpp>

#include <atomic>        // counters
#include <cstddef>       // std::size_t
#include <cstdint>       // counters
#include <string>        // names, topics
#include <string_view>   // accessors
#include <system_error>  // std::error_code
#include <utility>       // std::move
#include <vector>        // middleware

namespace kincir {

class Router;

/// A handler registered with a `Router`. Add handler-level middleware before the router runs;
/// read the names and counters at any time.
class RouterHandler {
 public:
  RouterHandler(const RouterHandler&) = delete;
  RouterHandler& operator=(const RouterHandler&) = delete;
  virtual ~RouterHandler() = default;

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] const std::string& subscribe_topic() const noexcept { return subscribe_topic_; }
  /// Empty for a consumer handler.
  [[nodiscard]] const std::string& publish_topic() const noexcept { return publish_topic_; }
  [[nodiscard]] const HandlerOptions& options() const noexcept { return options_; }

  /// Adds middleware around this handler only, inside the router-level middleware; the first
  /// added is the outermost. Before `run` (afterwards: `errc::invalid_argument`).
  RouterHandler& add_middleware(Middleware middleware) {
    if (started_)
      throw_error(make_error_code(errc::invalid_argument), "RouterHandler::add_middleware: router already running");
    if (!middleware)
      throw_error(make_error_code(errc::invalid_argument), "RouterHandler::add_middleware: empty middleware");
    middleware_.push_back(std::move(middleware));
    return *this;
  }

  /// A snapshot of the counters.
  [[nodiscard]] HandlerStats stats() const noexcept {
    HandlerStats s;
    s.received = received_.load(std::memory_order_relaxed);
    s.succeeded = succeeded_.load(std::memory_order_relaxed);
    s.failed = failed_.load(std::memory_order_relaxed);
    s.published = published_.load(std::memory_order_relaxed);
    s.acked = acked_.load(std::memory_order_relaxed);
    s.nacked = nacked_.load(std::memory_order_relaxed);
    s.abandoned = abandoned_.load(std::memory_order_relaxed);
    s.lost = lost_.load(std::memory_order_relaxed);
    return s;
  }

 protected:
  friend class Router;

  RouterHandler(std::string name, std::string subscribe_topic, std::string publish_topic, HandlerOptions options)
      : name_(std::move(name)),
        subscribe_topic_(std::move(subscribe_topic)),
        publish_topic_(std::move(publish_topic)),
        options_(std::move(options)) {}

  /// Subscribes the subscriber (on the router's thread, before any worker starts).
  virtual void subscribe(std::error_code& ec) = 0;
  /// Builds the chain: router-level middleware outside `middleware_`, the first added outermost.
  /// Middleware may throw here (bad options found late); nothing has started then.
  virtual void build_chain(const std::vector<Middleware>& router_middleware) = 0;
  /// Starts the workers.
  virtual void start(detail::router::RouterCore& core, const RouterConfig& config) = 0;
  /// Stops taking messages (also cancels the context's stop token); returns at once.
  virtual void stop_taking() noexcept = 0;
  /// Returns once no worker is inside a receive call (a message received before it is counted
  /// in flight).
  virtual void quiesce_receive() = 0;
  /// Nacks (with requeue) every delivery still being handled; returns how many.
  virtual std::size_t abandon_in_flight() = 0;
  /// Leaves the subscription (`unsubscribe()`, where the subscriber type has it), so that what
  /// the subscriber holds unsettled or prefetched goes back to the broker. After the workers
  /// stopped receiving and every delivery was settled (or abandoned).
  virtual void release() noexcept = 0;
  /// Joins the workers (waits for handlers still running).
  virtual void join() noexcept = 0;

  std::string name_;
  std::string subscribe_topic_;
  std::string publish_topic_;
  HandlerOptions options_;
  std::vector<Middleware> middleware_;
  bool started_ = false;

  std::atomic<std::uint64_t> received_{0};
  std::atomic<std::uint64_t> succeeded_{0};
  std::atomic<std::uint64_t> failed_{0};
  std::atomic<std::uint64_t> published_{0};
  std::atomic<std::uint64_t> acked_{0};
  std::atomic<std::uint64_t> nacked_{0};
  std::atomic<std::uint64_t> abandoned_{0};
  std::atomic<std::uint64_t> lost_{0};
};

}  // namespace kincir
