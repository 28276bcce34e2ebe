/// @file
/// `kincir::middleware::Deduplicator`: handles a message once per key within a time window,
/// with bounded memory.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>
#include <kincir/log.hpp>
#include <kincir/router/handler.hpp>

#include <atomic>         // counters
#include <chrono>         // the window
#include <cstddef>        // std::size_t
#include <cstdint>        // counters
#include <deque>          // keys in the order they were seen
#include <functional>     // key functions
#include <memory>         // shared state
#include <mutex>          // the key set
#include <string>         // keys
#include <unordered_map>  // key → when
#include <utility>        // std::move

namespace kincir::middleware {

/// How `Deduplicator` recognises duplicates.
struct DeduplicatorOptions {
  /// A key seen less than this long ago marks a duplicate (positive).
  std::chrono::milliseconds window = std::chrono::minutes(1);
  /// Most keys remembered (at least 1); beyond it the oldest are forgotten first, so memory stays
  /// bounded however many messages pass.
  std::size_t max_keys = 100'000;
  /// The key of a message; empty: its id (`uuid`).
  std::function<std::string(const Message&)> key;
};

/// Drops a message whose key was handled successfully within `window`: the handler is not called
/// and the message is acked (logged at `debug`, counted in `duplicates()`). A key is remembered
/// only after its handler succeeded, so a failed message that comes back is handled again; two
/// copies handled at the same moment may both run. One key set is shared by every handler this
/// object (and its copies) wraps. Bad options: `kincir::Error`, `errc::invalid_argument`.
class Deduplicator {
 public:
  explicit Deduplicator(DeduplicatorOptions options = {}) : state_(std::make_shared<State>()) {
    if (options.window <= std::chrono::milliseconds::zero() || options.max_keys == 0) {
      throw_error(make_error_code(errc::invalid_argument), "Deduplicator: window and max_keys must be positive");
    }
    state_->options = std::move(options);
  }

  /// Messages dropped as duplicates so far.
  [[nodiscard]] std::uint64_t duplicates() const noexcept { return state_->duplicates.load(std::memory_order_relaxed); }
  /// Keys remembered now (at most `max_keys`).
  [[nodiscard]] std::size_t size() const {
    const std::lock_guard lock(state_->mutex);
    return state_->seen.size();
  }

  HandlerFunc operator()(HandlerFunc next) const {
    return [state = state_, next = std::move(next)](Message& message, const HandlerContext& ctx) {
      std::string key = state->options.key ? state->options.key(message) : message.uuid.to_string();
      if (state->is_duplicate(key)) {
        state->duplicates.fetch_add(1, std::memory_order_relaxed);
        ctx.logger->log(LogLevel::debug, "duplicate dropped", {{"handler", ctx.handler_name}, {"key", key}});
        return HandlerResult();
      }
      HandlerResult result = next(message, ctx);
      if (result.ok()) state->remember(std::move(key));
      return result;
    };
  }

 private:
  using clock = std::chrono::steady_clock;

  struct State {
    DeduplicatorOptions options;
    mutable std::mutex mutex;
    std::unordered_map<std::string, clock::time_point> seen;      // key → when it was remembered
    std::deque<std::pair<clock::time_point, std::string>> order;  // oldest first (a key may repeat)
    std::atomic<std::uint64_t> duplicates{0};

    bool is_duplicate(const std::string& key) {
      const std::lock_guard lock(mutex);
      expire(clock::now());
      return seen.contains(key);
    }

    void remember(std::string key) {
      const auto now = clock::now();
      const std::lock_guard lock(mutex);
      expire(now);
      seen[key] = now;
      order.emplace_back(now, std::move(key));
      while (seen.size() > options.max_keys) pop_oldest();
    }

    /// Forgets keys older than the window; drops queue entries of keys remembered again since.
    void expire(clock::time_point now) {
      while (!order.empty() && now - order.front().first >= options.window) pop_oldest();
    }

    void pop_oldest() {
      auto& [when, key] = order.front();
      const auto it = seen.find(key);
      if (it != seen.end() && it->second == when) seen.erase(it);
      order.pop_front();
    }
  };

  std::shared_ptr<State> state_;
};

}  // namespace kincir::middleware
