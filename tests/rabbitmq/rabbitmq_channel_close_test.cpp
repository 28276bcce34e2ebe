// A soft error closes only the channel, also when the broker still sends deliveries after its
// channel.close: RabbitMQ forwards the deliveries its queues had already handed to the channel
// (a reject or nack frees a prefetch slot just before the failing method), and they reach the
// client after its close-ok freed the id. They are stale, not a connection error (504).
#include <kincir/rabbitmq/publisher.hpp>   // RabbitMQPublisher
#include <kincir/rabbitmq/subscriber.hpp>  // RabbitMQSubscriber

#include <asio/post.hpp>  // channel operations on the strand

#include <atomic>        // delivery counts
#include <chrono>        // deadlines
#include <cstdint>       // tags
#include <future>        // the close
#include <memory>        // the channel
#include <mutex>         // tags
#include <string>        // names
#include <system_error>  // error codes
#include <thread>        // settling
#include <vector>        // batches

#include "node.hpp"  // node(), fresh(), eventually()
#include "support/catch.hpp"

using namespace std::chrono_literals;

// A namespace of its own: the files of this binary may be compiled as one unit.
namespace channel_close_test {
namespace {

using kincir::Message;
using kincir::rabbitmq::Channel;
using kincir::rabbitmq::ChannelEvents;
using kincir::rabbitmq::Connection;
using kincir::rabbitmq::Layout;
using kincir::rabbitmq::RabbitMQPublisher;
namespace amqp = kincir::rabbitmq::amqp;

TEST_CASE("deliveries the broker sends after closing a channel with 406 leave the connection up", "[broker][channel]") {
  auto cfg = kincir::test::node();
  cfg.topology.layout = Layout::queue_per_topic;  // the queue is named by the topic
  const std::string queue = kincir::test::fresh("late-deliveries");
  {
    RabbitMQPublisher pub(Connection::open(cfg));
    std::vector<Message> batch;
    for (int i = 0; i < 200; ++i) batch.emplace_back(std::to_string(i));
    pub.publish(queue, std::move(batch));
  }

  for (int round = 0; round < 5; ++round) {
    INFO("round " << round);
    auto conn = Connection::open(cfg);
    auto holder = std::make_shared<std::shared_ptr<Channel>>();
    auto deliveries = std::make_shared<std::atomic<int>>(0);
    auto closed = std::make_shared<std::promise<std::error_code>>();
    auto core = conn->core();
    ChannelEvents events;
    // Weak: the channel owns its events, and a strong capture of the holder would keep the
    // channel (and through it the connection) alive for ever.
    events.on_delivery = [weak_holder = std::weak_ptr(holder), deliveries,
                          weak_core = std::weak_ptr(core)](amqp::Delivery& d) {
      // The fourth delivery fills the prefetch: reject it (the queue sends the next one at once)
      // and, in the same write, ack a tag the broker never sent (it closes the channel with 406).
      if (deliveries->fetch_add(1) + 1 != 4) return;
      const std::uint64_t tag = d.delivery_tag;
      auto strong_core = weak_core.lock();
      auto strong_holder = weak_holder.lock();
      if (!strong_core || !strong_holder) return;
      asio::post(strong_core->strand(), [holder = strong_holder, core = strong_core, tag] {
        auto& ch = *holder;
        std::error_code ec;
        amqp::reject(ch->state(), tag, false, ec);
        amqp::ack(ch->state(), tag + 1000, false, ec);
        ch->touch();
        core->end_turn();
      });
    };
    events.on_closed = [closed](std::error_code ec) { closed->set_value(ec); };
    *holder = conn->open_channel(std::move(events));
    amqp::BasicQos qos;
    qos.prefetch_count = 4;
    (*holder)->call(qos);
    amqp::BasicConsume consume;
    consume.queue = queue;
    (*holder)->call(consume);

    auto f = closed->get_future();
    REQUIRE(f.wait_for(5s) == std::future_status::ready);
    CHECK(f.get() == kincir::rabbitmq::reply_code::precondition_failed);
    // The delivery the broker sent after its channel.close comes in meanwhile.
    std::this_thread::sleep_for(200ms);
    CHECK(conn->is_open());
    CHECK_FALSE(conn->error());
    // The connection still works, on a channel of its own.
    auto again = conn->open_channel();
    amqp::QueueDeclare passive;
    passive.queue = queue;
    passive.passive = true;
    CHECK_NOTHROW(again->call(passive));
    CHECK(conn->is_open());
  }
}

}  // namespace
}  // namespace channel_close_test
