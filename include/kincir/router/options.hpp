/// @file
/// `kincir::RouterConfig`, `kincir::HandlerOptions` and `kincir::HandlerStats`: how a router and
/// each of its handlers run, and what a handler has done.
#pragma once

#include <kincir/config.hpp>
#include <kincir/log.hpp>

#include <chrono>   // timeouts
#include <cstddef>  // std::size_t
#include <cstdint>  // counters
#include <string>   // group names

namespace kincir {

/// How a `Router` runs.
struct RouterConfig {
  /// How long `close()` without an argument, the destructor, and a run ended by its stop token
  /// wait for in-flight messages before nacking (requeueing) them.
  std::chrono::milliseconds close_timeout = std::chrono::seconds(30);
  /// Longest single wait on a subscriber: a close is noticed within about this long.
  std::chrono::milliseconds poll_interval = std::chrono::milliseconds(50);
  /// Pause after a receive error the subscriber may recover from, before receiving again.
  std::chrono::milliseconds receive_error_backoff = std::chrono::milliseconds(100);
  /// Where the router and the middleware report; null: `null_logger()`. Must outlive the router.
  Logger* logger = nullptr;
};

/// How one handler runs.
struct HandlerOptions {
  /// Messages of this handler processed at once (each on its own worker thread); at least 1.
  /// Receiving stays one thread at a time, as subscribers require; handling and settling overlap.
  std::size_t concurrency = 1;
  /// Consumer group to subscribe in (each message goes to one member of the group: run the same
  /// handler in several processes, or several handlers with their own subscribers, to share the
  /// work). Empty: no group. Needs a subscriber with `subscribe(topic, group, ec)`.
  std::string group;
  /// A failed message is nacked with this `requeue` flag: true redelivers it, false hands it to
  /// the subscriber's dead-lettering.
  bool requeue_on_failure = true;
};

/// What a handler has done since the router started (counters read while running).
struct HandlerStats {
  std::uint64_t received = 0;   ///< deliveries taken from the subscriber
  std::uint64_t succeeded = 0;  ///< handled, outputs published, settled as success
  std::uint64_t failed = 0;     ///< the handler (or publishing its outputs) failed
  std::uint64_t published = 0;  ///< output messages published
  std::uint64_t acked = 0;      ///< deliveries acked
  std::uint64_t nacked = 0;     ///< deliveries nacked (failure or close)
  std::uint64_t abandoned = 0;  ///< still in progress when a close timed out; nacked with requeue
  /// Failed deliveries of a subscriber without acks: nothing could give them back. Always 0 with
  /// an `AckSubscriber`.
  std::uint64_t lost = 0;
};

}  // namespace kincir
