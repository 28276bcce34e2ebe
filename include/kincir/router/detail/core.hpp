/// @file
/// Internal: the state a `Router` shares with its handlers (in-flight count, close signalling),
/// and `HandlerBase`, the type-erased part of a handler.
#pragma once

#include <kincir/config.hpp>
#include <kincir/log.hpp>

#include <atomic>              // in-flight count, flags
#include <condition_variable>  // close signalling
#include <cstddef>             // std::size_t
#include <mutex>               // close signalling

namespace kincir::detail::router {

/// Shared by the router and its handlers' workers.
struct RouterCore {
  Logger* logger = &null_logger();
  std::mutex mutex;
  std::condition_variable cv;
  /// Deliveries taken from a subscriber and not yet settled, over all handlers.
  std::atomic<std::size_t> in_flight{0};
  /// Set once the router stops taking messages: the last settlement then wakes the closer.
  std::atomic<bool> stopping{false};
  /// Handlers whose workers are still taking messages (under `mutex`).
  std::size_t live_handlers = 0;

  void delivery_settled() {
    if (in_flight.fetch_sub(1) == 1 && stopping.load()) {
      const std::lock_guard lock(mutex);
      cv.notify_all();
    }
  }
  void handler_ended() {
    const std::lock_guard lock(mutex);
    --live_handlers;
    cv.notify_all();
  }
};

/// Identifies the router whose worker the current thread is (so `close` from a handler does not
/// wait for itself).
inline thread_local const RouterCore* tls_current_router = nullptr;

}  // namespace kincir::detail::router
