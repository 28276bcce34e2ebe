/// @file
/// `kincir::BatchProcessor<S>`: receives from any `kincir::Subscriber` and hands a handler
/// batches of up to `batch_size` messages, or whatever arrived within `batch_timeout`.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/concepts.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>

#include <algorithm>     // std::min
#include <atomic>        // failure counters, readable while processing
#include <chrono>        // batch_timeout, deadlines
#include <concepts>      // std::convertible_to
#include <cstddef>       // std::size_t
#include <exception>     // std::exception_ptr
#include <functional>    // std::function error handler, std::invoke
#include <mutex>         // last_error, readable while processing
#include <optional>      // timed receive results
#include <span>          // settling a batch of handles
#include <stop_token>    // std::stop_token
#include <string_view>   // topics
#include <system_error>  // std::error_code, std::system_error
#include <type_traits>   // std::invoke_result_t, std::remove_reference_t
#include <utility>       // std::move, std::forward, std::pair, std::in_place
#include <vector>        // batches, handles

namespace kincir {

/// What `process_batches` does after a batch failed. Either way the batch is first settled (nacked
/// when acks are available), counted (`failed_batches()`, `last_error()`) and passed to the error
/// handler, if one is set.
enum class BatchErrorPolicy {
  /// Then return the error (or rethrow the exception the batch handler threw).
  stop,
  /// Then go on with the next batch (the default: one bad batch does not end a consumer; with
  /// acks it is redelivered up to the subscriber's delivery limit, then dead-lettered).
  skip,
};

/// How a `BatchProcessor` batches.
struct BatchProcessorOptions {
  /// Most messages per batch (at least 1). With an ack subscriber that bounds its unsettled
  /// deliveries (the in-memory `max_unacked()`), a batch holds at most that many.
  std::size_t batch_size = 100;
  /// Once one message is taken, the batch is handed over at most this long afterwards, full or not.
  std::chrono::steady_clock::duration batch_timeout = std::chrono::milliseconds(500);
  /// Longest single wait on the subscriber: a stop request is seen within about this long. No
  /// work is done between waits (it is not a polling sleep: `receive_for` returns as soon as a
  /// message arrives).
  std::chrono::steady_clock::duration stop_check_interval = std::chrono::milliseconds(20);
  BatchErrorPolicy on_error = BatchErrorPolicy::skip;
  /// Ack-capable subscribers: a failed batch is nacked with this `requeue` flag (true:
  /// redelivered).
  bool requeue = true;
};

namespace detail::batch {

/// An ack-capable subscriber that can also wait for an ack delivery with a timeout, which the
/// processor needs to honour `batch_timeout` (kincir's in-memory ack subscriber can).
template <class S>
concept TimedAckSubscriber = AckSubscriber<S> && requires(S& s, std::error_code& ec) {
  {
    s.receive_with_ack_for(std::chrono::milliseconds{1}, ec)
    } -> std::convertible_to<std::optional<std::pair<Message, typename S::handle_type>>>;
};

template <class S>
struct Handles {
  void clear() noexcept {}
};
template <TimedAckSubscriber S>
struct Handles<S> {
  std::vector<typename S::handle_type> items;
  void clear() noexcept { items.clear(); }
};

/// `s.receive_for(timeout, ec)` if the subscriber has it, else the throwing form with the
/// exception turned into `ec`.
template <class S, class Duration>
std::optional<Message> receive_for(S& s, Duration timeout, std::error_code& ec) {
  ec.clear();
  if constexpr (requires { s.receive_for(timeout, ec); }) {
    return s.receive_for(timeout, ec);
  } else {
    try {
      return s.receive_for(timeout);
    } catch (const std::system_error& e) {
      ec = e.code();
      return std::nullopt;
    }
  }
}

}  // namespace detail::batch

/// Receives from a subscriber `S` (held by value, `BatchProcessor<X>`, or by reference,
/// `BatchProcessor<X&>`) and calls a handler with batches.
///
/// `process_batches(fn, stop)` waits on the subscriber for a first message; once it has one it
/// keeps taking messages until it has `batch_size` of them or `batch_timeout` has passed since
/// the first, then calls `fn(std::vector<Message>&&)`. `fn` returns `void` or something
/// convertible to `std::error_code`; it fails by throwing or returning an error.
///
/// A failed batch (`fn` threw or returned an error, or acking it failed) never vanishes silently:
/// - it is counted: `failed_batches()`, and `last_error()`/`last_exception()` say why;
/// - with an ack-capable subscriber (`AckSubscriber` with `receive_with_ack_for`) every message
///   is received with a handle; a batch is acked after `fn` succeeded and nacked (`requeue` as
///   configured: redelivered) after it failed;
/// - the error handler, if set, is called with the error and the messages `fn` left in the
///   vector. Without acks it is their last stop: what it leaves there is discarded and counted in
///   `discarded_messages()` (with acks the nack has already disposed of them);
/// - then `on_error` decides: `skip` (the default) goes on, `stop` returns the error (an exception
///   `fn` threw is rethrown).
///
/// Thread safety: one `process_batches` at a time, like the subscriber it drives; the stop token
/// may be triggered, and the failure accessors read, from any thread.
template <class S>
class BatchProcessor {
 public:
  using subscriber_type = std::remove_reference_t<S>;
  using clock = std::chrono::steady_clock;
  static_assert(Subscriber<subscriber_type>, "BatchProcessor needs a type modelling kincir::Subscriber");

  /// Whether batches are acked/nacked through the subscriber.
  static constexpr bool kUsesAcks = detail::batch::TimedAckSubscriber<subscriber_type>;

  /// Told about every failed batch: the error `fn` returned or acking failed with (or empty), the
  /// exception `fn` threw (or null), and the batch's messages that `fn` left in the vector (empty
  /// if it moved them out). Runs on the processing thread, after the batch was settled; an
  /// exception it throws ends `process_batches`.
  ///
  /// With acks (`kUsesAcks`) the batch has already been nacked: with `requeue` (the default) the
  /// broker redelivers it, and after its delivery limit dead-letters it, so the handler is for
  /// logging and inspection only; storing the messages elsewhere would duplicate them. Without
  /// acks this is the messages' last stop: the handler may move them out (to a store of failed
  /// messages, say); what it leaves is discarded and counted in `discarded_messages()`.
  using ErrorHandler = std::function<void(std::error_code, std::exception_ptr, std::vector<Message>& batch)>;

  BatchProcessor(S&& subscriber, BatchProcessorOptions options)
      : subscriber_(std::forward<S>(subscriber)), options_(normalise(options)) {}

  BatchProcessor(S&& subscriber, std::size_t batch_size, clock::duration batch_timeout)
      : BatchProcessor(std::forward<S>(subscriber), options_for(batch_size, batch_timeout)) {}

  /// Constructs the owned subscriber in place from `args`:
  /// `BatchProcessor<InMemorySubscriber> p(std::in_place, options, broker)`.
  template <class... Args>
  BatchProcessor(std::in_place_t, BatchProcessorOptions options, Args&&... args)
      : subscriber_(std::forward<Args>(args)...), options_(normalise(options)) {}

  BatchProcessor(const BatchProcessor&) = delete;
  BatchProcessor& operator=(const BatchProcessor&) = delete;

  /// Subscribes the underlying subscriber to `topic`.
  void subscribe(std::string_view topic, std::error_code& ec) { subscriber_.subscribe(topic, ec); }
  void subscribe(std::string_view topic) { subscriber_.subscribe(topic); }

  /// Joins consumer group `group` of `topic`, where the subscriber has groups: several
  /// processors (threads or processes) then share the topic's messages.
  void subscribe(std::string_view topic, std::string_view group, std::error_code& ec) requires
      requires(subscriber_type& s, std::string_view t, std::error_code& e) {
    s.subscribe(t, t, e);
  }
  { subscriber_.subscribe(topic, group, ec); }
  void subscribe(std::string_view topic, std::string_view group) requires
      requires(subscriber_type& s, std::string_view t) {
    s.subscribe(t, t);
  }
  { subscriber_.subscribe(topic, group); }

  /// Sets the handler for failed batches (see `ErrorHandler`). Not while `process_batches` runs.
  void set_error_handler(ErrorHandler handler) { error_handler_ = std::move(handler); }

  /// Processes batches until `stop` is triggered or receiving fails. Returns how many messages
  /// were in batches that succeeded (`fn` succeeded and, with acks, the batch was acked). On stop,
  /// what was already taken is handed to `fn` first. `ec`: the receive error that ended
  /// processing (`broker_shutdown`, `closed`, ...), or with policy `stop` the error `fn` returned
  /// or the ack error. An exception thrown by `fn` under policy `stop` propagates (after the batch
  /// was settled, counted and given to the error handler). Under policy `skip` failed batches do
  /// not end processing: see `failed_batches()` and `last_error()`.
  template <class Fn>
  std::size_t process_batches(Fn&& fn, const std::stop_token& stop, std::error_code& ec) {
    using result_type = std::invoke_result_t<Fn&, std::vector<Message>&&>;
    static_assert(std::is_void_v<result_type> || std::convertible_to<result_type, std::error_code>,
                  "the batch handler returns void or an error code");
    ec.clear();
    ended_by_receive_ = false;
    std::size_t processed = 0;
    std::vector<Message> batch;
    batch.reserve(options_.batch_size);
    for (;;) {
      batch.clear();
      handles_.clear();
      std::error_code receive_ec;
      // Wait for a first message, waking up now and then to look at the stop token.
      while (batch.empty()) {
        if (stop.stop_requested()) return processed;
        receive_one(batch, options_.stop_check_interval, receive_ec);
        if (receive_ec) {
          ec = receive_ec;
          ended_by_receive_ = true;
          return processed;
        }
      }
      // Fill the batch until it is full, its time is up, or we are told to stop. A subscriber
      // that holds at most `max_unacked()` unsettled deliveries cannot hand out more before this
      // batch is acked: waiting for them would only wait out `batch_timeout`.
      const auto deadline = clock::now() + options_.batch_timeout;
      const std::size_t limit = batch_limit();
      bool stopping = false;
      while (batch.size() < limit) {
        if (stop.stop_requested()) {
          stopping = true;
          break;
        }
        const auto now = clock::now();
        if (now >= deadline) break;
        receive_one(batch, std::min<clock::duration>(deadline - now, options_.stop_check_interval), receive_ec);
        if (receive_ec) break;
      }

      const std::size_t size = batch.size();
      std::error_code failure;
      std::exception_ptr exception;
      try {
        if constexpr (std::is_void_v<result_type>) {
          std::invoke(fn, std::move(batch));
        } else {
          failure = std::invoke(fn, std::move(batch));
        }
      } catch (...) {
        exception = std::current_exception();
      }
      if (!failure && !exception) {
        settle(/*ok=*/true, failure);
        if (!failure) processed += size;
      } else {
        std::error_code settle_ec;
        settle(/*ok=*/false, settle_ec);
      }
      if (failure || exception) {
        record_failure(failure, exception);
        if (error_handler_) error_handler_(failure, exception, batch);
        // Without acks, what is still in the vector now has nowhere else to go.
        // NOLINTNEXTLINE(bugprone-use-after-move): `fn` took an rvalue reference; what it left is there
        if constexpr (!kUsesAcks) discarded_messages_.fetch_add(batch.size(), std::memory_order_relaxed);
        if (options_.on_error == BatchErrorPolicy::stop) {
          if (exception) std::rethrow_exception(exception);
          ec = failure;
          return processed;
        }
      }
      if (receive_ec) {
        ec = receive_ec;
        ended_by_receive_ = true;
        return processed;
      }
      if (stopping) return processed;
    }
  }

  /// Throws `kincir::Error` where the `ec` overload reports an error, except at the normal end of
  /// a stream: a broker that shut down (`errc::broker_shutdown`) or a subscription that was closed
  /// (`errc::closed`) returns, so a processing thread ends with its broker instead of calling
  /// `std::terminate`. Under policy `stop`, an exception `fn` threw propagates.
  template <class Fn>
  std::size_t process_batches(Fn&& fn, const std::stop_token& stop = {}) {
    std::error_code ec;
    const std::size_t n = process_batches(std::forward<Fn>(fn), stop, ec);
    // Only the end of the input stream: the same codes returned by `fn` (its own output broker
    // shut down, say) or by acking are errors.
    const bool end_of_stream = ended_by_receive_ && (ec == errc::broker_shutdown || ec == errc::closed);
    if (!end_of_stream) throw_if(ec, "BatchProcessor::process_batches");
    return n;
  }

  /// Batches that failed since construction (`fn` threw or returned an error, or acking failed),
  /// under either policy.
  [[nodiscard]] std::size_t failed_batches() const noexcept { return failed_batches_.load(std::memory_order_relaxed); }

  /// Messages of failed batches that were dropped since construction: without acks, those that
  /// neither `fn` nor the error handler moved out of the vector. Always 0 with acks (failed
  /// batches are nacked instead).
  [[nodiscard]] std::size_t discarded_messages() const noexcept {
    return discarded_messages_.load(std::memory_order_relaxed);
  }

  /// The error of the most recent failed batch: what `fn` returned, or the ack error; empty if
  /// `fn` threw (see `last_exception()`) or nothing failed. The two are what the error handler
  /// was given. Cleared by `clear_last_error`.
  [[nodiscard]] std::error_code last_error() const {
    const std::lock_guard lock(failure_mutex_);
    return last_error_;
  }
  /// The exception `fn` threw in the most recent failed batch (null if it did not throw).
  [[nodiscard]] std::exception_ptr last_exception() const {
    const std::lock_guard lock(failure_mutex_);
    return last_exception_;
  }
  void clear_last_error() {
    const std::lock_guard lock(failure_mutex_);
    last_error_.clear();
    last_exception_ = nullptr;
  }

  [[nodiscard]] const BatchProcessorOptions& options() const noexcept { return options_; }
  [[nodiscard]] subscriber_type& subscriber() noexcept { return subscriber_; }

 private:
  static BatchProcessorOptions options_for(std::size_t batch_size, clock::duration batch_timeout) noexcept {
    BatchProcessorOptions o;
    o.batch_size = batch_size;
    o.batch_timeout = batch_timeout;
    return o;
  }

  /// `batch_size`, or less where the subscriber cannot hand out that many unsettled deliveries.
  [[nodiscard]] std::size_t batch_limit() const noexcept {
    if constexpr (kUsesAcks && requires(const subscriber_type& s) {
                    { s.max_unacked() } -> std::convertible_to<std::size_t>;
                  }) {
      return std::max<std::size_t>(1, std::min<std::size_t>(options_.batch_size, subscriber_.max_unacked()));
    } else {
      return options_.batch_size;
    }
  }

  static BatchProcessorOptions normalise(BatchProcessorOptions o) noexcept {
    if (o.batch_size == 0) o.batch_size = 1;
    if (o.stop_check_interval <= clock::duration::zero()) o.stop_check_interval = std::chrono::milliseconds(1);
    return o;
  }

  void record_failure(const std::error_code& error, const std::exception_ptr& exception) {
    failed_batches_.fetch_add(1, std::memory_order_relaxed);
    const std::lock_guard lock(failure_mutex_);
    last_error_ = error;
    last_exception_ = exception;
  }

  /// Appends at most one message, waiting at most `timeout`.
  void receive_one(std::vector<Message>& batch, clock::duration timeout, std::error_code& ec) {
    if constexpr (kUsesAcks) {
      auto delivery = subscriber_.receive_with_ack_for(timeout, ec);
      if (delivery) {
        batch.push_back(std::move(delivery->first));
        handles_.items.push_back(std::move(delivery->second));
      }
    } else {
      auto message = detail::batch::receive_for(subscriber_, timeout, ec);
      if (message) batch.push_back(std::move(*message));
    }
  }

  /// Acks (`ok`) or nacks the current batch; nothing to do without acks.
  void settle(bool ok, std::error_code& ec) {
    ec.clear();
    if constexpr (kUsesAcks) {
      using handle_type = typename subscriber_type::handle_type;
      const std::span<const handle_type> handles(handles_.items);
      if (ok) {
        subscriber_.ack_batch(handles, ec);
      } else {
        subscriber_.nack_batch(handles, options_.requeue, ec);
      }
    }
  }

  S subscriber_;
  const BatchProcessorOptions options_;
  ErrorHandler error_handler_;
  detail::batch::Handles<subscriber_type> handles_;

  bool ended_by_receive_ = false;  ///< The last process_batches ended on a receive error.
  std::atomic<std::size_t> failed_batches_{0};
  std::atomic<std::size_t> discarded_messages_{0};
  mutable std::mutex failure_mutex_;
  std::error_code last_error_;
  std::exception_ptr last_exception_;
};

/// `BatchProcessor(subscriber_lvalue, ...)` references the subscriber; from an rvalue it owns it.
template <class S>
BatchProcessor(S&&, BatchProcessorOptions) -> BatchProcessor<S>;
template <class S, class Duration>
BatchProcessor(S&&, std::size_t, Duration) -> BatchProcessor<S>;

}  // namespace kincir
