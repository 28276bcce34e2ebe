/// @file
/// `kincir::BatchPublisher<P>`: sends a large batch in chunks, or buffers single messages per
/// topic and flushes them by size or age, over any `kincir::Publisher`.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/concepts.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>

#include <algorithm>           // std::min
#include <atomic>              // the error handler's thread
#include <chrono>              // batch_timeout, buffer ages
#include <condition_variable>  // the flush timer's wait
#include <cstddef>             // std::size_t
#include <functional>          // std::function error handler, std::less<>
#include <iterator>            // std::make_move_iterator
#include <map>                 // per-topic buffers
#include <mutex>               // buffer and publish locks
#include <string>              // topic keys
#include <string_view>         // topics
#include <system_error>        // std::error_code
#include <thread>              // the flush timer thread
#include <type_traits>         // std::remove_reference_t
#include <utility>             // std::move, std::forward, std::in_place
#include <vector>              // batches

namespace kincir {

/// How a `BatchPublisher` batches.
struct BatchPublisherOptions {
  /// Largest batch handed to the publisher in one call (at least 1).
  std::size_t batch_size = 100;
  /// A topic's buffered messages are flushed once the oldest is this old (a timer does it, no
  /// further `add` is needed). Zero: `add` flushes only by size, `flush()` and destruction.
  std::chrono::steady_clock::duration batch_timeout = std::chrono::milliseconds(100);
  /// Most messages buffered per topic. When a topic holds this many because flushes keep
  /// failing, `add` fails with the publisher's error and leaves its message with the caller.
  /// Zero means `16 * batch_size`.
  std::size_t max_buffered = 0;
};

/// Batches messages over a publisher `P`, which is held by value (`BatchPublisher<X>`, from an
/// rvalue) or by reference (`BatchPublisher<X&>`, from an lvalue; it must outlive this object).
///
/// - `publish_batch(topic, messages)` sends `messages` in order, `batch_size` at a time.
/// - `add(topic, message)` buffers per topic; a topic is flushed when its buffer reaches
///   `batch_size` (by that `add`, whose caller gets the error if the flush fails), when its oldest
///   message is `batch_timeout` old (by a background timer; errors go to the error handler and
///   `last_error()`), by `flush()`, and on destruction.
///
/// Nothing is dropped silently: a failed flush keeps exactly its unpublished messages buffered,
/// in order, in front of later ones, for the next attempt (by size, by the timer one
/// `batch_timeout` later, or by `flush()`); `take_pending` hands them back. Only destruction can
/// discard messages, and then only after passing them to the error handler, which may move them
/// out (without a handler they are discarded: call `flush()` first to see the error).
///
/// Failures rely on the `Publisher` contract: a failed `publish(topic, batch, ec)` leaves in
/// `batch` exactly the messages it did not publish, in order (the published ones are removed; if
/// none was published the vector is untouched).
///
/// Thread safety: every member may be called from any thread. Calls into the publisher are
/// serialised for `add`/`flush`/the timer, so each topic's messages keep their order;
/// `publish_batch` calls the publisher directly on the caller's thread, so `P` must allow
/// concurrent `publish` calls if `publish_batch` runs alongside `add` (kincir's publishers do).
template <class P>
class BatchPublisher {
 public:
  using publisher_type = std::remove_reference_t<P>;
  using clock = std::chrono::steady_clock;
  static_assert(Publisher<publisher_type>, "BatchPublisher needs a type modelling kincir::Publisher");

  /// Called after a flush that the caller of `add`/`flush` does not see fails (timer, destructor)
  /// with the error, the topic and exactly the messages not published, in order. Messages the
  /// handler leaves in the vector stay buffered, in front of later ones (timer), or are discarded
  /// (destructor). Runs on the timer thread or the destroying thread, holding the lock that
  /// serialises flushes (so nothing overtakes the unsent messages): from inside it, `take_pending`
  /// works, but a flush (`flush()`, or an `add` that would flush) fails with
  /// `std::errc::resource_deadlock_would_occur` instead of waiting for itself. It must not throw.
  using ErrorHandler = std::function<void(std::error_code, std::string_view topic, std::vector<Message>& unsent)>;

  BatchPublisher(P&& publisher, BatchPublisherOptions options)
      : publisher_(std::forward<P>(publisher)), options_(normalise(options)) {}

  BatchPublisher(P&& publisher, std::size_t batch_size, clock::duration batch_timeout)
      : BatchPublisher(std::forward<P>(publisher), options_for(batch_size, batch_timeout)) {}

  /// Constructs the owned publisher in place from `args` (for publishers that cannot be moved):
  /// `BatchPublisher<InMemoryPublisher> b(std::in_place, options, broker)`.
  template <class... Args>
  BatchPublisher(std::in_place_t, BatchPublisherOptions options, Args&&... args)
      : publisher_(std::forward<Args>(args)...), options_(normalise(options)) {}

  BatchPublisher(const BatchPublisher&) = delete;
  BatchPublisher& operator=(const BatchPublisher&) = delete;

  /// Stops the timer and flushes every topic. Failures go to the error handler (see
  /// `ErrorHandler`); what it leaves is discarded.
  ~BatchPublisher() {
    stop_timer();
    for (auto& topic : topics_snapshot()) {
      std::error_code ec;
      flush_topic(topic, /*only_if_full=*/false, ec, /*report=*/true, /*discard_unsent=*/true);
    }
  }

  /// Publishes `messages` to `topic` in order, in chunks of `batch_size`, on this thread.
  /// Returns how many were published (on failure too: the chunks before the failing one plus
  /// whatever of it the publisher got out). On failure `ec` is the publisher's error and
  /// `messages` holds exactly the messages not published, in order (the published ones are
  /// removed), so the caller still owns them; on success it is empty.
  std::size_t publish_batch(std::string_view topic, std::vector<Message>&& messages, std::error_code& ec) {
    return publish_chunks(topic, messages, ec);
  }

  /// Throws `kincir::Error` on failure; `messages` then holds the messages not published.
  std::size_t publish_batch(std::string_view topic, std::vector<Message>&& messages) {
    std::error_code ec;
    const std::size_t n = publish_batch(topic, std::move(messages), ec);
    throw_if(ec, "BatchPublisher::publish_batch");
    return n;
  }

  /// Buffers `message` for `topic`; flushes the topic if its buffer reached `batch_size`.
  /// If that flush fails, `ec` is the publisher's error and the message stays buffered (it was
  /// accepted) with the other unpublished ones. If the topic already holds `max_buffered`
  /// messages, `add` first flushes them; if that flush fails, `ec` is the error and `message` is
  /// left untouched (not accepted), even if the flush got some of them out. Errors from
  /// `invalid topic` names surface at the first flush.
  void add(std::string_view topic, Message&& message, std::error_code& ec) {
    ec.clear();
    bool full = false;
    {
      std::unique_lock lock(buffer_mutex_);
      if (!timer_started_ && options_.batch_timeout > clock::duration::zero()) start_timer();
      Buffer* buffer = &buffer_for(topic);
      if (buffer->messages.size() >= options_.max_buffered) {
        lock.unlock();
        flush_topic(topic, /*only_if_full=*/false, ec, /*report=*/false);
        if (ec) return;  // still failing: not accepted
        lock.lock();
        buffer = &buffer_for(topic);
      }
      const bool was_empty = buffer->messages.empty();
      buffer->messages.push_back(std::move(message));
      if (was_empty) {
        buffer->oldest = clock::now();
        arm_timer(buffer->oldest);
      }
      full = buffer->messages.size() >= options_.batch_size;
    }
    if (full) flush_topic(topic, /*only_if_full=*/true, ec, /*report=*/false);
  }

  /// Throws `kincir::Error` if the flush this add triggered failed (see the `ec` overload).
  void add(std::string_view topic, Message&& message) {
    std::error_code ec;
    add(topic, std::move(message), ec);
    throw_if(ec, "BatchPublisher::add");
  }

  /// Publishes every buffered message now. Every topic is attempted; `ec` is the first error and
  /// the unpublished messages of failing topics stay buffered, in order (retried by the timer one
  /// `batch_timeout` later, by the next `add` that fills the buffer, or by `flush()`).
  void flush(std::error_code& ec) {
    ec.clear();
    for (auto& topic : topics_snapshot()) {
      std::error_code one;
      flush_topic(topic, /*only_if_full=*/false, one, /*report=*/false);
      if (one && !ec) ec = one;
    }
  }

  void flush() {
    std::error_code ec;
    flush(ec);
    throw_if(ec, "BatchPublisher::flush");
  }

  /// Removes and returns the messages buffered for `topic`, in order (for a caller giving up on
  /// them). Waits for a flush in progress, so after a failed flush it returns exactly the
  /// unpublished messages (plus any added since).
  [[nodiscard]] std::vector<Message> take_pending(std::string_view topic) {
    // Not while a flush has them out. From the error handler this thread already holds the lock.
    std::unique_lock<std::mutex> publish_lock;
    if (!in_error_handler()) publish_lock = std::unique_lock(publish_mutex_);
    const std::lock_guard lock(buffer_mutex_);
    auto it = buffers_.find(topic);
    if (it == buffers_.end()) return {};
    return std::exchange(it->second.messages, {});
  }

  /// Messages buffered over all topics.
  [[nodiscard]] std::size_t pending() const {
    const std::lock_guard lock(buffer_mutex_);
    std::size_t n = 0;
    for (const auto& [name, buffer] : buffers_) n += buffer.messages.size();
    return n;
  }

  /// Messages buffered for `topic`.
  [[nodiscard]] std::size_t pending(std::string_view topic) const {
    const std::lock_guard lock(buffer_mutex_);
    auto it = buffers_.find(topic);
    return it == buffers_.end() ? 0 : it->second.messages.size();
  }

  /// The most recent error of a background flush (timer or destructor), the one the error handler
  /// was given; errors of `add`/`flush()` go to their caller instead. Cleared by
  /// `clear_last_error`.
  [[nodiscard]] std::error_code last_error() const {
    const std::lock_guard lock(buffer_mutex_);
    return last_error_;
  }
  void clear_last_error() {
    const std::lock_guard lock(buffer_mutex_);
    last_error_.clear();
  }

  /// Sets the handler for failures of background flushes (see `ErrorHandler`).
  void set_error_handler(ErrorHandler handler) {
    const std::lock_guard lock(buffer_mutex_);
    error_handler_ = std::move(handler);
  }

  [[nodiscard]] const BatchPublisherOptions& options() const noexcept { return options_; }
  [[nodiscard]] publisher_type& publisher() noexcept { return publisher_; }

 private:
  struct Buffer {
    std::vector<Message> messages;
    clock::time_point oldest{};
  };

  static BatchPublisherOptions options_for(std::size_t batch_size, clock::duration batch_timeout) noexcept {
    BatchPublisherOptions o;
    o.batch_size = batch_size;
    o.batch_timeout = batch_timeout;
    return o;
  }

  static BatchPublisherOptions normalise(BatchPublisherOptions o) noexcept {
    if (o.batch_size == 0) o.batch_size = 1;
    if (o.max_buffered == 0) o.max_buffered = 16 * o.batch_size;
    if (o.max_buffered < o.batch_size) o.max_buffered = o.batch_size;
    return o;
  }

  /// Requires buffer_mutex_.
  Buffer& buffer_for(std::string_view topic) {
    auto it = buffers_.find(topic);
    if (it == buffers_.end()) it = buffers_.emplace(std::string(topic), Buffer{}).first;
    return it->second;
  }

  std::vector<std::string> topics_snapshot() const {
    const std::lock_guard lock(buffer_mutex_);
    std::vector<std::string> names;
    names.reserve(buffers_.size());
    for (const auto& [name, buffer] : buffers_) {
      if (!buffer.messages.empty()) names.push_back(name);
    }
    return names;
  }

  /// Sends `messages` in chunks of `batch_size`. Returns how many were published; on failure
  /// `messages` holds exactly the unpublished ones, in order. Relies on the `Publisher` contract:
  /// a failed `publish` leaves in its vector exactly the messages it did not publish, in order
  /// (any ordered subset: only their number and order are used here).
  std::size_t publish_chunks(std::string_view topic, std::vector<Message>& messages, std::error_code& ec) {
    ec.clear();
    const std::size_t total = messages.size();
    if (total <= options_.batch_size) {
      publisher_.publish(topic, std::move(messages), ec);
      if (!ec) {
        messages.clear();
        return total;
      }
      // NOLINTNEXTLINE(bugprone-use-after-move): on failure it holds the unpublished messages
      return total - std::min(messages.size(), total);
    }
    std::vector<Message> chunk;
    std::size_t sent = 0;
    while (sent < total) {
      const std::size_t n = std::min(options_.batch_size, total - sent);
      chunk.clear();
      chunk.reserve(n);
      const auto first = messages.begin() + static_cast<std::ptrdiff_t>(sent);
      const auto last = first + static_cast<std::ptrdiff_t>(n);
      chunk.insert(chunk.end(), std::make_move_iterator(first), std::make_move_iterator(last));
      publisher_.publish(topic, std::move(chunk), ec);
      if (ec) {
        // NOLINTNEXTLINE(bugprone-use-after-move): on failure it holds the chunk's unpublished messages
        const std::size_t unsent = std::min(chunk.size(), n);
        sent += n - unsent;
        // The chunk's unpublished messages go back, in order, to the end of their slots, right
        // before the untouched rest; everything in front of them was published (or moved out).
        std::move(chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(unsent),
                  last - static_cast<std::ptrdiff_t>(unsent));
        messages.erase(messages.begin(), last - static_cast<std::ptrdiff_t>(unsent));
        return sent;
      }
      sent += n;
    }
    messages.clear();
    return sent;
  }

  /// Publishes the topic's buffer. `only_if_full`: skip if another thread flushed meanwhile.
  /// `report`: a failure goes to the error handler and last_error (background flushes).
  /// `discard_unsent`: what the handler leaves is dropped instead of buffered (destructor).
  void flush_topic(std::string_view topic, bool only_if_full, std::error_code& ec, bool report,
                   bool discard_unsent = false) {
    ec.clear();
    if (in_error_handler()) {
      // This thread holds publish_mutex_ already (it is running the error handler).
      ec = std::make_error_code(std::errc::resource_deadlock_would_occur);
      return;
    }
    const std::lock_guard publish_lock(publish_mutex_);
    std::vector<Message> batch;
    {
      const std::lock_guard lock(buffer_mutex_);
      auto it = buffers_.find(topic);
      if (it == buffers_.end() || it->second.messages.empty()) return;
      if (only_if_full && it->second.messages.size() < options_.batch_size) return;
      batch.swap(it->second.messages);
    }
    publish_chunks(topic, batch, ec);  // on failure `batch` holds exactly the unsent messages
    if (!ec) {
      const std::lock_guard lock(buffer_mutex_);
      auto& buffer = buffers_.find(topic)->second;
      if (buffer.messages.empty()) {
        batch.clear();
        buffer.messages.swap(batch);  // keep the storage for the next round
      }
      return;
    }
    ErrorHandler handler;
    if (report) {
      const std::lock_guard lock(buffer_mutex_);
      last_error_ = ec;
      handler = error_handler_;
    }
    if (handler) {
      // Runs with publish_mutex_ held, so no other flush can overtake the unsent messages;
      // calls back into this object that need that lock fail instead of deadlocking.
      handler_thread_.store(std::this_thread::get_id());
      struct Reset {
        std::atomic<std::thread::id>& id;
        ~Reset() { id.store(std::thread::id{}); }
      } reset{handler_thread_};
      handler(ec, topic, batch);
    }
    if (discard_unsent) return;
    const std::lock_guard lock(buffer_mutex_);
    auto& buffer = buffers_.find(topic)->second;
    // Unsent messages go back in front of anything added meanwhile; retried a timeout later.
    buffer.messages.insert(buffer.messages.begin(), std::make_move_iterator(batch.begin()),
                           std::make_move_iterator(batch.end()));
    if (!buffer.messages.empty()) {
      buffer.oldest = clock::now();
      arm_timer(buffer.oldest);
    }
  }

  /// Whether this thread is running the error handler (and so holds publish_mutex_).
  [[nodiscard]] bool in_error_handler() const noexcept { return handler_thread_.load() == std::this_thread::get_id(); }

  /// When a buffer whose oldest message is `oldest` is due (saturating: never overflows).
  [[nodiscard]] clock::time_point deadline_of(clock::time_point oldest) const noexcept {
    if (options_.batch_timeout >= clock::time_point::max() - oldest) return clock::time_point::max();
    return oldest + options_.batch_timeout;
  }

  /// Requires buffer_mutex_. A buffer just became non-empty (an add, or a failed flush putting its
  /// messages back) with its oldest message at `oldest`: wakes the timer if it would sleep past
  /// that buffer's deadline (it may be sleeping with no deadline at all, having found the buffer
  /// swapped out by a flush). The timer recomputes its deadline when it wakes.
  void arm_timer(clock::time_point oldest) {
    if (!timer_started_) return;
    const auto deadline = deadline_of(oldest);
    if (deadline < timer_deadline_) {
      timer_deadline_ = deadline;
      timer_cv_.notify_one();
    }
  }

  /// Requires buffer_mutex_.
  void start_timer() {
    timer_started_ = true;
    timer_ = std::thread([this] { run_timer(); });
  }

  void stop_timer() {
    {
      const std::lock_guard lock(buffer_mutex_);
      stopping_ = true;
    }
    timer_cv_.notify_one();
    if (timer_.joinable()) timer_.join();
  }

  void run_timer() {
    std::unique_lock lock(buffer_mutex_);
    while (!stopping_) {
      const auto now = clock::now();
      clock::time_point next = clock::time_point::max();
      std::vector<std::string> due;
      for (const auto& [name, buffer] : buffers_) {
        if (buffer.messages.empty()) continue;  // empty, or swapped out by a flush (which re-arms us)
        const auto deadline = deadline_of(buffer.oldest);
        if (deadline <= now) {
          due.push_back(name);
        } else if (deadline < next) {
          next = deadline;
        }
      }
      if (!due.empty()) {
        timer_deadline_ = clock::time_point::min();  // busy flushing, rescans afterwards: no wake-ups needed
        lock.unlock();
        for (const auto& name : due) {
          std::error_code ec;
          flush_topic(name, /*only_if_full=*/false, ec, /*report=*/true);
        }
        lock.lock();
        continue;
      }
      timer_deadline_ = next;
      if (next == clock::time_point::max()) {
        timer_cv_.wait(lock);
      } else {
        timer_cv_.wait_until(lock, next);
      }
    }
  }

  P publisher_;
  const BatchPublisherOptions options_;

  std::mutex publish_mutex_;  // serialises flushes: per-topic order
  mutable std::mutex buffer_mutex_;
  std::map<std::string, Buffer, std::less<>> buffers_;
  std::error_code last_error_;
  ErrorHandler error_handler_;

  std::atomic<std::thread::id> handler_thread_{};  // the thread running the error handler, if any

  std::condition_variable timer_cv_;
  clock::time_point timer_deadline_ = clock::time_point::max();  // when the timer wakes next
  bool timer_started_ = false;
  bool stopping_ = false;
  std::thread timer_;
};

/// `BatchPublisher(publisher_lvalue, ...)` references the publisher; from an rvalue it owns it.
template <class P>
BatchPublisher(P&&, BatchPublisherOptions) -> BatchPublisher<P>;
template <class P, class Duration>
BatchPublisher(P&&, std::size_t, Duration) -> BatchPublisher<P>;

}  // namespace kincir
