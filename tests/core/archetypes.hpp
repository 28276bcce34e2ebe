// Small types that model kincir's concepts, for the positive concept tests and as the base of
// the compile-fail snippets (which remove one member each).
#pragma once

#include <kincir/core/ack.hpp>
#include <kincir/core/concepts.hpp>
#include <kincir/core/error.hpp>

#include <chrono>    // receive_for
#include <deque>     // queued messages
#include <optional>  // try_receive
#include <span>      // batch settlement
#include <string>    // topic
#include <utility>   // std::pair
#include <vector>    // batches

namespace kincir::test {

/// A single-threaded loopback: what is published to the subscribed topic is received back.
class LoopbackBus {
 public:
  using handle_type = BasicAckHandle;

  void publish(std::string_view topic, std::vector<Message>&& batch, std::error_code& ec) {
    ec.clear();
    if (topic.empty()) {
      ec = errc::invalid_topic;
      return;
    }
    if (topic != topic_) return;
    for (auto& m : batch) queue_.push_back(std::move(m));
  }
  void publish(std::string_view topic, std::vector<Message>&& batch) {
    std::error_code ec;
    publish(topic, std::move(batch), ec);
    throw_if(ec, "publish");
  }
  void publish(std::string_view topic, Message&& m, std::error_code& ec) {
    std::vector<Message> batch;
    batch.push_back(std::move(m));
    publish(topic, std::move(batch), ec);
  }
  void publish(std::string_view topic, Message&& m) {
    std::error_code ec;
    publish(topic, std::move(m), ec);
    throw_if(ec, "publish");
  }

  void subscribe(std::string_view topic, std::error_code& ec) {
    ec.clear();
    topic_ = topic;
  }
  void subscribe(std::string_view topic) { topic_ = topic; }

  Message receive(std::error_code& ec) {
    ec.clear();
    if (queue_.empty()) {
      ec = errc::timeout;
      return {};
    }
    Message m = std::move(queue_.front());
    queue_.pop_front();
    return m;
  }
  Message receive() {
    std::error_code ec;
    Message m = receive(ec);
    throw_if(ec, "receive");
    return m;
  }
  std::optional<Message> try_receive() {
    std::error_code ec;
    Message m = receive(ec);
    if (ec) return std::nullopt;
    return m;
  }
  std::optional<Message> receive_for(std::chrono::milliseconds) { return try_receive(); }

  std::pair<Message, handle_type> receive_with_ack(std::error_code& ec) {
    Message m = receive(ec);
    handle_type h(topic_, m.uuid, 1, BasicAckHandle::clock::now(), ++tag_);
    return {std::move(m), std::move(h)};
  }
  std::pair<Message, handle_type> receive_with_ack() {
    std::error_code ec;
    auto r = receive_with_ack(ec);
    throw_if(ec, "receive_with_ack");
    return r;
  }
  std::optional<std::pair<Message, handle_type>> receive_with_ack_for(std::chrono::milliseconds, std::error_code& ec) {
    if (queue_.empty()) {
      ec.clear();
      return std::nullopt;
    }
    return receive_with_ack(ec);
  }
  void ack(const handle_type&, std::error_code& ec) { ec.clear(); }
  void ack(const handle_type&) {}
  void nack(const handle_type&, bool, std::error_code& ec) { ec.clear(); }
  void nack(const handle_type&, bool) {}
  void ack_batch(std::span<const handle_type>, std::error_code& ec) { ec.clear(); }
  void ack_batch(std::span<const handle_type>) {}
  void nack_batch(std::span<const handle_type>, bool, std::error_code& ec) { ec.clear(); }
  void nack_batch(std::span<const handle_type>, bool) {}

  template <class Handler>
  void async_publish(std::string_view topic, std::vector<Message>&& batch, Handler&& handler) {
    std::error_code ec;
    publish(topic, std::move(batch), ec);
    handler(ec);
  }
  template <class Handler>
  void async_receive(Handler&& handler) {
    std::error_code ec;
    Message m = receive(ec);
    handler(ec, std::move(m));
  }

 private:
  std::string topic_;
  std::deque<Message> queue_;
  std::uint64_t tag_ = 0;
};

}  // namespace kincir::test
