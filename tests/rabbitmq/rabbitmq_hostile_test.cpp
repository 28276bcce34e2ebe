// A hostile user's attacks on the RabbitMQ adapter's reliability layer, written from its
// documentation, kept where they exposed a defect or guard a documented promise: configs no
// connection could work with, a backoff fed nonsense, handles of another subscriber or settled
// twice, a subscriber destroyed with a receive pending, a subscribe made during an outage, a state
// callback that throws or closes its own connection, the outage buffer holding messages whose
// publish already ended.
#include <kincir/rabbitmq/publisher.hpp>   // RabbitMQPublisher
#include <kincir/rabbitmq/subscriber.hpp>  // RabbitMQSubscriber

#include <asio/use_future.hpp>  // asynchronous operations as futures

#include <atomic>        // callback counters
#include <chrono>        // deadlines
#include <cmath>         // NAN
#include <cstdlib>       // std::getenv
#include <future>        // completions
#include <memory>        // the connection seen from its callback
#include <stdexcept>     // a throwing callback
#include <string>        // names
#include <system_error>  // outcomes
#include <thread>        // polling
#include <vector>        // messages

#include "broker_ctl.hpp"
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

// A namespace of its own: this binary's files may be compiled as one unit.
namespace hostile_test {
namespace {

RabbitMQConfig node() {
  const char* uri = std::getenv("KINCIR_RABBITMQ_URI");  // NOLINT(concurrency-mt-unsafe): read once per test
  RabbitMQConfig c = RabbitMQConfig::for_testing();
  c.apply_uri(uri != nullptr ? uri : "amqp://guest:guest@127.0.0.1:5673");
  return c;
}

std::string fresh(const std::string& base) { return base + "." + kincir::Uuid::new_v4().to_string().substr(0, 8); }

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

/// What `Connection::open` says about `c` (no broker needed: the config is refused first).
std::string refusal(const RabbitMQConfig& c) {
  std::error_code ec;
  auto conn = Connection::open(c, ec);
  CHECK(conn == nullptr);
  CHECK(ec == kincir::errc::invalid_argument);
  try {
    (void)Connection::open(c);
  } catch (const kincir::Error& e) {
    return e.what();
  }
  return "no exception";
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Unit

TEST_CASE("hostile: a config no connection could work with is refused by open, naming the field", "[unit][hostile]") {
  auto c = RabbitMQConfig::for_testing();
  c.endpoints[0].port = 1;  // never reached: the config is checked first
  CHECK_FALSE(c.validate());

  auto bad = c;
  bad.confirm_timeout = 0ms;  // a publish that could wait forever
  CHECK_THAT(refusal(bad), Catch::Contains("confirm_timeout must be positive"));
  bad = c;
  bad.call_timeout = -5ms;
  CHECK_THAT(refusal(bad), Catch::Contains("call_timeout"));
  bad = c;
  bad.endpoints.clear();  // used to fail as a "connect timeout"
  CHECK_THAT(refusal(bad), Catch::Contains("no endpoint"));
  bad = c;
  bad.endpoints[0].port = 0;
  CHECK_THAT(refusal(bad), Catch::Contains("port 0"));
  bad = c;
  bad.recovery.initial_delay = 0ms;  // reconnecting in a loop without a pause
  CHECK_THAT(refusal(bad), Catch::Contains("initial_delay"));
  bad = c;
  bad.recovery.max_delay = 10ms;
  CHECK_THAT(refusal(bad), Catch::Contains("max_delay"));
  bad = c;
  bad.recovery.multiplier = NAN;
  CHECK_THAT(refusal(bad), Catch::Contains("multiplier"));
  bad = c;
  bad.recovery.jitter = 2.0;
  CHECK_THAT(refusal(bad), Catch::Contains("jitter"));
  // The password never appears in the text.
  bad.connection.password = "sekrit-pw";
  CHECK_THAT(refusal(bad), !Catch::Contains("sekrit-pw"));
}

TEST_CASE("hostile: a backoff fed nonsense neither spins nor overflows", "[unit][hostile]") {
  const auto check = [](const RecoveryConfig& c) {
    Backoff b(c, 7);
    auto previous = 0ms;
    for (int i = 0; i < 200; ++i) {
      const auto d = b.next();
      CHECK(d >= Backoff::kMinDelay);
      CHECK(d <= Backoff::kMaxDelay);
      previous = d;
    }
    return previous;
  };
  RecoveryConfig c;
  c.initial_delay = 0ms;  // 0 × 2 is still 0: attempts back to back
  c.jitter = 0.0;
  CHECK(check(c) >= 1ms);
  c.initial_delay = -100ms;
  c.max_delay = -1ms;
  CHECK(check(c) >= 1ms);
  c = RecoveryConfig{};
  c.multiplier = NAN;
  c.jitter = NAN;
  CHECK(check(c) == c.initial_delay);  // NaN counts as "no growth", no jitter
  c = RecoveryConfig{};
  c.max_delay = std::chrono::milliseconds::max();  // its nanoseconds would overflow a timer
  c.multiplier = 1e300;
  CHECK(check(c) >= Backoff::kMaxDelay / 2);  // capped at a day, jittered by half at most
}

// ------------------------------------------------------------------------------------------------
// Against the node

TEST_CASE("hostile: a handle of another subscriber, a settled one or a made-up one never settles a delivery",
          "[broker][hostile]") {
  auto conn = Connection::open(node());
  const std::string topic = fresh("foreign");
  RabbitMQSubscriber a(conn);
  RabbitMQSubscriber b(conn);
  a.subscribe(topic);  // fan-out: each gets the same message, both with delivery tag 1
  b.subscribe(topic);
  RabbitMQPublisher pub(conn);
  pub.publish(topic, Message(std::string("one")));
  auto [ma, ha] = a.receive_with_ack();
  auto [mb, hb] = b.receive_with_ack();
  REQUIRE(ma.uuid == mb.uuid);

  std::error_code ec;
  b.ack(ha, ec);  // a's handle on b: used to ack b's delivery
  CHECK(ec == errc::stale_delivery);
  b.ack(hb, ec);  // so b's own handle still works
  CHECK_FALSE(ec);
  b.ack(hb, ec);  // twice
  CHECK(ec == kincir::errc::unknown_delivery);
  a.ack(kincir::BasicAckHandle{}, ec);  // made up
  CHECK(ec);
  a.nack(ha, true, ec);  // requeued: a gets it again
  CHECK_FALSE(ec);
  auto again = a.receive_with_ack_for(5s);
  REQUIRE(again);
  CHECK(again->first.uuid == ma.uuid);
  CHECK(again->second.is_retry());
  a.ack(again->second);
  CHECK_FALSE(b.receive_for(200ms));  // b acked its copy once: nothing comes back
}

TEST_CASE("hostile: destroying a subscriber completes its pending async_receive", "[broker][hostile]") {
  auto conn = Connection::open(node());
  std::future<Message> pending;
  {
    RabbitMQSubscriber sub(conn);
    sub.subscribe(fresh("gone"));
    pending = sub.async_receive(asio::use_future);
  }
  // Used to be destroyed without a completion: a plain handler was never called, a future saw a
  // broken promise (std::future_error) instead of operation_aborted.
  REQUIRE(pending.wait_for(5s) == std::future_status::ready);
  try {
    pending.get();
    FAIL("a message from nowhere");
  } catch (const std::system_error& e) {
    CHECK(e.code() == asio::error::operation_aborted);
  }
}

TEST_CASE("hostile: a subscribe made during an outage waits for the recovery, at most call_timeout",
          "[broker][hostile][recovery]") {
  auto direct = node();
  kincir::test::FaultProxy proxy(direct.endpoints[0].port);
  auto cfg = direct;
  cfg.endpoints[0].port = proxy.port();
  cfg.call_timeout = 3s;
  auto conn = Connection::open(cfg);
  const std::string topic = fresh("outage-subscribe");

  proxy.set_refuse(true);
  proxy.cut_all();
  REQUIRE(eventually([&] { return conn->is_recovering(); }, 5s));

  SECTION("the connection comes back in time: the subscription works") {
    RabbitMQSubscriber sub(conn);
    auto subscribed = std::async(std::launch::async, [&] {
      std::error_code ec;
      sub.subscribe(topic, "g", ec);
      return ec;
    });
    CHECK(subscribed.wait_for(300ms) == std::future_status::timeout);  // waiting, not failed
    proxy.set_refuse(false);
    REQUIRE(subscribed.wait_for(10s) == std::future_status::ready);
    CHECK_FALSE(subscribed.get());
    RabbitMQPublisher pub(Connection::open(direct));
    pub.publish(topic, Message(std::string("after")));
    auto m = sub.receive_for(5s);
    REQUIRE(m);
    CHECK(std::string(m->payload.view()) == "after");
  }
  SECTION("it stays down: the subscribe fails clearly at call_timeout, and nothing consumes later") {
    RabbitMQSubscriber sub(conn);
    const auto t0 = std::chrono::steady_clock::now();
    std::error_code ec;
    sub.subscribe(topic, "g", ec);
    CHECK(ec == errc::connection_recovering);
    CHECK(std::chrono::steady_clock::now() - t0 >= 2500ms);
    proxy.set_refuse(false);
    REQUIRE(eventually([&] { return conn->is_open(); }, 10s));
    std::this_thread::sleep_for(200ms);
    CHECK(sub.core()->channel() == nullptr);  // the failed subscribe did not come back by itself
    CHECK(sub.recoveries() == 0);
  }
}

TEST_CASE("hostile: a state callback that throws, or closes its own connection", "[broker][hostile][recovery]") {
  auto cfg = node();
  cfg.connection.connection_name = fresh("kincir-hostile");

  SECTION("throws: the connection still recovers (the exception is dropped)") {
    std::atomic<int> calls{0};
    cfg.recovery.on_state = [&calls](const RecoveryEvent&) {
      calls.fetch_add(1);
      throw std::runtime_error("hostile callback");
    };
    auto conn = Connection::open(cfg);
    REQUIRE(eventually([&] { return kincir::test::close_connections_named(cfg.connection.connection_name) == 1; }, 5s));
    REQUIRE(eventually([&] { return conn->recovery_stats().recovered == 1; }, 10s));
    REQUIRE(eventually([&] { return calls.load() >= 3; }, 5s));  // connected, recovering, recovered
    RabbitMQPublisher pub(conn);
    CHECK_NOTHROW(pub.publish(fresh("after-throw"), Message(std::string("x"))));
  }
  SECTION("closes the connection from inside: the outage ends, no deadlock") {
    auto slot = std::make_shared<std::weak_ptr<Connection>>();
    std::promise<void> closed;
    cfg.recovery.on_state = [slot, &closed](const RecoveryEvent& e) {
      if (e.state != RecoveryState::recovering) return;
      if (auto c = slot->lock()) {
        c->close();
        closed.set_value();
      }
    };
    auto conn = Connection::open(cfg);
    *slot = conn;
    REQUIRE(eventually([&] { return kincir::test::close_connections_named(cfg.connection.connection_name) == 1; }, 5s));
    REQUIRE(closed.get_future().wait_for(10s) == std::future_status::ready);
    CHECK_FALSE(conn->is_open());
    CHECK_FALSE(conn->is_recovering());
    std::error_code ec;
    RabbitMQPublisher pub(conn);
    pub.publish(fresh("closed"), Message(std::string("x")), ec);
    CHECK(ec);
  }
}

TEST_CASE("hostile: the last reference to a connection dropped inside its own state callback",
          "[broker][hostile][recovery]") {
  auto cfg = node();
  cfg.connection.connection_name = fresh("kincir-hostile-drop");
  auto holder = std::make_shared<std::shared_ptr<Connection>>();
  std::promise<void> dropped;
  cfg.recovery.on_state = [holder, &dropped](const RecoveryEvent& e) {
    if (e.state != RecoveryState::recovering || !*holder) return;
    holder->reset();  // the destructor runs here, on the handler thread (it used to join itself)
    dropped.set_value();
  };
  std::weak_ptr<Connection> weak;
  {
    auto conn = Connection::open(cfg);
    weak = conn;
    *holder = std::move(conn);
  }
  REQUIRE(eventually([&] { return kincir::test::close_connections_named(cfg.connection.connection_name) == 1; }, 5s));
  REQUIRE(dropped.get_future().wait_for(10s) == std::future_status::ready);
  CHECK(weak.expired());
  // Nothing reconnects afterwards.
  std::this_thread::sleep_for(300ms);
  CHECK(kincir::test::close_connections_named(cfg.connection.connection_name) == 0);
}

TEST_CASE("hostile: the outage buffer does not keep counting messages whose publish already ended",
          "[broker][hostile][recovery]") {
  auto direct = node();
  kincir::test::FaultProxy proxy(direct.endpoints[0].port);
  auto cfg = direct;
  cfg.endpoints[0].port = proxy.port();
  cfg.recovery.outage_policy = OutagePolicy::fail_fast;
  cfg.recovery.max_buffered_messages = 1;
  cfg.recovery.max_buffered_bytes = 1024;
  cfg.confirm_timeout = 1s;
  auto conn = Connection::open(cfg);
  RabbitMQPublisher pub(conn);
  const std::string topic = fresh("expired");
  pub.publish(topic, Message(std::string("warm-up")));  // channel and exchange ready

  // One message sent and never confirmed: the link holds it, then is cut (it fills the buffer).
  proxy.stall(10s);
  auto lost = pub.async_publish(topic, Message(std::string("in flight")), asio::use_future);
  std::this_thread::sleep_for(100ms);
  proxy.set_refuse(true);
  proxy.cut_all();
  REQUIRE(eventually([&] { return conn->is_recovering(); }, 5s));
  REQUIRE(lost.wait_for(5s) == std::future_status::ready);  // its deadline: lost (unknown)
  CHECK_THROWS(lost.get());

  // Its publish ended: it no longer fills the buffer, so the next publish waits (to its deadline).
  std::error_code ec;
  pub.publish(topic, Message(std::string("next")), ec);
  CHECK(ec == errc::connection_recovering);  // used to be publish_buffer_full at once

  // A message larger than the byte bound is refused at once during an outage.
  const auto t0 = std::chrono::steady_clock::now();
  pub.publish(topic, Message(std::string(4096, 'x')), ec);
  CHECK(ec == errc::publish_buffer_full);
  CHECK(std::chrono::steady_clock::now() - t0 < 500ms);

  proxy.set_refuse(false);
  REQUIRE(eventually([&] { return conn->is_open(); }, 10s));
  CHECK_NOTHROW(pub.publish(topic, Message(std::string("back"))));
}

}  // namespace hostile_test
