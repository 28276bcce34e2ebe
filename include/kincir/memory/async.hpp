/// @file
/// `InMemorySubscriber::async_receive` and `InMemoryAckSubscriber::async_receive_with_ack`, over
/// standalone Asio. Include this header (it includes `kincir/memory/subscriber.hpp`) where you call
/// either on an in-memory subscriber; without it the in-memory headers include nothing of Asio.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/ack.hpp>
#include <kincir/core/message.hpp>
#include <kincir/memory/detail/subscriber_core.hpp>
#include <kincir/memory/detail/topic.hpp>
#include <kincir/memory/subscriber.hpp>

#include <asio/associated_cancellation_slot.hpp>  // cancellation of async_receive
#include <asio/associated_executor.hpp>           // the handler's executor
#include <asio/async_result.hpp>                  // asio::async_initiate
#include <asio/error.hpp>                         // asio::error::operation_aborted
#include <asio/executor_work_guard.hpp>           // keeps the executor alive while waiting
#include <asio/post.hpp>                          // completion never inside the initiating call

#include <memory>        // std::shared_ptr, std::enable_shared_from_this
#include <mutex>         // the subscriber's async mutex, post_mutex_
#include <system_error>  // std::error_code
#include <utility>       // std::move, std::exchange

namespace kincir::memory {

namespace detail {

/// One `async_receive` (`WithAck` false) or `async_receive_with_ack` (true): tries the subscriber,
/// otherwise waits on the topic's async waiter list (and, with acks, for room in the ack window).
/// Everything it does runs under the subscriber's `async_mutex()`, so an attempt (on the handler's
/// executor), a cancellation (on the thread that emits it) and the owner's subscribe or
/// unsubscribe never overlap, and the cursor keeps a single reader at a time. A delivery is taken
/// (and, with acks, tracked) and the operation completed in one such section: a cancellation
/// either comes first (nothing was taken) or finds the operation done (the handler gets the
/// delivery).
template <class Handler, bool WithAck>
class ReceiveOp final : public AsyncWaiter,
                        public PendingReceive,
                        public std::enable_shared_from_this<ReceiveOp<Handler, WithAck>> {
 public:
  ReceiveOp(std::shared_ptr<SubscriberCore> core, Handler handler)
      : core_(std::move(core)),
        handler_(std::move(handler)),
        work_(asio::make_work_guard(asio::get_associated_executor(handler_))) {}

  void start() {
    auto slot = asio::get_associated_cancellation_slot(handler_);
    if (slot.is_connected()) {
      slot.assign([weak = this->weak_from_this()](asio::cancellation_type) {
        if (auto self = weak.lock()) self->cancel();
      });
    }
    const std::lock_guard lock(core_->async_mutex());
    core_->set_pending_locked(this->weak_from_this());
    attempt_locked();
  }

  /// A publish took this operation off its topic's list: try again on the handler's executor.
  /// Nothing is posted once the operation completed, since its work guard no longer keeps the
  /// executor's `run()` going (the `io_context` may be gone by now).
  void notify() noexcept override {
    const std::lock_guard lock(post_mutex_);
    if (completed_) return;
    asio::post(work_.get_executor(), [self = this->shared_from_this()] { self->attempt(); });
  }

  void cancel() override {
    const std::lock_guard lock(core_->async_mutex());
    abort_locked();
  }

  void abort_locked() override {
    unregister_locked();
    if constexpr (WithAck) core_->forget_window_waiter(this);
    complete_locked(asio::error::operation_aborted, Requeued{});
  }

 private:
  void attempt() {
    const std::lock_guard lock(core_->async_mutex());
    attempt_locked();
  }

  void attempt_locked() {
    if (done_) return;
    if constexpr (WithAck) {
      // A full window: the next ack or nack (or a shutdown) notifies this operation. Checked and
      // registered under the ack lock, so a settlement in between is not missed.
      if (core_->topic() && !core_->window_open_or_notify(this->shared_from_this())) return;
    }
    Requeued r;
    std::error_code ec;
    if (core_->try_next(r, ec) || ec) return complete_locked(ec, std::move(r));
    // Register, then look again: a publish between the two is seen by one side or the other
    // (registering ends with the fence that pairs with the publisher's).
    registered_ = core_->topic();
    registered_->add_async_waiter(this->shared_from_this());
    if (core_->try_next(r, ec) || ec) {
      unregister_locked();
      complete_locked(ec, std::move(r));
    }
  }

  /// Takes this operation off the topic it registered on (a publish may have taken it off already).
  void unregister_locked() {
    if (registered_) registered_->remove_async_waiter(this);
    registered_.reset();
  }

  /// `r` holds the delivery when `ec` is clear.
  void complete_locked(std::error_code ec, Requeued&& r) {
    if (std::exchange(done_, true)) return;
    core_->clear_pending_locked(this);
    BasicAckHandle handle;
    // Tracked now, under the async mutex: from here the delivery is outstanding, and leaving the
    // topic hands it back (a group) or counts it as dropped, even if the handler never runs.
    if (WithAck && !ec) handle = core_->track(r);
    const std::lock_guard lock(post_mutex_);
    completed_ = true;
    auto executor = work_.get_executor();
    if constexpr (WithAck) {
      asio::post(executor, [handler = std::move(handler_), ec, message = std::move(r.message),
                            handle = std::move(handle)]() mutable {
        std::move(handler)(ec, std::move(message), std::move(handle));
      });
    } else {
      asio::post(executor, [handler = std::move(handler_), ec, message = std::move(r.message)]() mutable {
        std::move(handler)(ec, std::move(message));
      });
    }
    work_.reset();
  }

  std::shared_ptr<SubscriberCore> core_;
  Handler handler_;
  asio::executor_work_guard<asio::associated_executor_t<Handler>> work_;
  std::shared_ptr<Topic> registered_;  // the topic whose waiter list holds this operation
  bool done_ = false;                  // the members above: under the core's async_mutex()
  std::mutex post_mutex_;              // a publisher's notify against completion
  bool completed_ = false;             // under post_mutex_
};

/// Starts one asynchronous receive on `core` (`InMemorySubscriber::async_receive` calls this).
template <class CompletionToken>
auto initiate_async_receive(const std::shared_ptr<SubscriberCore>& core, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(std::error_code, Message)>(
      [core](auto handler) {
        auto op = std::make_shared<ReceiveOp<decltype(handler), false>>(core, std::move(handler));
        op->start();
      },
      token);
}

/// Starts one asynchronous receive with acknowledgement on `core`
/// (`InMemoryAckSubscriber::async_receive_with_ack` calls this).
template <class CompletionToken>
auto initiate_async_receive_with_ack(const std::shared_ptr<SubscriberCore>& core, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(std::error_code, Message, BasicAckHandle)>(
      [core](auto handler) {
        auto op = std::make_shared<ReceiveOp<decltype(handler), true>>(core, std::move(handler));
        op->start();
      },
      token);
}

}  // namespace detail

}  // namespace kincir::memory
