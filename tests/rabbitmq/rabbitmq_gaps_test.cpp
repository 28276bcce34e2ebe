// RabbitMQ behaviours against the test node ([broker]; see broker.sh): cancelling async_receive
// through a cancellation slot, a channel close crossing the broker's, and connection.blocked
// under a memory alarm, and the byte bound of a subscriber's buffer.
#include <kincir/rabbitmq/subscriber.hpp>

#include <kincir/rabbitmq/publisher.hpp>  // messages for the subscriber

#include <asio/bind_cancellation_slot.hpp>  // a slot for async_receive
#include <asio/cancellation_signal.hpp>     // the signal that cancels
#include <asio/post.hpp>                    // channel operations on the strand

#include <array>    // ctl output buffer
#include <chrono>   // deadlines
#include <cstdio>   // popen
#include <cstdlib>  // std::getenv
#include <future>   // completions
#include <string>   // payloads
#include <thread>   // polling
#include <vector>   // batches

#include "broker_ctl.hpp"
#include "support/catch.hpp"

using namespace std::chrono_literals;
using kincir::Message;
using kincir::rabbitmq::Connection;
using kincir::rabbitmq::RabbitMQConfig;
using kincir::rabbitmq::RabbitMQPublisher;
using kincir::rabbitmq::RabbitMQSubscriber;
namespace amqp = kincir::rabbitmq::amqp;

namespace {

RabbitMQConfig node_config() {
  RabbitMQConfig c = RabbitMQConfig::for_testing();
  c.apply_uri(kincir::test::node_uri());
  return c;
}

std::string fresh(const std::string& base) { return base + "." + kincir::Uuid::new_v4().to_string().substr(0, 8); }

/// Runs rabbitmqctl against the test node; true when it exited 0.
bool rabbitmqctl(const std::string& args) {
  const char* ctl = std::getenv("KINCIR_RABBITMQ_CTL");  // NOLINT(concurrency-mt-unsafe): read once per test
  if (ctl == nullptr) return false;
  const std::string command = std::string(ctl) + " " + args + " >/dev/null 2>&1";
  return std::system(command.c_str()) == 0;  // NOLINT(cert-env33-c,concurrency-mt-unsafe): the test's own script
}

/// rabbitmqctl's output.
std::string ctl_output(const std::string& args) {
  const char* ctl = std::getenv("KINCIR_RABBITMQ_CTL");  // NOLINT(concurrency-mt-unsafe): read once per test
  if (ctl == nullptr) return {};
  const std::string command = std::string(ctl) + " " + args + " 2>&1";
  std::string out;
  FILE* p = popen(command.c_str(), "r");  // NOLINT(cert-env33-c): the test's own script
  if (p == nullptr) return out;
  std::array<char, 512> buf{};
  while (std::fgets(buf.data(), static_cast<int>(buf.size()), p) != nullptr) out += buf.data();
  pclose(p);
  return out;
}

/// Raises a memory alarm on the node and clears it again when it goes out of scope.
struct MemoryAlarm {
  MemoryAlarm() { raised = rabbitmqctl("set_vm_memory_high_watermark 0.0000001"); }
  MemoryAlarm(const MemoryAlarm&) = delete;
  MemoryAlarm& operator=(const MemoryAlarm&) = delete;
  ~MemoryAlarm() { (void)rabbitmqctl("set_vm_memory_high_watermark 0.4"); }
  bool raised = false;
};

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

}  // namespace

TEST_CASE("async_receive: a cancellation slot aborts it and loses no delivery", "[broker][cancel]") {
  auto conn = Connection::open(node_config());
  const std::string topic = fresh("cancel-slot");
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic);
  asio::cancellation_signal signal;
  std::promise<std::error_code> aborted;
  sub.async_receive(asio::bind_cancellation_slot(
      signal.slot(), [&aborted](std::error_code ec, const Message&) { aborted.set_value(ec); }));
  signal.emit(asio::cancellation_type::terminal);
  auto f = aborted.get_future();
  REQUIRE(f.wait_for(5s) == std::future_status::ready);
  CHECK(f.get() == asio::error::operation_aborted);
  signal.emit(asio::cancellation_type::terminal);  // a second signal finds nothing to cancel

  RabbitMQPublisher pub(conn);
  pub.publish(topic, Message(std::string("after the cancel")));
  std::promise<std::string> received;
  sub.async_receive(asio::bind_cancellation_slot(signal.slot(), [&received](std::error_code, const Message& m) {
    received.set_value(std::string(m.payload.view()));
  }));
  auto r = received.get_future();
  REQUIRE(r.wait_for(5s) == std::future_status::ready);
  CHECK(r.get() == "after the cancel");
  signal.emit(asio::cancellation_type::terminal);  // after completion: no effect
  CHECK(conn->is_open());
}

TEST_CASE("a channel close crossing the broker's leaves the connection up", "[broker][channel]") {
  auto conn = Connection::open(node_config());
  auto ch = conn->open_channel();
  // In one write: a passive declare of a missing queue (the broker closes the channel with 404)
  // and our own channel.close. The broker's close crosses ours; both sides answer close-ok.
  std::promise<std::error_code> declared;
  std::promise<void> closed;
  asio::post(conn->executor(), [&, ch] {
    amqp::QueueDeclare passive;
    passive.queue = fresh("no-such-queue");
    passive.passive = true;
    ch->async_call(passive, [&declared](std::error_code ec, amqp::Method&) { declared.set_value(ec); });
    ch->async_close([&closed] { closed.set_value(); });
    conn->core()->end_turn();
  });
  REQUIRE(closed.get_future().wait_for(5s) == std::future_status::ready);
  auto d = declared.get_future();
  REQUIRE(d.wait_for(1s) == std::future_status::ready);
  // The broker's 404 arrived while our close was outstanding: that is the crossing.
  CHECK(d.get() == kincir::rabbitmq::reply_code::not_found);
  CHECK_FALSE(ch->is_open());
  CHECK(conn->is_open());
  CHECK_FALSE(conn->error());
  auto again = conn->open_channel();  // the connection still works
  amqp::QueueDeclare q;
  q.exclusive = true;
  CHECK_NOTHROW(again->call(q));
}

TEST_CASE("connection.blocked: publishers pause with a deadline, the state is visible", "[broker][blocked]") {
  auto cfg = node_config();
  cfg.confirm_timeout = 1500ms;
  auto conn = Connection::open(cfg);
  const std::string topic = fresh("blocked");
  RabbitMQPublisher pub(conn);
  pub.publish(topic, Message(std::string("before the alarm")));  // a publishing connection
  std::error_code ec;
  {
    MemoryAlarm alarm;
    REQUIRE(alarm.raised);
    // The broker blocks a connection once it publishes under the alarm.
    pub.publish(topic, Message(std::string("under the alarm")), ec);
    CHECK(ec);  // never confirmed while blocked: a deadline, not a hang
    REQUIRE(eventually([&] { return conn->blocked(); }, 5s));
    CHECK(pub.blocked());
    CHECK(conn->blocked_reason().find("memory") != std::string::npos);
    const auto start = std::chrono::steady_clock::now();
    pub.publish(topic, Message(std::string("while blocked")), ec);
    CHECK(ec == kincir::rabbitmq::errc::connection_blocked);  // not sent: waited for the deadline
    CHECK(std::chrono::steady_clock::now() - start >= 1s);
    CHECK(conn->is_open());
  }
  REQUIRE(eventually([&] { return !conn->blocked(); }, 10s));
  pub.publish(topic, Message(std::string("after the alarm")), ec);
  CHECK_FALSE(ec);
}

TEST_CASE("a blocked connection: unsubscribe and Channel::close return within call_timeout and the ids stay taken",
          "[broker][blocked]") {
  // RabbitMQ stops reading a blocked connection: close-ok does not come before the alarm clears.
  // unsubscribe() used to wait for it (a router's close with it).
  auto cfg = node_config();
  cfg.confirm_timeout = 1s;
  cfg.call_timeout = 1500ms;
  auto conn = Connection::open(cfg);
  const std::string topic = fresh("blocked-close");
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic, "g");
  auto raw = conn->open_channel();
  RabbitMQPublisher pub(conn);
  pub.publish(topic, Message(std::string("before the alarm")));
  REQUIRE(sub.receive_for(5s));
  std::error_code ec;
  {
    MemoryAlarm alarm;
    REQUIRE(alarm.raised);
    pub.publish(topic, Message(std::string("under the alarm")), ec);  // blocks the connection
    REQUIRE(eventually([&] { return conn->blocked(); }, 5s));
    auto start = std::chrono::steady_clock::now();
    sub.unsubscribe();
    CHECK(std::chrono::steady_clock::now() - start < 5s);
    start = std::chrono::steady_clock::now();
    raw->close(ec);
    CHECK(ec == kincir::rabbitmq::errc::call_timeout);
    CHECK(std::chrono::steady_clock::now() - start < 5s);
    CHECK_FALSE(raw->is_open());
    CHECK(conn->is_open());
  }
  REQUIRE(eventually([&] { return !conn->blocked(); }, 10s));
  // The close-oks arrive once the broker reads again; the connection and new channels work.
  sub.subscribe(topic, "g");
  auto m = sub.receive_for(5s);  // "under the alarm", or a redelivery of the first
  CHECK(m);
  auto again = conn->open_channel();
  amqp::QueueDeclare q;
  q.exclusive = true;
  CHECK_NOTHROW(again->call(q));
  CHECK(conn->is_open());
}

TEST_CASE("a subscriber's buffer is bounded in bytes: the consumer pauses and resumes", "[broker][buffer]") {
  auto cfg = node_config();
  cfg.prefetch = 50;
  cfg.max_buffered_bytes = std::size_t{16} * 1024;
  auto conn = Connection::open(cfg);
  const std::string topic = fresh("bytes");
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic, "g");  // a named queue: what is not consumed waits there
  RabbitMQPublisher pub(conn);
  constexpr int kCount = 200;
  std::vector<Message> batch;
  for (int i = 0; i < kCount; ++i) batch.push_back(Message(std::to_string(i) + ":" + std::string(4096, 'x')));
  pub.publish(topic, std::move(batch));

  // Nobody receives: the buffer passes 16 KiB and the consumer is cancelled (the queue has none).
  REQUIRE(eventually([&] { return sub.paused(); }, 5s));
  CHECK(sub.buffered_bytes() >= cfg.max_buffered_bytes);
  const std::string queues = ctl_output("list_queues name consumers");
  CHECK(queues.find(topic + ".g\t0") != std::string::npos);

  // Receiving drains the buffer, the consumer resumes, and every message arrives once, in order.
  for (int i = 0; i < kCount; ++i) {
    auto m = sub.receive_for(5s);
    REQUIRE(m);
    const std::string text(m->payload.view());
    CHECK(text.substr(0, text.find(':')) == std::to_string(i));
  }
  CHECK_FALSE(sub.receive_for(200ms));
  CHECK_FALSE(sub.paused());
  CHECK(conn->is_open());
}

TEST_CASE("automatic acks reach the broker when the flow stops", "[broker][acks]") {
  auto conn = Connection::open(node_config());
  const std::string topic = fresh("auto-ack");
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic, "g");
  RabbitMQPublisher pub(conn);
  std::vector<Message> batch;
  for (int i = 0; i < 3; ++i) batch.push_back(Message(std::to_string(i)));
  pub.publish(topic, std::move(batch));
  for (int i = 0; i < 3; ++i) REQUIRE(sub.receive_for(5s));
  // Nothing else arrives, yet the acks of what was handed out go out (within the ack delay).
  std::this_thread::sleep_for(100ms);
  const std::string queues = ctl_output("list_queues name messages_unacknowledged");
  CHECK(queues.find(topic + ".g\t0") != std::string::npos);
}

TEST_CASE("move-assigning over a publisher or subscriber closes the overwritten one's channel", "[broker][move]") {
  auto conn = Connection::open(node_config());
  const std::string topic = fresh("moved");
  RabbitMQSubscriber a(conn);
  a.subscribe(topic, "old");
  RabbitMQSubscriber b(conn);
  b.subscribe(topic, "new");
  REQUIRE(eventually(
      [&] { return ctl_output("list_queues name consumers").find(topic + ".old\t1") != std::string::npos; }, 5s));
  a = std::move(b);  // a's consumer on <topic>.old goes now, not when the connection closes
  CHECK(eventually(
      [&] { return ctl_output("list_queues name consumers").find(topic + ".old\t0") != std::string::npos; }, 10s));
  RabbitMQPublisher p(conn);
  RabbitMQPublisher q(conn);
  p = std::move(q);
  p.publish(topic, Message(std::string("after the moves")));
  const auto m = a.receive_for(5s);
  REQUIRE(m);
  CHECK(m->payload.view() == "after the moves");
  CHECK(conn->is_open());
}
