// Helpers shared by the router tests: text messages, a logger that keeps what it is told, a router
// running on its own thread for the length of a test, and bounded waits (a test fails instead of
// hanging).
#pragma once

#include <kincir/core/message.hpp>
#include <kincir/log.hpp>
#include <kincir/memory/config.hpp>
#include <kincir/router/router.hpp>

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

/// Keeps every record (level, message, fields rendered as "k=v").
class CapturingLogger final : public Logger {
 public:
  struct Record {
    LogLevel level;
    std::string message;
    std::vector<std::string> fields;
  };

  [[nodiscard]] bool enabled(LogLevel level) const noexcept override { return level >= LogLevel::debug; }
  void write(LogLevel level, std::string_view message, std::span<const LogField> fields) noexcept override {
    Record r{level, std::string(message), {}};
    for (const auto& f : fields) {
      std::string v;
      if (const auto* s = std::get_if<std::string_view>(&f.value)) {
        v = std::string(*s);
      } else if (const auto* i = std::get_if<std::int64_t>(&f.value)) {
        v = std::to_string(*i);
      } else if (const auto* u = std::get_if<std::uint64_t>(&f.value)) {
        v = std::to_string(*u);
      } else if (const auto* d = std::get_if<double>(&f.value)) {
        v = std::to_string(*d);
      } else {
        v = std::get<bool>(f.value) ? "true" : "false";
      }
      r.fields.push_back(std::string(f.key) + "=" + v);
    }
    const std::lock_guard lock(mutex_);
    records_.push_back(std::move(r));
  }

  [[nodiscard]] std::vector<Record> records() const {
    const std::lock_guard lock(mutex_);
    return records_;
  }
  /// Whether some record's message contains `text`.
  [[nodiscard]] bool saw(std::string_view text) const {
    const std::lock_guard lock(mutex_);
    for (const auto& r : records_) {
      if (r.message.find(text) != std::string::npos) return true;
    }
    return false;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<Record> records_;
};

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
