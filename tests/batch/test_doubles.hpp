// Small publishers for the batch tests: one that records every batch it is given, and one that
// fails on demand (leaving the batch untouched, as kincir's publishers do).
#pragma once

#include <kincir/core/concepts.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>

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

/// Records batches; fails with `error` while `fail` is set (then leaves the batch as it was).
class RecordingPublisher {
 public:
  void publish(std::string_view topic, std::vector<Message>&& batch, std::error_code& ec) {
    ec.clear();
    const std::lock_guard lock(mutex_);
    ++calls_;
    if (fail_ || (fail_after_ != 0 && successes_ >= fail_after_)) {
      ec = error_;
      return;
    }
    ++successes_;
    sizes_.push_back(batch.size());
    for (auto& m : batch) {
      topics_.emplace_back(topic);
      payloads_.emplace_back(m.payload.view());
    }
    batch.clear();
    cv_.notify_all();
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

  /// Waits up to `timeout` until `n` messages were published; returns whether they were.
  bool wait_for_messages(std::size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return payloads_.size() >= n; });
  }

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
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::size_t> sizes_;
  std::vector<std::string> payloads_;
  std::vector<std::string> topics_;
  std::size_t calls_ = 0;
  std::size_t successes_ = 0;
  std::size_t fail_after_ = 0;
  bool fail_ = false;
  std::error_code error_ = errc::queue_full;
};

static_assert(Publisher<RecordingPublisher>);

}  // namespace kincir::test
