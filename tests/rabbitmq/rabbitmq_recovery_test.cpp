// Recovery of RabbitMQ connections and channels: the backoff and the errors worth a reconnect
// ([unit]), and against the test node ([broker]): a connection the broker closes (320) comes back
// with its consumers, server-named queues and bindings; unconfirmed publishes are republished
// marked as possible duplicates; the outage buffer's policies; a refused login during recovery
// fails clearly; a channel error recovers that channel only. Faults come from rabbitmqctl and from
// the loopback proxy of tests/support/fault_proxy.hpp.
#include <kincir/rabbitmq/recovery.hpp>

#include <kincir/rabbitmq/pool.hpp>        // a pooled publisher whose connection recovers
#include <kincir/rabbitmq/publisher.hpp>   // RabbitMQPublisher
#include <kincir/rabbitmq/subscriber.hpp>  // RabbitMQSubscriber

#include <asio/error.hpp>       // a socket error is recoverable
#include <asio/post.hpp>        // a bogus ack on the subscriber's strand
#include <asio/use_future.hpp>  // async_publish as a future

#include <chrono>  // deadlines
#include <future>  // completions
#include <mutex>   // recorded state events
#include <string>  // names
#include <thread>  // polling
#include <vector>  // events

#include "broker_ctl.hpp"
#include "node.hpp"
#include "support/catch.hpp"
#include "support/fault_proxy.hpp"

using namespace std::chrono_literals;
using kincir::Message;
using kincir::rabbitmq::Backoff;
using kincir::rabbitmq::Connection;
using kincir::rabbitmq::errc;
using kincir::rabbitmq::OutagePolicy;
using kincir::rabbitmq::RabbitMQConfig;
using kincir::rabbitmq::RabbitMQPublisher;
using kincir::rabbitmq::RabbitMQSubscriber;
using kincir::rabbitmq::RecoveryConfig;
using kincir::rabbitmq::RecoveryEvent;
using kincir::rabbitmq::RecoveryState;
using kincir::rabbitmq::reply_code;
namespace amqp = kincir::rabbitmq::amqp;

// A namespace of its own: the test files of this binary may be compiled as one unit, and its
// helpers must not meet the other files' helpers of the same name.
namespace recovery_test {
using kincir::test::close_connections_named;
using kincir::test::ctl;
namespace {

// The node's config, fresh names and polling: node.hpp.
using kincir::test::eventually;
using kincir::test::fresh;
using kincir::test::node;

/// Records the state events of a connection.
struct Events {
  std::mutex mutex;
  std::vector<RecoveryEvent> list;
  void attach(RabbitMQConfig& c) {
    c.recovery.on_state = [this](const RecoveryEvent& e) {
      const std::lock_guard lock(mutex);
      list.push_back(e);
    };
  }
  std::vector<RecoveryState> states() {
    const std::lock_guard lock(mutex);
    std::vector<RecoveryState> out;
    out.reserve(list.size());
    for (const auto& e : list) out.push_back(e.state);
    return out;
  }
  RecoveryEvent last() {
    const std::lock_guard lock(mutex);
    return list.empty() ? RecoveryEvent{} : list.back();
  }
};

std::string text(const Message& m) { return std::string(m.payload.view()); }

}  // namespace

// ------------------------------------------------------------------------------------------------
// Unit

TEST_CASE("recovery backoff: exponential, capped, jittered, deterministic", "[unit][recovery]") {
  RecoveryConfig c;
  c.initial_delay = 100ms;
  c.max_delay = 1000ms;
  c.multiplier = 2.0;
  c.jitter = 0.0;
  Backoff exact(c);
  const std::chrono::milliseconds expected[] = {100ms, 200ms, 400ms, 800ms, 1000ms, 1000ms};
  for (const auto e : expected) CHECK(exact.next() == e);
  CHECK(exact.attempts() == 6);
  exact.reset();
  CHECK(exact.next() == 100ms);

  c.jitter = 0.5;
  Backoff a(c, 42);
  Backoff b(c, 42);
  Backoff other(c, 43);
  bool differs = false;
  for (int i = 0; i < 8; ++i) {
    const auto d = a.next();
    CHECK(d == b.next());
    differs = differs || d != other.next();
    const auto cap = std::min<std::chrono::milliseconds>(1000ms, 100ms * (1 << std::min(i, 4)));
    CHECK(d <= cap);
    CHECK(d >= cap / 2);
  }
  CHECK(differs);
}

TEST_CASE("recovery: which errors are worth a reconnect", "[unit][recovery]") {
  using kincir::rabbitmq::is_recoverable;
  CHECK(is_recoverable(reply_code::connection_forced));
  CHECK(is_recoverable(errc::heartbeat_timeout));
  CHECK(is_recoverable(errc::connection_closed));
  CHECK(is_recoverable(errc::connect_timeout));
  CHECK(is_recoverable(asio::error::connection_refused));
  CHECK(is_recoverable(asio::error::connection_reset));
  CHECK_FALSE(is_recoverable(reply_code::access_refused));
  CHECK_FALSE(is_recoverable(reply_code::not_allowed));
  CHECK_FALSE(is_recoverable(reply_code::invalid_path));
  CHECK_FALSE(is_recoverable(reply_code::unexpected_frame));
  CHECK_FALSE(is_recoverable(errc::malformed_frame));
  CHECK_FALSE(is_recoverable({}));
}

TEST_CASE("recovery: a republished message carries the possible-duplicate header", "[unit][recovery]") {
  const RabbitMQConfig cfg;
  Message m(std::string("x"));
  m.metadata.set("k", "v");
  const auto plain = kincir::rabbitmq::properties_for(m, cfg, 0);
  REQUIRE(plain.headers);
  CHECK(plain.headers->find(kincir::rabbitmq::kPossibleDuplicateHeader) == nullptr);
  const auto dup = kincir::rabbitmq::properties_for(m, cfg, 0, true);
  REQUIRE(dup.headers);
  const auto* flag = dup.headers->find(kincir::rabbitmq::kPossibleDuplicateHeader);
  REQUIRE(flag != nullptr);
  // A consumer sees it as metadata; kincir's other headers stay hidden.
  amqp::Delivery d;
  d.properties = dup;
  const Message back = kincir::rabbitmq::message_of(d);
  CHECK(back.metadata.get(kincir::rabbitmq::kPossibleDuplicateHeader) == "true");
  CHECK(back.metadata.get("k") == "v");
}

// ------------------------------------------------------------------------------------------------
// Broker

TEST_CASE("recovery: a connection the broker closes comes back with its consumers and bindings", "[broker][recovery]") {
  auto cfg = node();
  const std::string name = fresh("kincir-recovery");
  cfg.connection.connection_name = name;
  Events events;
  events.attach(cfg);
  auto conn = Connection::open(cfg);
  const std::string topic = fresh("recover");
  RabbitMQSubscriber fan(conn);  // its own server-named exclusive queue
  fan.subscribe(topic);
  RabbitMQSubscriber member(conn);  // a durable group queue
  member.subscribe(topic, "g");
  RabbitMQPublisher pub(conn);
  pub.publish(topic, Message(std::string("before")));
  REQUIRE(fan.receive_for(5s));
  auto [first, handle] = member.receive_with_ack();
  CHECK(text(first) == "before");
  const std::string old_queue = fan.queue();

  REQUIRE(close_connections_named(name) == 1);
  REQUIRE(eventually([&] { return conn->recovery_stats().recovered == 1; }, 15s));
  CHECK(conn->is_open());
  const auto states = events.states();
  REQUIRE(states.size() >= 3);
  CHECK(states[0] == RecoveryState::connected);
  CHECK(states[1] == RecoveryState::recovering);
  CHECK(states[2] == RecoveryState::recovered);
  CHECK(conn->recovery_stats().recovering == 1);
  CHECK(conn->recovery_stats().attempts >= 1);

  // The handle belongs to the lost channel: refused clearly, never sent; the broker redelivers.
  std::error_code ec;
  member.ack(handle, ec);
  CHECK(ec == errc::stale_delivery);
  auto again = member.receive_with_ack_for(10s);
  REQUIRE(again);
  CHECK(again->first.uuid == first.uuid);
  CHECK(again->second.delivery_count() == 2);
  member.ack(again->second);

  // The exclusive queue was deleted with the connection: a new one, and the binding follows it.
  REQUIRE(eventually([&] { return fan.recoveries() == 1 && member.recoveries() == 1; }, 10s));
  CHECK(fan.queue() != old_queue);
  pub.publish(topic, Message(std::string("after")));
  auto m = fan.receive_for(5s);
  REQUIRE(m);
  CHECK(text(*m) == "after");
  auto n = member.receive_for(5s);
  REQUIRE(n);
  CHECK(text(*n) == "after");
}

TEST_CASE("recovery: publishes unconfirmed at the loss are republished as possible duplicates", "[broker][recovery]") {
  auto direct = node();
  kincir::test::FaultProxy proxy(direct.endpoints[0].port);
  auto cfg = direct;
  cfg.endpoints[0].port = proxy.port();
  auto conn = Connection::open(cfg);
  const std::string topic = fresh("republish");
  RabbitMQSubscriber sub(Connection::open(direct));
  sub.subscribe(topic, "g");
  RabbitMQPublisher pub(conn);
  pub.publish(topic, Message(std::string("warm")));  // exchange declared, channel open
  REQUIRE(sub.receive_for(5s));

  // The publish leaves the client but the proxy holds it; the cut loses it.
  proxy.stall(10s);
  const Message original(std::string("held"));
  auto outcome = pub.async_publish(topic, Message(original), asio::use_future);
  std::this_thread::sleep_for(200ms);
  proxy.cut_all();
  REQUIRE(outcome.wait_for(15s) == std::future_status::ready);
  CHECK_NOTHROW(outcome.get());  // exactly one outcome: acked after the republish
  CHECK(pub.republished() == 1);
  auto m = sub.receive_for(5s);
  REQUIRE(m);
  CHECK(m->uuid == original.uuid);
  CHECK(m->metadata.get(kincir::rabbitmq::kPossibleDuplicateHeader) == "true");
  CHECK_FALSE(sub.receive_for(300ms));
}

TEST_CASE("recovery: while down, publishes wait up to their deadline or fail fast past the buffer",
          "[broker][recovery]") {
  auto direct = node();
  kincir::test::FaultProxy proxy(direct.endpoints[0].port);
  const std::string topic = fresh("outage");

  auto fast_cfg = direct;
  fast_cfg.endpoints[0].port = proxy.port();
  fast_cfg.recovery.outage_policy = OutagePolicy::fail_fast;
  fast_cfg.recovery.max_buffered_messages = 2;
  Events events;
  events.attach(fast_cfg);
  auto fast_conn = Connection::open(fast_cfg);
  RabbitMQPublisher fast(fast_conn);

  auto wait_cfg = fast_cfg;
  wait_cfg.recovery.outage_policy = OutagePolicy::wait;
  wait_cfg.recovery.on_state = nullptr;
  wait_cfg.confirm_timeout = 1s;
  auto wait_conn = Connection::open(wait_cfg);
  RabbitMQPublisher waiting(wait_conn);

  RabbitMQSubscriber sub(Connection::open(direct));
  sub.subscribe(topic, "g");
  fast.publish(topic, Message(std::string("up")));
  REQUIRE(sub.receive_for(5s));

  proxy.set_refuse(true);  // reconnection attempts fail until we stop refusing
  proxy.cut_all();
  REQUIRE(eventually([&] { return fast.recovering() && waiting.recovering(); }, 5s));
  CHECK_FALSE(fast_conn->is_open());

  // fail_fast: two messages fit the buffer, the third publish fails at once.
  auto one = fast.async_publish(topic, Message(std::string("buffered-1")), asio::use_future);
  auto two = fast.async_publish(topic, Message(std::string("buffered-2")), asio::use_future);
  std::error_code ec;
  const auto t0 = std::chrono::steady_clock::now();
  fast.publish(topic, Message(std::string("refused")), ec);
  CHECK(ec == errc::publish_buffer_full);
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);

  // wait: the publish waits for its deadline (1 s), then reports that the connection stayed down.
  waiting.publish(topic, Message(std::string("late")), ec);
  CHECK(ec == errc::connection_recovering);
  CHECK(std::chrono::steady_clock::now() - t0 >= 900ms);

  proxy.set_refuse(false);
  REQUIRE(one.wait_for(15s) == std::future_status::ready);
  REQUIRE(two.wait_for(5s) == std::future_status::ready);
  CHECK_NOTHROW(one.get());
  CHECK_NOTHROW(two.get());
  std::vector<std::string> got;
  for (int i = 0; i < 2; ++i)
    if (auto m = sub.receive_for(5s)) got.push_back(text(*m));
  CHECK(got == std::vector<std::string>{"buffered-1", "buffered-2"});
  CHECK_FALSE(sub.receive_for(300ms));  // neither "refused" nor "late" was sent
  const auto stats = fast_conn->recovery_stats();
  CHECK(stats.recovered == 1);
  CHECK(stats.attempts >= 2);
  CHECK(events.last().state == RecoveryState::recovered);
}

TEST_CASE("recovery: a refused login during recovery fails clearly, without a loop", "[broker][recovery]") {
  const std::string user = fresh("kincir-user");
  ctl("add_user " + user + " first-secret");
  ctl("set_permissions -p / " + user + " '.*' '.*' '.*'");
  struct Cleanup {
    std::string user;
    ~Cleanup() { ctl("delete_user " + user); }
  } cleanup{user};

  auto direct = node();
  kincir::test::FaultProxy proxy(direct.endpoints[0].port);
  auto cfg = direct;
  cfg.endpoints[0].port = proxy.port();
  cfg.connection.username = user;
  cfg.connection.password = "first-secret";
  Events events;
  events.attach(cfg);
  auto conn = Connection::open(cfg);
  const std::string topic = fresh("refused");
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic, "g");
  RabbitMQPublisher pub(conn);
  pub.publish(topic, Message(std::string("ok")));
  REQUIRE(sub.receive_for(5s));

  ctl("change_password " + user + " second-secret");
  proxy.cut_all();
  REQUIRE(eventually([&] { return conn->recovery_stats().failed == 1; }, 15s));
  std::this_thread::sleep_for(500ms);
  const auto stats = conn->recovery_stats();
  CHECK(stats.attempts == 1);  // no loop on 403
  CHECK(stats.recovered == 0);
  CHECK_FALSE(conn->is_recovering());
  CHECK(conn->error() == reply_code::access_refused);
  const auto last = events.last();
  CHECK(last.state == RecoveryState::failed);
  CHECK(last.error == reply_code::access_refused);
  std::error_code ec;
  sub.receive(ec);
  CHECK(ec == reply_code::access_refused);
  pub.publish(topic, Message(std::string("after")), ec);
  CHECK(ec);
  CHECK(conn->server_message().find("second-secret") == std::string::npos);
  CHECK(conn->server_message().find("first-secret") == std::string::npos);
}

TEST_CASE("update-secret: new credentials for an open connection, used by its recovery", "[broker][recovery]") {
  const std::string user = fresh("kincir-secret");
  ctl("add_user " + user + " token-1");
  ctl("set_permissions -p / " + user + " '.*' '.*' '.*'");
  struct Cleanup {
    std::string user;
    ~Cleanup() { ctl("delete_user " + user); }
  } cleanup{user};

  auto direct = node();
  kincir::test::FaultProxy proxy(direct.endpoints[0].port);
  auto cfg = direct;
  cfg.endpoints[0].port = proxy.port();
  cfg.connection.username = user;
  cfg.connection.password = "token-1";
  auto conn = Connection::open(cfg);
  ctl("change_password " + user + " token-2");  // the token expires; a new one is issued
  std::error_code ec;
  conn->update_secret("token-2", "token refreshed", ec);
  INFO(ec.message() << " / " << conn->server_message());
  REQUIRE_FALSE(ec);
  CHECK(conn->is_open());
  CHECK(conn->server_message().find("token") == std::string::npos);

  proxy.cut_all();  // the reconnection logs in with the new secret
  REQUIRE(eventually([&] { return conn->recovery_stats().recovered == 1 || conn->recovery_stats().failed == 1; }, 15s));
  CHECK(conn->recovery_stats().recovered == 1);
  RabbitMQPublisher pub(conn);
  CHECK_NOTHROW(pub.publish(fresh("secret"), Message(std::string("x"))));
}

TEST_CASE("recovery: a channel error recovers that channel only", "[broker][recovery]") {
  auto conn = Connection::open(node());
  const std::string topic = fresh("channel");
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic, "g");
  RabbitMQSubscriber other(conn);
  other.subscribe(topic);
  RabbitMQPublisher pub(conn);
  pub.publish(topic, Message(std::string("one")));
  auto [m, h] = sub.receive_with_ack();
  CHECK(text(m) == "one");
  REQUIRE(other.receive_for(5s));

  // An ack for a tag the broker never sent: it closes the subscriber's channel with 406.
  auto core = sub.core();
  asio::post(conn->executor(), [core, conn] {
    if (const auto& ch = core->channel()) {
      std::error_code ignored;
      amqp::ack(ch->state(), 999999, false, ignored);
      ch->touch();
      conn->core()->end_turn();
    }
  });
  REQUIRE(eventually([&] { return sub.recoveries() == 1; }, 10s));
  CHECK(conn->is_open());
  CHECK(conn->recovery_stats().recovering == 0);
  std::error_code ec;
  sub.ack(h, ec);
  CHECK(ec == errc::stale_delivery);
  auto again = sub.receive_with_ack_for(5s);  // redelivered on the new channel
  REQUIRE(again);
  CHECK(again->first.uuid == m.uuid);
  sub.ack(again->second);
  pub.publish(topic, Message(std::string("two")));
  auto next = sub.receive_for(5s);
  REQUIRE(next);
  CHECK(text(*next) == "two");
  auto fan = other.receive_for(5s);  // the other channel never noticed
  REQUIRE(fan);
  CHECK(text(*fan) == "two");
  CHECK(other.recoveries() == 0);
}

TEST_CASE("recovery: missed heartbeats (a stalled link) reconnect", "[broker][recovery]") {
  auto direct = node();
  kincir::test::FaultProxy proxy(direct.endpoints[0].port);
  auto cfg = direct;
  cfg.endpoints[0].port = proxy.port();
  cfg.connection.heartbeat = amqp::HeartbeatSetting::seconds(1);
  Events events;
  events.attach(cfg);
  auto conn = Connection::open(cfg);
  proxy.stall(5s);
  REQUIRE(eventually([&] { return conn->recovery_stats().recovered == 1; }, 15s));
  const auto states = events.states();
  REQUIRE(states.size() >= 3);
  {
    const std::lock_guard lock(events.mutex);
    CHECK(events.list[1].error == errc::heartbeat_timeout);
  }
  CHECK(conn->is_open());
}

TEST_CASE("recovery off: a lost connection stays closed and unconfirmed publishes are lost", "[broker][recovery]") {
  auto direct = node();
  kincir::test::FaultProxy proxy(direct.endpoints[0].port);
  auto cfg = direct;
  cfg.endpoints[0].port = proxy.port();
  cfg.recovery.enabled = false;
  Events events;
  events.attach(cfg);
  auto conn = Connection::open(cfg);
  RabbitMQPublisher pub(conn);
  const std::string topic = fresh("norecovery");
  pub.publish(topic, Message(std::string("warm")));
  proxy.stall(10s);
  auto outcome = pub.async_publish(topic, Message(std::string("held")), asio::use_future);
  std::this_thread::sleep_for(200ms);
  proxy.cut_all();
  REQUIRE(outcome.wait_for(10s) == std::future_status::ready);
  std::error_code ec;
  try {
    outcome.get();
  } catch (const std::system_error& e) {
    ec = e.code();
  }
  CHECK(ec == errc::message_lost);
  CHECK_FALSE(conn->is_open());
  CHECK_FALSE(conn->is_recovering());
  REQUIRE(eventually([&] { return events.last().state == RecoveryState::failed; }, 5s));
}

TEST_CASE("recovery: the pool keeps a publisher whose connection is being recovered", "[broker][recovery][pool]") {
  auto direct = node();
  kincir::test::FaultProxy proxy(direct.endpoints[0].port);
  auto cfg = direct;
  cfg.endpoints[0].port = proxy.port();
  kincir::rabbitmq::RabbitMQConnectionPool pool(cfg, 1, 2000ms);
  const std::string topic = fresh("pool-recovering");
  std::shared_ptr<Connection> first;
  {
    auto p = pool.get_publisher();
    p->publish(topic, Message(std::string("warm")));
    first = p->connection();
  }
  proxy.set_refuse(true);
  proxy.cut_all();
  REQUIRE(eventually([&] { return first->is_recovering(); }, 5s));
  auto p = pool.get_publisher();
  CHECK(p->connection() == first);  // not dropped: it comes back
  auto done = p->async_publish(topic, Message(std::string("through the outage")), asio::use_future);
  proxy.set_refuse(false);
  REQUIRE(done.wait_for(15s) == std::future_status::ready);
  CHECK_NOTHROW(done.get());
  CHECK(first->is_open());
}

}  // namespace recovery_test
