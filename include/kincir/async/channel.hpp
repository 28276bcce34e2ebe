/// @file
/// `kincir::AsyncMessageProcessor`: a bounded multi-producer, multi-consumer channel of messages
/// with blocking, non-blocking and (with Asio) asynchronous send and receive.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>

#include <concepts>            // std::convertible_to
#include <condition_variable>  // blocking send/receive
#include <cstddef>             // std::size_t
#include <deque>               // pending asynchronous operations
#include <functional>          // std::invoke
#include <memory>              // std::unique_ptr for pending operations
#include <mutex>               // the channel lock
#include <optional>            // try_receive
#include <system_error>        // std::error_code
#include <type_traits>         // std::invoke_result_t
#include <utility>             // std::move
#include <vector>              // the slot ring

#if KINCIR_HAS_ASIO
#include <asio/associated_executor.hpp>  // the handler's executor
#include <asio/async_result.hpp>         // asio::async_initiate
#include <asio/executor_work_guard.hpp>  // keeps the handler's executor busy while pending
#include <asio/post.hpp>                 // completion never inside the initiating call
#endif

namespace kincir {

namespace detail::channel {

/// An `async_send` waiting for room: owns its message until a slot frees or the channel closes.
struct PendingSend {
  explicit PendingSend(Message m) noexcept : message(std::move(m)) {}
  virtual ~PendingSend() = default;
  PendingSend(const PendingSend&) = delete;
  PendingSend& operator=(const PendingSend&) = delete;
  /// Schedules the completion handler; called once, under the channel lock.
  virtual void complete(std::error_code ec) = 0;
  Message message;
};

/// An `async_receive` waiting for a message.
struct PendingReceive {
  PendingReceive() = default;
  virtual ~PendingReceive() = default;
  PendingReceive(const PendingReceive&) = delete;
  PendingReceive& operator=(const PendingReceive&) = delete;
  /// Schedules the completion handler; called once, under the channel lock.
  virtual void complete(std::error_code ec, Message message) = 0;
};

#if KINCIR_HAS_ASIO
template <class Handler>
class SendOp final : public PendingSend {
 public:
  SendOp(Handler handler, Message message)
      : PendingSend(std::move(message)),
        handler_(std::move(handler)),
        work_(asio::make_work_guard(asio::get_associated_executor(handler_))) {}

  void complete(std::error_code ec) override {
    auto executor = work_.get_executor();
    asio::post(executor, [handler = std::move(handler_), ec]() mutable { std::move(handler)(ec); });
    work_.reset();
  }

 private:
  Handler handler_;
  asio::executor_work_guard<asio::associated_executor_t<Handler>> work_;
};

template <class Handler>
class ReceiveOp final : public PendingReceive {
 public:
  explicit ReceiveOp(Handler handler)
      : handler_(std::move(handler)), work_(asio::make_work_guard(asio::get_associated_executor(handler_))) {}

  void complete(std::error_code ec, Message message) override {
    auto executor = work_.get_executor();
    asio::post(executor, [handler = std::move(handler_), ec, message = std::move(message)]() mutable {
      std::move(handler)(ec, std::move(message));
    });
    work_.reset();
  }

 private:
  Handler handler_;
  asio::executor_work_guard<asio::associated_executor_t<Handler>> work_;
};
#endif

}  // namespace detail::channel

/// A bounded channel of messages: the producer/consumer `AsyncMessageProcessor` of the Rust kincir
/// crate's performance guide.
///
/// Producers `send_message` (waits while the channel holds `buffer_size` messages), `try_send`
/// (never waits) or `async_send`; consumers `receive`, `try_receive`, `async_receive`, or run
/// `process_messages(fn)` until the channel is closed and drained. `close()` makes every send
/// fail with `errc::closed` (a blocked `send_message` returns at once, leaving its message with
/// the caller), while receivers drain what is buffered and then get `errc::closed`.
///
/// Messages are delivered in the order sends completed. Thread safety: every member may be called
/// from any thread.
class AsyncMessageProcessor {
 public:
  /// A channel holding at most `buffer_size` messages (at least 1).
  explicit AsyncMessageProcessor(std::size_t buffer_size)
      : slots_(buffer_size == 0 ? 1 : buffer_size), capacity_(slots_.size()) {}

  AsyncMessageProcessor(const AsyncMessageProcessor&) = delete;
  AsyncMessageProcessor& operator=(const AsyncMessageProcessor&) = delete;

  /// Closes the channel: pending asynchronous sends and receives complete with `errc::closed`.
  /// No thread may still be blocked in a member.
  ~AsyncMessageProcessor() { close(); }

  /// Sends `message`, waiting while the channel is full. Error: `closed` (the message is left
  /// with the caller).
  void send_message(Message&& message, std::error_code& ec) {
    ec.clear();
    std::unique_lock lock(mutex_);
    for (;;) {
      if (closed_) {
        ec = errc::closed;
        return;
      }
      if (offer(message)) return;
      ++blocked_senders_;
      not_full_.wait(lock);
      --blocked_senders_;
    }
  }

  void send_message(Message&& message) {
    std::error_code ec;
    send_message(std::move(message), ec);
    throw_if(ec, "AsyncMessageProcessor::send_message");
  }

  /// Sends `message` if there is room now. Returns false with `ec` = `queue_full` or `closed`,
  /// leaving the message with the caller.
  [[nodiscard]] bool try_send(Message&& message, std::error_code& ec) {
    ec.clear();
    const std::lock_guard lock(mutex_);
    if (closed_) {
      ec = errc::closed;
      return false;
    }
    if (offer(message)) return true;
    ec = errc::queue_full;
    return false;
  }

  /// Returns false if the channel is full or closed.
  [[nodiscard]] bool try_send(Message&& message) {
    std::error_code ec;
    return try_send(std::move(message), ec);
  }

  /// Waits for a message. Error: `closed` once the channel is closed and drained.
  Message receive(std::error_code& ec) {
    ec.clear();
    std::unique_lock lock(mutex_);
    Message out;
    for (;;) {
      if (take(out)) return out;
      if (closed_) {
        ec = errc::closed;
        return out;
      }
      ++blocked_receivers_;
      not_empty_.wait(lock);
      --blocked_receivers_;
    }
  }

  Message receive() {
    std::error_code ec;
    Message m = receive(ec);
    throw_if(ec, "AsyncMessageProcessor::receive");
    return m;
  }

  /// A message if one is buffered now.
  [[nodiscard]] std::optional<Message> try_receive() {
    const std::lock_guard lock(mutex_);
    Message out;
    if (!take(out)) return std::nullopt;
    return out;
  }

  /// Calls `fn(Message&&)` on every message until the channel is closed and drained; returns how
  /// many it processed. `fn` returns `void` or something convertible to `std::error_code`; the
  /// first error it returns stops processing and is reported in `ec`; an exception it throws
  /// propagates. Several threads may run `process_messages` on one channel (each message goes to
  /// one of them).
  template <class Fn>
  std::size_t process_messages(Fn&& fn, std::error_code& ec) {
    using result_type = std::invoke_result_t<Fn&, Message&&>;
    static_assert(std::is_void_v<result_type> || std::convertible_to<result_type, std::error_code>,
                  "the message handler returns void or an error code");
    ec.clear();
    std::size_t processed = 0;
    for (;;) {
      std::error_code receive_ec;
      Message m = receive(receive_ec);
      if (receive_ec) return processed;  // closed and drained: the normal end
      if constexpr (std::is_void_v<result_type>) {
        std::invoke(fn, std::move(m));
      } else {
        const std::error_code failure = std::invoke(fn, std::move(m));
        if (failure) {
          ec = failure;
          return processed;
        }
      }
      ++processed;
    }
  }

  /// Throws `kincir::Error` for an error `fn` returned.
  template <class Fn>
  std::size_t process_messages(Fn&& fn) {
    std::error_code ec;
    const std::size_t n = process_messages(std::forward<Fn>(fn), ec);
    throw_if(ec, "AsyncMessageProcessor::process_messages");
    return n;
  }

  /// Closes the channel (idempotent); see the class description.
  void close() {
    const std::lock_guard lock(mutex_);
    if (closed_) return;
    closed_ = true;
    for (auto& op : pending_sends_) op->complete(errc::closed);
    pending_sends_.clear();
    if (count_ == 0) {
      for (auto& op : pending_receives_) op->complete(errc::closed, Message{});
      pending_receives_.clear();
    }
    not_full_.notify_all();
    not_empty_.notify_all();
  }

  [[nodiscard]] bool is_closed() const {
    const std::lock_guard lock(mutex_);
    return closed_;
  }

  /// Messages buffered now.
  [[nodiscard]] std::size_t size() const {
    const std::lock_guard lock(mutex_);
    return count_;
  }

  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

#if KINCIR_HAS_ASIO
  /// Sends asynchronously: completes when the message is in the channel (at once if there is
  /// room) or with `errc::closed` (the message is then destroyed). Completion signature
  /// `void(std::error_code)`; the handler runs on its associated executor, never inside this
  /// call. Waiting sends take free slots before blocked `send_message` calls.
  template <class CompletionToken>
  auto async_send(Message message, CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(std::error_code)>(
        [this](auto handler, Message m) {
          auto op = std::make_unique<detail::channel::SendOp<decltype(handler)>>(std::move(handler), std::move(m));
          const std::lock_guard lock(mutex_);
          if (closed_) return op->complete(errc::closed);
          if (offer(op->message)) return op->complete({});
          pending_sends_.push_back(std::move(op));
        },
        token, std::move(message));
  }

  /// Receives asynchronously. Completion signature `void(std::error_code, kincir::Message)`;
  /// `errc::closed` once the channel is closed and drained. The handler runs on its associated
  /// executor, never inside this call.
  template <class CompletionToken>
  auto async_receive(CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(std::error_code, Message)>(
        [this](auto handler) {
          auto op = std::make_unique<detail::channel::ReceiveOp<decltype(handler)>>(std::move(handler));
          const std::lock_guard lock(mutex_);
          Message m;
          if (take(m)) return op->complete({}, std::move(m));
          if (closed_) return op->complete(errc::closed, Message{});
          pending_receives_.push_back(std::move(op));
        },
        token);
  }
#endif

 private:
  /// Hands `m` to a waiting receiver or buffers it; false if full. Requires mutex_.
  bool offer(Message& m) {
    if (!pending_receives_.empty()) {
      auto op = std::move(pending_receives_.front());
      pending_receives_.pop_front();
      op->complete({}, std::move(m));
      return true;
    }
    if (count_ == capacity_) return false;
    slots_[(head_ + count_) % capacity_] = std::move(m);
    ++count_;
    if (blocked_receivers_ != 0) not_empty_.notify_one();
    return true;
  }

  /// Takes the oldest buffered message; refills the freed slot from a waiting async send or wakes
  /// a blocked sender. Requires mutex_.
  bool take(Message& out) {
    if (count_ == 0) return false;
    out = std::move(slots_[head_]);
    head_ = (head_ + 1) % capacity_;
    --count_;
    if (!pending_sends_.empty()) {
      auto op = std::move(pending_sends_.front());
      pending_sends_.pop_front();
      slots_[(head_ + count_) % capacity_] = std::move(op->message);
      ++count_;
      op->complete({});
    } else if (blocked_senders_ != 0) {
      not_full_.notify_one();
    }
    if (closed_ && count_ == 0) {
      for (auto& op : pending_receives_) op->complete(errc::closed, Message{});
      pending_receives_.clear();
    }
    return true;
  }

  mutable std::mutex mutex_;
  std::condition_variable not_full_;
  std::condition_variable not_empty_;
  std::vector<Message> slots_;
  const std::size_t capacity_;
  std::size_t head_ = 0;
  std::size_t count_ = 0;
  std::size_t blocked_senders_ = 0;
  std::size_t blocked_receivers_ = 0;
  bool closed_ = false;
  std::deque<std::unique_ptr<detail::channel::PendingSend>> pending_sends_;
  std::deque<std::unique_ptr<detail::channel::PendingReceive>> pending_receives_;
};

}  // namespace kincir
