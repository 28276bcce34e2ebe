/// @file
/// `kincir::process_messages_parallel`: runs a handler on every message of a batch with at most
/// `concurrency` calls in flight, on threads of its own or on an Asio executor.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>

#include <algorithm>     // std::min
#include <atomic>        // work index, failure flag, counters
#include <concepts>      // std::convertible_to
#include <cstddef>       // std::size_t
#include <exception>     // std::exception_ptr
#include <functional>    // std::invoke
#include <latch>         // waiting for work posted to an executor
#include <mutex>         // recording the first failure
#include <system_error>  // std::error_code, std::system_error
#include <thread>        // std::jthread workers
#include <type_traits>   // std::invoke_result_t
#include <utility>       // std::move
#include <vector>        // messages, workers

#if KINCIR_HAS_ASIO
#include <asio/execution/executor.hpp>  // asio::execution::is_executor
#include <asio/is_executor.hpp>         // asio::is_executor (older executor model)
#include <asio/post.hpp>                // running workers on the executor
#endif

namespace kincir {

/// What `process_messages_parallel` did.
struct ParallelOutcome {
  /// Calls that returned without error.
  std::size_t succeeded = 0;
  /// Calls that returned an error or threw.
  std::size_t failed = 0;
  /// Messages never handed to the handler because an earlier call had failed.
  std::size_t not_started = 0;
  /// The first exception the handler threw, if any.
  std::exception_ptr exception;
};

namespace detail::parallel {

/// The shared state of one run: workers pull the next message index until none is left or a call
/// has failed. A worker runs one call at a time, so `workers` bounds the calls in flight.
template <class Fn>
class Run {
 public:
  Run(std::vector<Message>& messages, Fn& fn) noexcept : messages_(messages), fn_(fn) {}

  void work() noexcept {
    for (;;) {
      if (stop_.load(std::memory_order_acquire)) return;
      const std::size_t i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= messages_.size()) return;
      call(messages_[i]);
    }
  }

  /// After every worker finished: the outcome, and the first failure in `ec`.
  ParallelOutcome finish(std::error_code& ec) {
    ParallelOutcome out;
    out.succeeded = succeeded_.load(std::memory_order_relaxed);
    out.failed = failed_.load(std::memory_order_relaxed);
    out.not_started = messages_.size() - out.succeeded - out.failed;
    out.exception = first_exception_;
    ec = first_error_;
    return out;
  }

 private:
  using result_type = std::invoke_result_t<Fn&, Message&&>;

  void call(Message& message) noexcept {
    std::error_code failure;
    try {
      if constexpr (std::is_void_v<result_type>) {
        std::invoke(fn_, std::move(message));
      } else {
        failure = std::invoke(fn_, std::move(message));
      }
    } catch (const std::system_error& e) {
      fail(e.code(), std::current_exception());
      return;
    } catch (...) {
      fail(errc::handler_exception, std::current_exception());
      return;
    }
    if (failure) {
      fail(failure, nullptr);
    } else {
      succeeded_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void fail(std::error_code ec, std::exception_ptr exception) noexcept {
    failed_.fetch_add(1, std::memory_order_relaxed);
    stop_.store(true, std::memory_order_release);
    const std::lock_guard lock(mutex_);
    if (!first_error_) first_error_ = ec;
    if (exception && !first_exception_) first_exception_ = std::move(exception);
  }

  std::vector<Message>& messages_;
  Fn& fn_;
  alignas(kFalseSharingRange) std::atomic<std::size_t> next_{0};
  alignas(kFalseSharingRange) std::atomic<std::size_t> succeeded_{0};
  std::atomic<std::size_t> failed_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::error_code first_error_;
  std::exception_ptr first_exception_;
};

template <class Fn>
void check_handler() {
  using result_type = std::invoke_result_t<Fn&, Message&&>;
  static_assert(std::is_void_v<result_type> || std::convertible_to<result_type, std::error_code>,
                "the message handler returns void or an error code");
}

/// Throws the outcome's first failure: the exception the handler threw, or `kincir::Error`.
inline void rethrow(const ParallelOutcome& outcome, const std::error_code& ec) {
  if (outcome.exception) std::rethrow_exception(outcome.exception);
  throw_if(ec, "process_messages_parallel");
}

}  // namespace detail::parallel

/// Calls `fn(Message&&)` on every message with at most `concurrency` calls running at once, on
/// `min(concurrency, messages.size())` threads: the calling thread and threads started for this
/// call. `fn` is called concurrently, so it must be safe to call from several threads; it returns
/// `void` or something convertible to `std::error_code`, and fails by returning an error or
/// throwing. After the first failure no further message is started; the call returns when every
/// started call has finished.
///
/// `ec` is the first failure: the error returned, the code of a `std::system_error` thrown, or
/// `errc::handler_exception` for another exception (kept in `ParallelOutcome::exception`). Never
/// throws on `fn`'s behalf; `std::system_error` if a thread cannot be started.
template <class Fn>
ParallelOutcome process_messages_parallel(std::vector<Message> messages, std::size_t concurrency, Fn&& fn,
                                          std::error_code& ec) {
  detail::parallel::check_handler<Fn>();
  ec.clear();
  detail::parallel::Run<std::remove_reference_t<Fn>> run(messages, fn);
  const std::size_t workers = std::min(concurrency == 0 ? 1 : concurrency, messages.size());
  if (workers > 1) {
    std::vector<std::jthread> threads;
    threads.reserve(workers - 1);
    for (std::size_t i = 1; i < workers; ++i) threads.emplace_back([&run] { run.work(); });
    run.work();
  } else {
    run.work();
  }
  return run.finish(ec);
}

/// Throws the first failure: the exception `fn` threw, or `kincir::Error` for an error it
/// returned. Returns the outcome (every message succeeded) otherwise.
template <class Fn>
ParallelOutcome process_messages_parallel(std::vector<Message> messages, std::size_t concurrency, Fn&& fn) {
  std::error_code ec;
  ParallelOutcome outcome = process_messages_parallel(std::move(messages), concurrency, std::forward<Fn>(fn), ec);
  if (ec) detail::parallel::rethrow(outcome, ec);
  return outcome;
}

#if KINCIR_HAS_ASIO
/// An Asio executor of either model (`asio::thread_pool::executor_type`, `any_io_executor` ...).
template <class E>
concept AsioExecutor = asio::execution::is_executor<E>::value || asio::is_executor<E>::value;

/// As above, but the calls run on `executor` (an `asio::thread_pool`'s, say): `concurrency`
/// workers are posted to it, each running one call at a time. The calling thread waits for them,
/// so it must not be the only thread running the executor.
template <AsioExecutor Executor, class Fn>
ParallelOutcome process_messages_parallel(const Executor& executor, std::vector<Message> messages,
                                          std::size_t concurrency, Fn&& fn, std::error_code& ec) {
  detail::parallel::check_handler<Fn>();
  ec.clear();
  detail::parallel::Run<std::remove_reference_t<Fn>> run(messages, fn);
  const std::size_t workers = std::min(concurrency == 0 ? 1 : concurrency, messages.size());
  std::latch done(static_cast<std::ptrdiff_t>(workers));
  for (std::size_t i = 0; i < workers; ++i) {
    asio::post(executor, [&run, &done] {
      run.work();
      done.count_down();
    });
  }
  done.wait();
  return run.finish(ec);
}

template <AsioExecutor Executor, class Fn>
ParallelOutcome process_messages_parallel(const Executor& executor, std::vector<Message> messages,
                                          std::size_t concurrency, Fn&& fn) {
  std::error_code ec;
  ParallelOutcome outcome =
      process_messages_parallel(executor, std::move(messages), concurrency, std::forward<Fn>(fn), ec);
  if (ec) detail::parallel::rethrow(outcome, ec);
  return outcome;
}
#endif

}  // namespace kincir
