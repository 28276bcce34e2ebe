// Helpers shared by the router tests: text messages, a logger that keeps what it is told, a router
// running on its own thread for the length of a test, and bounded waits (a test fails instead of
// hanging).
#pragma once

#include <kincir/core/message.hpp>
#include <kincir/log.hpp>
#include <kincir/memory/config.hpp>
#include <kincir/router/router.hpp>

#include "support/capturing_logger.hpp"

#include <chrono>       // bounded waits
#include <cstddef>      // std::size_t
#include <functional>   // predicates
#include <future>       // std::future_status
#include <mutex>        // the captured records
#include <optional>     // receive results
#include <span>         // fields
#include <string>       // payloads, records
#include <string_view>  // messages
#include <thread>       // the router's thread, polling
#include <utility>      // std::move
#include <variant>      // field values
#include <vector>       // records

namespace kincir::test {

inline Message text(const std::string& s) { return Message(std::string(s)); }
inline std::string payload(const Message& m) { return std::string(m.payload.view()); }

/// The default broker configuration without a maintenance thread.
inline memory::BrokerConfig quiet_broker_config() {
  memory::BrokerConfig c;
  c.cleanup_interval = std::chrono::milliseconds(0);
  return c;
}

/// Long enough never to fire on a loaded machine, short enough that a broken test ends.
inline constexpr std::chrono::seconds kPatience{20};

/// Polls `pred` until it holds or `kPatience` passed; returns the last result.
inline bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit = kPatience) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

/// Receives `n` messages, waiting at most `kPatience` in total.
template <class S>
std::vector<Message> receive_n(S& s, std::size_t n) {
  std::vector<Message> out;
  const auto until = std::chrono::steady_clock::now() + kPatience;
  while (out.size() < n && std::chrono::steady_clock::now() < until) {
    if (auto m = s.receive_for(std::chrono::milliseconds(20))) out.push_back(std::move(*m));
  }
  return out;
}

/// Runs `router.run()` on a thread; the destructor closes the router and joins.
class RunningRouter {
 public:
  explicit RunningRouter(Router& router) : router_(router), thread_([this] { run(); }) {}
  RunningRouter(const RunningRouter&) = delete;
  RunningRouter& operator=(const RunningRouter&) = delete;
  ~RunningRouter() {
    router_.close(std::chrono::seconds(10));
    join();
  }

  /// Waits (bounded) until every handler is subscribed; false if it failed or timed out.
  bool wait_running() {
    auto f = router_.running();
    if (f.wait_for(kPatience) != std::future_status::ready) return false;
    try {
      f.get();
      return true;
    } catch (...) {
      return false;
    }
  }
  [[nodiscard]] std::error_code run_error() const { return ec_; }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() { router_.run({}, ec_); }

  Router& router_;
  std::error_code ec_;
  std::thread thread_;
};

}  // namespace kincir::test
