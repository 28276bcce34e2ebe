// A small publisher for the batch tests: it records every batch it is given and fails on demand
// following the `Publisher` contract (a failed publish leaves in the batch exactly the messages it
// did not publish: it can be told to publish a prefix first, like a broker whose large batch goes
// out in pieces), and it can hold a call until the test releases it.
#pragma once

#include <kincir/core/concepts.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>

#include <algorithm>           // std::min
#include <chrono>              // waiting with a deadline
#include <condition_variable>  // waiting for batches
#include <cstddef>             // std::size_t
#include <mutex>               // the record
#include <string>              // payloads, topics
#include <string_view>         // topics
#include <system_error>        // std::error_code
#include <utility>             // std::move
#include <vector>              // batches

namespace kincir::test {

/// A message whose payload is `text` (tests compare payloads to check order and identity).
inline Message text_message(const std::string& text) { return Message(Bytes::copy_from(text)); }

/// Messages whose payloads are "from", "from + 1", ... as decimal text.
inline std::vector<Message> numbered(int count, int from = 0) {
  std::vector<Message> out;
  out.reserve(static_cast<std::size_t>(count));
  for (int i = from; i < from + count; ++i) out.push_back(text_message(std::to_string(i)));
  return out;
}

/// The payloads of `messages`, as text.
inline std::vector<std::string> payloads_of(const std::vector<Message>& messages) {
  std::vector<std::string> out;
  out.reserve(messages.size());
  for (const auto& m : messages) out.emplace_back(m.payload.view());
  return out;
}

/// Records batches. A call fails with `error` while `set_failing(true)`, after `fail_after(n)`
/// successful calls, or while `fail_next(n)` calls remain; a failing call first publishes
/// `prefix_on_failure` messages (never the whole batch) and removes them from the batch, leaving
/// exactly the unpublished ones, as the `Publisher` contract says.
class RecordingPublisher {
 public:
  void publish(std::string_view topic, std::vector<Message>&& batch, std::error_code& ec) {
    ec.clear();
    std::unique_lock lock(mutex_);
    ++calls_;
    if (hold_next_) {
      hold_next_ = false;
      held_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return !held_; });
    }
    const bool fail_now = fail_next_ > 0;
    if (fail_now) --fail_next_;
    if (fail_now || fail_ || (fail_after_ != 0 && successes_ >= fail_after_)) {
      const std::size_t prefix = batch.empty() ? 0 : std::min(prefix_on_failure_, batch.size() - 1);
      if (prefix != 0) {
        record(topic, batch, prefix);
        batch.erase(batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(prefix));
      }
      ec = error_;
      return;
    }
    ++successes_;
    record(topic, batch, batch.size());
    batch.clear();
  }
  void publish(std::string_view topic, std::vector<Message>&& batch) {
    std::error_code ec;
    publish(topic, std::move(batch), ec);
    throw_if(ec, "RecordingPublisher::publish");
  }
  void publish(std::string_view topic, Message&& message, std::error_code& ec) {
    std::vector<Message> batch;
    batch.push_back(std::move(message));
    publish(topic, std::move(batch), ec);
    if (ec) message = std::move(batch.front());  // NOLINT(bugprone-use-after-move): untouched on failure
  }
  void publish(std::string_view topic, Message&& message) {
    std::error_code ec;
    publish(topic, std::move(message), ec);
    throw_if(ec, "RecordingPublisher::publish");
  }

  /// Every call fails from now on (or succeeds again).
  void set_failing(bool fail, std::error_code error = errc::queue_full) {
    const std::lock_guard lock(mutex_);
    fail_ = fail;
    error_ = error;
  }
  /// Calls after the first `n` successful ones fail.
  void fail_after(std::size_t n) {
    const std::lock_guard lock(mutex_);
    fail_after_ = n;
  }
  /// The next `n` calls fail (whatever else is set).
  void fail_next(std::size_t n) {
    const std::lock_guard lock(mutex_);
    fail_next_ = n;
  }
  /// A failing call publishes its first `n` messages (at most all but one) before failing.
  void set_prefix_on_failure(std::size_t n) {
    const std::lock_guard lock(mutex_);
    prefix_on_failure_ = n;
  }

  /// The next call waits, once it has started, until `release()`.
  void hold_next_call() {
    const std::lock_guard lock(mutex_);
    hold_next_ = true;
  }
  /// Waits up to `timeout` until a call is being held; returns whether one is.
  bool wait_until_held(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return held_; });
  }
  /// Lets the held call go on.
  void release() {
    const std::lock_guard lock(mutex_);
    held_ = false;
    cv_.notify_all();
  }

  /// Waits up to `timeout` until `n` messages were published; returns whether they were.
  bool wait_for_messages(std::size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return payloads_.size() >= n; });
  }

  /// How many messages each call published (a failing call's published prefix included).
  std::vector<std::size_t> sizes() const {
    const std::lock_guard lock(mutex_);
    return sizes_;
  }
  std::vector<std::string> payloads() const {
    const std::lock_guard lock(mutex_);
    return payloads_;
  }
  std::vector<std::string> topics() const {
    const std::lock_guard lock(mutex_);
    return topics_;
  }
  std::size_t calls() const {
    const std::lock_guard lock(mutex_);
    return calls_;
  }

 private:
  /// Requires mutex_. Records the first `n` messages of `batch` as published.
  void record(std::string_view topic, const std::vector<Message>& batch, std::size_t n) {
    sizes_.push_back(n);
    for (std::size_t i = 0; i < n; ++i) {
      topics_.emplace_back(topic);
      payloads_.emplace_back(batch[i].payload.view());
    }
    cv_.notify_all();
  }

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::size_t> sizes_;
  std::vector<std::string> payloads_;
  std::vector<std::string> topics_;
  std::size_t calls_ = 0;
  std::size_t successes_ = 0;
  std::size_t fail_after_ = 0;
  std::size_t fail_next_ = 0;
  std::size_t prefix_on_failure_ = 0;
  bool fail_ = false;
  bool hold_next_ = false;
  bool held_ = false;
  std::error_code error_ = errc::queue_full;
};

static_assert(Publisher<RecordingPublisher>);

}  // namespace kincir::test
