/// @file
/// `kincir::SignalStop`: a stop token requested by SIGINT or SIGTERM, for
/// `Router::run(stop_token)` (Ctrl-C closes the router gracefully).
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>

#include <atomic>      // the flag the signal handler sets, one instance at a time
#include <chrono>      // the watcher's period
#include <csignal>     // std::signal, SIGINT, SIGTERM
#include <stop_token>  // std::stop_source
#include <thread>      // the watcher

namespace kincir {

namespace detail::router {
inline std::atomic<int> pending_signal{0};
inline std::atomic<bool> signal_stop_active{false};
static_assert(std::atomic<int>::is_always_lock_free, "set from a signal handler");
extern "C" inline void on_stop_signal(int signal) { pending_signal.store(signal); }
}  // namespace detail::router

/// While it exists, SIGINT and SIGTERM no longer end the process: they request `token()`'s
/// stop (seen within about 20 ms by a watcher thread). The destructor restores the previous
/// handlers. One at a time per process (a second is `errc::invalid_argument`).
///
/// ```cpp
/// kincir::SignalStop signals;
/// router.run(signals.token());  // Ctrl-C: stop taking messages, finish, return
/// ```
class SignalStop {
 public:
  SignalStop() {
    if (detail::router::signal_stop_active.exchange(true)) {
      throw_error(make_error_code(errc::invalid_argument), "SignalStop: another instance is active");
    }
    detail::router::pending_signal.store(0);
    previous_int_ = std::signal(SIGINT, detail::router::on_stop_signal);
    previous_term_ = std::signal(SIGTERM, detail::router::on_stop_signal);
    watcher_ = std::jthread([this](const std::stop_token& st) {
      while (!st.stop_requested()) {
        if (const int s = detail::router::pending_signal.exchange(0); s != 0) {
          signal_.store(s);
          source_.request_stop();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
  }

  SignalStop(const SignalStop&) = delete;
  SignalStop& operator=(const SignalStop&) = delete;

  ~SignalStop() {
    watcher_.request_stop();
    watcher_.join();
    std::signal(SIGINT, previous_int_);
    std::signal(SIGTERM, previous_term_);
    detail::router::signal_stop_active.store(false);
  }

  /// Requested when SIGINT or SIGTERM arrives.
  [[nodiscard]] std::stop_token token() const noexcept { return source_.get_token(); }
  /// The signal that requested the stop, 0 if none yet.
  [[nodiscard]] int signal() const noexcept { return signal_.load(); }

 private:
  using Handler = void (*)(int);
  std::stop_source source_;
  std::atomic<int> signal_{0};
  Handler previous_int_ = nullptr;
  Handler previous_term_ = nullptr;
  std::jthread watcher_;
};

}  // namespace kincir
