/// @file
/// The concepts generic kincir code is written against: `Publisher`, `Subscriber`,
/// `AckHandle`, `AckSubscriber`, `AsyncPublisher`, `AsyncSubscriber`, `AsyncAckSubscriber`.
///
/// Batching, metrics and the router accept any type that models these, so the same code runs
/// over the in-memory broker and the RabbitMQ adapter.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/message.hpp>

#include <chrono>        // receive_for timeouts, handle timestamps
#include <concepts>      // std::convertible_to, std::integral
#include <optional>      // try_receive results
#include <span>          // batch settlement
#include <string_view>   // topics
#include <system_error>  // std::error_code
#include <utility>       // std::pair
#include <vector>        // batches

namespace kincir {

namespace detail {

/// Completion handler archetypes: the concepts check async members with plain callbacks (every
/// Asio completion token accepts those), so this header needs no Asio include.
struct publish_handler_archetype {
  void operator()(std::error_code) const {}
};
struct receive_handler_archetype {
  void operator()(std::error_code, Message) const {}  // NOLINT(performance-unnecessary-value-param): the signature
};
template <class Handle>
struct receive_with_ack_handler_archetype {
  // NOLINTNEXTLINE(performance-unnecessary-value-param): the signature
  void operator()(std::error_code, Message, Handle) const {}
};

}  // namespace detail

/// Sends messages to topics. Both the throwing and the `std::error_code&` forms are required,
/// for a batch (moved in: no payload or metadata is copied) and for one message.
///
/// The contract on failure, which generic code (batching, the router) relies on: the batch
/// vector then holds exactly the messages that were not published, in their order; the published
/// ones are removed, and when nothing was published the vector is left as it was. With the
/// in-memory broker the published messages are always a prefix; a broker that settles messages
/// one by one (RabbitMQ: one confirmed, the next nacked) may leave any ordered subset. A failed
/// single-message publish leaves the message as it was.
template <class P>
concept Publisher = requires(P& p, std::string_view topic, std::vector<Message>&& batch, Message&& message,
                             std::error_code& ec) {
  p.publish(topic, std::move(batch));
  p.publish(topic, std::move(batch), ec);
  p.publish(topic, std::move(message));
  p.publish(topic, std::move(message), ec);
};

/// Receives messages from the topic it subscribed to.
/// `receive` blocks; `try_receive` never blocks; `receive_for` waits at most the timeout.
template <class S>
concept Subscriber = requires(S& s, std::string_view topic, std::error_code& ec) {
  s.subscribe(topic);
  s.subscribe(topic, ec);
  { s.receive() } -> std::convertible_to<Message>;
  { s.receive(ec) } -> std::convertible_to<Message>;
  { s.try_receive() } -> std::convertible_to<std::optional<Message>>;
  { s.receive_for(std::chrono::milliseconds{1}) } -> std::convertible_to<std::optional<Message>>;
};

/// What an ack-capable subscriber hands out with a delivery.
template <class H>
concept AckHandle = std::copyable<H> && requires(const H& h) {
  { h.topic() } -> std::convertible_to<std::string_view>;
  { h.message_id() } -> std::convertible_to<Uuid>;
  { h.delivery_count() } -> std::integral;
  { h.is_retry() } -> std::convertible_to<bool>;
  { h.timestamp() } -> std::convertible_to<std::chrono::system_clock::time_point>;
};

/// A subscriber whose deliveries must be settled: `ack`, or `nack` with or without requeue.
/// `receive_with_ack()` returns the message and its handle (`auto [message, handle] = ...`);
/// `receive_with_ack_for(timeout, ec)` waits at most `timeout` (empty on timeout).
template <class S>
concept AckSubscriber = Subscriber<S> && AckHandle<typename S::handle_type> &&
    requires(S& s, const typename S::handle_type& h, std::span<const typename S::handle_type> hs, bool requeue,
             std::error_code& ec) {
  { s.receive_with_ack() } -> std::convertible_to<std::pair<Message, typename S::handle_type>>;
  { s.receive_with_ack(ec) } -> std::convertible_to<std::pair<Message, typename S::handle_type>>;
  {
    s.receive_with_ack_for(std::chrono::milliseconds{1}, ec)
    } -> std::convertible_to<std::optional<std::pair<Message, typename S::handle_type>>>;
  s.ack(h);
  s.ack(h, ec);
  s.nack(h, requeue);
  s.nack(h, requeue, ec);
  s.ack_batch(hs);
  s.ack_batch(hs, ec);
  s.nack_batch(hs, requeue);
  s.nack_batch(hs, requeue, ec);
};

/// A publisher with an Asio-style `async_publish(topic, batch, token)`; completion signature
/// `void(std::error_code)`.
template <class P>
concept AsyncPublisher = requires(P& p, std::string_view topic, std::vector<Message>&& batch) {
  p.async_publish(topic, std::move(batch), detail::publish_handler_archetype{});
};

/// A subscriber with an Asio-style `async_receive(token)`; completion signature
/// `void(std::error_code, Message)`.
template <class S>
concept AsyncSubscriber = requires(S& s) {
  s.async_receive(detail::receive_handler_archetype{});
};

/// An `AckSubscriber` with an Asio-style `async_receive_with_ack(token)`; completion signature
/// `void(std::error_code, Message, handle_type)`. The delivery is settled with `ack`/`nack` like one
/// of `receive_with_ack`; a receive cancelled through the token's cancellation slot completes with
/// `asio::error::operation_aborted` and never takes a delivery it does not hand to the handler.
template <class S>
concept AsyncAckSubscriber = AckSubscriber<S> && requires(S& s) {
  s.async_receive_with_ack(detail::receive_with_ack_handler_archetype<typename S::handle_type>{});
};

}  // namespace kincir
