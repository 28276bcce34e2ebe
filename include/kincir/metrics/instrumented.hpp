/// @file
/// `kincir::instrumented(x, collector)`: a decorator that records every publish, receive and
/// settlement call of a publisher or subscriber, with its latency and errors, into a
/// `MetricsCollector`, and models the same concepts as the object it wraps.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/concepts.hpp>
#include <kincir/core/message.hpp>
#include <kincir/metrics/collector.hpp>

#if KINCIR_HAS_ASIO
#include <asio/associated_cancellation_slot.hpp>  // async_receive keeps the handler's slot
#include <asio/associated_executor.hpp>           // and its executor
#include <asio/async_result.hpp>                  // asio::async_initiate
#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/error.hpp>  // operation_aborted is not an error to record
#endif

#include <bit>           // std::bit_ceil
#include <chrono>        // timing calls
#include <concepts>      // std::convertible_to
#include <cstddef>       // std::size_t
#include <cstdint>       // std::uint32_t
#include <span>          // batch settlement
#include <string_view>   // topics
#include <system_error>  // std::error_code
#include <type_traits>   // std::remove_reference_t
#include <utility>       // std::forward, std::move
#include <vector>        // batches

namespace kincir {

/// How an instrumented object times its calls.
struct InstrumentOptions {
  /// Time one call in `time_every` (rounded up to a power of two); every call is still counted
  /// and every error recorded, and total publish/receive time is extrapolated from the timed
  /// calls. 1 (the default) times every call: exact totals, two clock reads per call.
  std::uint32_t time_every = 1;
};

namespace detail::metrics {

/// Per-thread call counter that decides which calls a sampling decorator times.
inline constinit thread_local std::uint32_t tls_tick = 0;

template <class S>
struct HandleTypeOf {};
template <class S>
requires requires { typename S::handle_type; }
struct HandleTypeOf<S> {
  using handle_type = typename S::handle_type;
};

}  // namespace detail::metrics

/// Wraps `T` (a reference to a publisher/subscriber for `instrumented(lvalue, ...)`, the object
/// itself for `instrumented(rvalue, ...)`) and forwards every member of `Publisher`,
/// `Subscriber` and `AckSubscriber` that `T` has, unchanged in results, errors and exceptions,
/// recording into the collector:
/// - a successful publish: `record_publish(latency, batch size)`;
/// - a receive that returned a message: `record_receive(latency)`; `try_receive` and
///   `receive_for` that return nothing are not counted;
/// - `ack`/`nack` (and their batch forms, and a nack with a reason): `record_ack`/`record_nack`
///   with the number settled;
/// - any call failing (error code set or exception thrown): `record_error()`.
///
/// Thread safety: that of `T`; the collector is safe from any thread.
template <class T>
class Instrumented : public detail::metrics::HandleTypeOf<std::remove_cvref_t<T>> {
 public:
  using inner_type = std::remove_reference_t<T>;

  Instrumented(T&& inner, MetricsCollector& collector, InstrumentOptions options = {})
      : inner_(std::forward<T>(inner)),
        collector_(&collector),
        mask_(std::bit_ceil(options.time_every == 0 ? 1U : options.time_every) - 1) {}

  /// The wrapped object.
  [[nodiscard]] inner_type& inner() noexcept { return inner_; }
  [[nodiscard]] const inner_type& inner() const noexcept { return inner_; }
  [[nodiscard]] MetricsCollector& collector() const noexcept { return *collector_; }

  // --- Publisher ----------------------------------------------------------------------------

  void publish(std::string_view topic, std::vector<Message>&& batch,
               std::error_code& ec) requires Publisher<inner_type> {
    const std::uint64_t n = batch.size();
    const Stamp t = start();
    inner_.publish(topic, std::move(batch), ec);
    published(ec, t, n);
  }

  void publish(std::string_view topic, std::vector<Message>&& batch) requires Publisher<inner_type> {
    const std::uint64_t n = batch.size();
    const Stamp t = start();
    try {
      inner_.publish(topic, std::move(batch));
    } catch (...) {
      collector_->record_error();
      throw;
    }
    finish_publish(t, n);
  }

  void publish(std::string_view topic, Message&& message, std::error_code& ec) requires Publisher<inner_type> {
    const Stamp t = start();
    inner_.publish(topic, std::move(message), ec);
    published(ec, t, 1);
  }

  void publish(std::string_view topic, Message&& message) requires Publisher<inner_type> {
    const Stamp t = start();
    try {
      inner_.publish(topic, std::move(message));
    } catch (...) {
      collector_->record_error();
      throw;
    }
    finish_publish(t, 1);
  }

  // --- Subscriber ---------------------------------------------------------------------------

  void subscribe(std::string_view topic, std::error_code& ec) requires Subscriber<inner_type> {
    inner_.subscribe(topic, ec);
    if (ec) collector_->record_error();
  }

  void subscribe(std::string_view topic) requires Subscriber<inner_type> {
    guarded([&] { inner_.subscribe(topic); });
  }

  /// Consumer groups, where the wrapped subscriber has them.
  void subscribe(std::string_view topic, std::string_view group, std::error_code& ec) requires
      requires(inner_type& s, std::string_view t, std::error_code& e) {
    s.subscribe(t, t, e);
  }
  {
    inner_.subscribe(topic, group, ec);
    if (ec) collector_->record_error();
  }
  void subscribe(std::string_view topic, std::string_view group) requires requires(inner_type& s, std::string_view t) {
    s.subscribe(t, t);
  }
  {
    guarded([&] { inner_.subscribe(topic, group); });
  }

  /// Subscription options (an in-memory ack subscriber's `SubscriptionOptions`, say), where the
  /// wrapped subscriber takes them, with or without a group.
  template <class Options>
  requires requires(inner_type& s, std::string_view t, const Options& o, std::error_code& e) {
    s.subscribe(t, t, o, e);
  }
  void subscribe(std::string_view topic, std::string_view group, const Options& options, std::error_code& ec) {
    inner_.subscribe(topic, group, options, ec);
    if (ec) collector_->record_error();
  }
  template <class Options>
  requires requires(inner_type& s, std::string_view t, const Options& o) { s.subscribe(t, t, o); }
  void subscribe(std::string_view topic, std::string_view group, const Options& options) {
    guarded([&] { inner_.subscribe(topic, group, options); });
  }
  template <class Options>
  requires(!std::convertible_to<const Options&, std::string_view>) &&
      requires(inner_type& s, std::string_view t, const Options& o, std::error_code& e) {
    s.subscribe(t, o, e);
  }
  void subscribe(std::string_view topic, const Options& options, std::error_code& ec) {
    inner_.subscribe(topic, options, ec);
    if (ec) collector_->record_error();
  }
  template <class Options>
  requires(!std::convertible_to<const Options&, std::string_view> && !std::same_as<Options, std::error_code>) &&
      requires(inner_type& s, std::string_view t, const Options& o) {
    s.subscribe(t, o);
  }
  void subscribe(std::string_view topic, const Options& options) {
    guarded([&] { inner_.subscribe(topic, options); });
  }

  void unsubscribe() requires requires(inner_type& s) { s.unsubscribe(); }
  { inner_.unsubscribe(); }

  /// The wrapped subscriber's ack window, where it has one (`BatchProcessor` sizes batches by it).
  [[nodiscard]] std::size_t max_unacked() const requires requires(const inner_type& s) {
    { s.max_unacked() } -> std::convertible_to<std::size_t>;
  }
  { return inner_.max_unacked(); }

#if KINCIR_HAS_ASIO
  /// Receives asynchronously through the wrapped subscriber (completion signature
  /// `void(std::error_code, Message)`); the handler keeps its executor and cancellation slot. A
  /// message is recorded as received; an error other than cancellation is recorded as an error.
  /// The collector, not this wrapper, must outlive the operation.
  template <class CompletionToken>
  auto async_receive(CompletionToken&& token) requires AsyncSubscriber<inner_type> {
    return asio::async_initiate<CompletionToken, void(std::error_code, Message)>(
        [this](auto handler) {
          const Stamp t = start();
          auto slot = asio::get_associated_cancellation_slot(handler);
          auto executor = asio::get_associated_executor(handler);
          auto recording = [collector = collector_, t, handler = std::move(handler)](std::error_code ec,
                                                                                     Message message) mutable {
            if (!ec) {
              record_received(*collector, t);
            } else if (ec != asio::error::operation_aborted) {
              collector->record_error();
            }
            std::move(handler)(ec, std::move(message));
          };
          inner_.async_receive(asio::bind_cancellation_slot(slot, asio::bind_executor(executor, std::move(recording))));
        },
        token);
  }

  /// Receives asynchronously with acknowledgement through the wrapped subscriber (completion
  /// signature `void(std::error_code, Message, handle_type)`), recorded like `async_receive`; the
  /// handler keeps its executor and cancellation slot.
  template <class CompletionToken, class S = inner_type>
  requires AsyncAckSubscriber<S>
  auto async_receive_with_ack(CompletionToken&& token) {
    using handle_t = typename S::handle_type;
    return asio::async_initiate<CompletionToken, void(std::error_code, Message, handle_t)>(
        [this](auto handler) {
          const Stamp t = start();
          auto slot = asio::get_associated_cancellation_slot(handler);
          auto executor = asio::get_associated_executor(handler);
          auto recording = [collector = collector_, t, handler = std::move(handler)](
                               std::error_code ec, Message message, handle_t handle) mutable {
            if (!ec) {
              record_received(*collector, t);
            } else if (ec != asio::error::operation_aborted) {
              collector->record_error();
            }
            std::move(handler)(ec, std::move(message), std::move(handle));
          };
          inner_.async_receive_with_ack(
              asio::bind_cancellation_slot(slot, asio::bind_executor(executor, std::move(recording))));
        },
        token);
  }
#endif

  /// Publishing without waiting, where the wrapped publisher has it (counted like `publish`).
  void try_publish(std::string_view topic, std::vector<Message>&& batch, std::error_code& ec) requires
      requires(inner_type& p, std::string_view s, std::vector<Message>&& b, std::error_code& e) {
    p.try_publish(s, std::move(b), e);
  }
  {
    const Stamp t = start();
    const auto n = static_cast<std::uint64_t>(batch.size());
    inner_.try_publish(topic, std::move(batch), ec);
    published(ec, t, n);
  }
  void try_publish(std::string_view topic, Message&& message, std::error_code& ec) requires
      requires(inner_type& p, std::string_view s, Message&& m, std::error_code& e) {
    p.try_publish(s, std::move(m), e);
  }
  {
    const Stamp t = start();
    inner_.try_publish(topic, std::move(message), ec);
    published(ec, t, 1);
  }

  auto receive(std::error_code& ec) requires Subscriber<inner_type> {
    const Stamp t = start();
    auto message = inner_.receive(ec);
    if (ec) {
      collector_->record_error();
    } else {
      finish_receive(t);
    }
    return message;
  }

  auto receive() requires Subscriber<inner_type> {
    const Stamp t = start();
    auto message = guarded([&] { return inner_.receive(); });
    finish_receive(t);
    return message;
  }

  auto try_receive() requires Subscriber<inner_type> {
    const Stamp t = start();
    auto message = guarded([&] { return inner_.try_receive(); });
    if (message) finish_receive(t);
    return message;
  }

  template <class Rep, class Period>
  auto receive_for(std::chrono::duration<Rep, Period> timeout) requires Subscriber<inner_type> {
    const Stamp t = start();
    auto message = guarded([&] { return inner_.receive_for(timeout); });
    if (message) finish_receive(t);
    return message;
  }

  // --- AckSubscriber ------------------------------------------------------------------------

  template <class S = inner_type>
  requires AckSubscriber<S>
  auto receive_with_ack(std::error_code& ec) {
    const Stamp t = start();
    auto delivery = inner_.receive_with_ack(ec);
    if (ec) {
      collector_->record_error();
    } else {
      finish_receive(t);
    }
    return delivery;
  }

  template <class S = inner_type>
  requires AckSubscriber<S>
  auto receive_with_ack() {
    const Stamp t = start();
    auto delivery = guarded([&] { return inner_.receive_with_ack(); });
    finish_receive(t);
    return delivery;
  }

  template <class Rep, class Period, class S = inner_type>
  requires AckSubscriber<S>
  auto receive_with_ack_for(std::chrono::duration<Rep, Period> timeout, std::error_code& ec) {
    const Stamp t = start();
    auto delivery = inner_.receive_with_ack_for(timeout, ec);
    if (ec) {
      collector_->record_error();
    } else if (delivery) {
      finish_receive(t);
    }
    return delivery;
  }

  template <class S = inner_type>
  requires AckSubscriber<S>
  void ack(const typename S::handle_type& handle, std::error_code& ec) {
    inner_.ack(handle, ec);
    settled(ec, 1, true);
  }

  template <class S = inner_type>
  requires AckSubscriber<S>
  void ack(const typename S::handle_type& handle) {
    guarded([&] { inner_.ack(handle); });
    collector_->record_ack();
  }

  template <class S = inner_type>
  requires AckSubscriber<S>
  void nack(const typename S::handle_type& handle, bool requeue, std::error_code& ec) {
    inner_.nack(handle, requeue, ec);
    settled(ec, 1, false);
  }

  template <class S = inner_type>
  requires AckSubscriber<S>
  void nack(const typename S::handle_type& handle, bool requeue) {
    guarded([&] { inner_.nack(handle, requeue); });
    collector_->record_nack();
  }

  /// A nack with a reason (for the dead-lettered message's metadata), where the wrapped subscriber
  /// takes one; recorded like `nack`.
  template <class S = inner_type>
  requires AckSubscriber<S> &&
      requires(S& s, const typename S::handle_type& h, std::string_view r, std::error_code& e) {
    s.nack(h, true, r, e);
  }
  void nack(const typename S::handle_type& handle, bool requeue, std::string_view reason, std::error_code& ec) {
    inner_.nack(handle, requeue, reason, ec);
    settled(ec, 1, false);
  }

  template <class S = inner_type>
  requires AckSubscriber<S> && requires(S& s, const typename S::handle_type& h, std::string_view r) {
    s.nack(h, true, r);
  }
  void nack(const typename S::handle_type& handle, bool requeue, std::string_view reason) {
    guarded([&] { inner_.nack(handle, requeue, reason); });
    collector_->record_nack();
  }

  template <class S = inner_type>
  requires AckSubscriber<S> &&
      requires(S& s, std::span<const typename S::handle_type> hs, std::string_view r, std::error_code& e) {
    s.nack_batch(hs, true, r, e);
  }
  void nack_batch(std::span<const typename S::handle_type> handles, bool requeue, std::string_view reason,
                  std::error_code& ec) {
    inner_.nack_batch(handles, requeue, reason, ec);
    settled(ec, handles.size(), false);
  }

  template <class S = inner_type>
  requires AckSubscriber<S> && requires(S& s, std::span<const typename S::handle_type> hs, std::string_view r) {
    s.nack_batch(hs, true, r);
  }
  void nack_batch(std::span<const typename S::handle_type> handles, bool requeue, std::string_view reason) {
    guarded([&] { inner_.nack_batch(handles, requeue, reason); });
    collector_->record_nack(handles.size());
  }

  template <class S = inner_type>
  requires AckSubscriber<S>
  void ack_batch(std::span<const typename S::handle_type> handles, std::error_code& ec) {
    inner_.ack_batch(handles, ec);
    settled(ec, handles.size(), true);
  }

  template <class S = inner_type>
  requires AckSubscriber<S>
  void ack_batch(std::span<const typename S::handle_type> handles) {
    guarded([&] { inner_.ack_batch(handles); });
    collector_->record_ack(handles.size());
  }

  template <class S = inner_type>
  requires AckSubscriber<S>
  void nack_batch(std::span<const typename S::handle_type> handles, bool requeue, std::error_code& ec) {
    inner_.nack_batch(handles, requeue, ec);
    settled(ec, handles.size(), false);
  }

  template <class S = inner_type>
  requires AckSubscriber<S>
  void nack_batch(std::span<const typename S::handle_type> handles, bool requeue) {
    guarded([&] { inner_.nack_batch(handles, requeue); });
    collector_->record_nack(handles.size());
  }

 private:
  using clock = std::chrono::steady_clock;

  struct Stamp {
    clock::time_point start;
    bool timed;
  };

  Stamp start() const noexcept {
    if (mask_ != 0 && (detail::metrics::tls_tick++ & mask_) != 0) return {clock::time_point{}, false};
    return {clock::now(), true};
  }

  void finish_publish(const Stamp& t, std::uint64_t messages) const noexcept {
    if (t.timed) {
      collector_->record_publish(clock::now() - t.start, messages);
    } else {
      collector_->count_publish(messages);
    }
  }

  void finish_receive(const Stamp& t) const noexcept { record_received(*collector_, t); }

  static void record_received(MetricsCollector& collector, const Stamp& t) noexcept {
    if (t.timed) {
      collector.record_receive(clock::now() - t.start);
    } else {
      collector.count_receive();
    }
  }

  /// The end of an error-code publish: an error, or `messages` published.
  void published(const std::error_code& ec, const Stamp& t, std::uint64_t messages) const noexcept {
    if (ec) {
      collector_->record_error();
    } else {
      finish_publish(t, messages);
    }
  }

  void settled(const std::error_code& ec, std::uint64_t n, bool ack) const noexcept {
    if (ec) {
      collector_->record_error();
    } else if (ack) {
      collector_->record_ack(n);
    } else {
      collector_->record_nack(n);
    }
  }

  /// Runs `f`, recording an error if it throws; the exception propagates unchanged.
  template <class F>
  decltype(auto) guarded(F&& f) const {
    try {
      return std::forward<F>(f)();
    } catch (...) {
      collector_->record_error();
      throw;
    }
  }

  T inner_;
  MetricsCollector* collector_;
  std::uint32_t mask_;
};

/// Wraps a publisher and/or subscriber so that its calls are recorded into `collector`. An
/// lvalue is wrapped by reference (it must outlive the wrapper), an rvalue is moved in. The
/// collector must outlive the wrapper.
template <class T>
requires Publisher<std::remove_cvref_t<T>> || Subscriber<std::remove_cvref_t<T>> Instrumented<T> instrumented(
    T&& inner, MetricsCollector& collector, InstrumentOptions options = {}) {
  return Instrumented<T>(std::forward<T>(inner), collector, options);
}

}  // namespace kincir
