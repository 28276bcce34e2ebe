// RabbitMQConnectionPool and PooledPublisher against the test node ([broker]; see broker.sh).
#include <kincir/rabbitmq/pool.hpp>

#include <kincir/rabbitmq/subscriber.hpp>  // checks that pooled publishes arrive

#include <asio/use_future.hpp>  // get_publisher(asio::use_future)

#include <chrono>  // deadlines
#include <future>  // futures
#include <string>  // payloads
#include <thread>  // a second holder

#include "broker_ctl.hpp"
#include "support/catch.hpp"

using namespace std::chrono_literals;
using kincir::Message;
using kincir::rabbitmq::PooledPublisher;
using kincir::rabbitmq::RabbitMQConfig;
using kincir::rabbitmq::RabbitMQConnectionPool;
using kincir::rabbitmq::RabbitMQSubscriber;

namespace {

RabbitMQConfig pool_config() {
  RabbitMQConfig c = RabbitMQConfig::for_testing();
  c.apply_uri(kincir::test::node_uri());
  return c;
}

std::string unique_topic(const std::string& base) {
  return base + "." + kincir::Uuid::new_v4().to_string().substr(0, 8);
}

}  // namespace

TEST_CASE("pool: publishers are reused, bounded, and a full pool times out clearly", "[broker][pool]") {
  RabbitMQConnectionPool pool(pool_config(), 2, 300ms);
  const std::string topic = unique_topic("pool");
  RabbitMQSubscriber sub(pool.config());
  sub.subscribe(topic);

  auto a = pool.get_publisher();
  auto b = pool.get_publisher();
  CHECK(pool.in_use() == 2);
  CHECK(a->connection() != b->connection());
  a->publish(topic, Message(std::string("via a")));
  b.get().publish(topic, Message(std::string("via b")));

  const auto start = std::chrono::steady_clock::now();
  std::error_code ec;
  auto c = pool.get_publisher(ec);
  CHECK(ec == kincir::errc::timeout);
  CHECK_FALSE(c);
  CHECK(std::chrono::steady_clock::now() - start >= 250ms);
  try {
    (void)pool.get_publisher();
    FAIL("no exception");
  } catch (const kincir::Error& e) {
    CHECK(e.code() == kincir::errc::timeout);
    CHECK(std::string(e.what()).find("all 2 publishers stayed in use for 300 ms") != std::string::npos);
  }

  const auto* first = a->connection().get();
  a.reset();  // back to the pool
  CHECK(pool.idle() == 1);
  auto again = pool.get_publisher();
  CHECK(again->connection().get() == first);  // reused, not reopened
  again->publish(topic, Message(std::string("via a again")));
  for (const char* expected : {"via a", "via b", "via a again"}) {
    auto m = sub.receive_for(5s);
    REQUIRE(m);
    CHECK(std::string(m->payload.view()) == expected);
  }
}

TEST_CASE("pool: a waiting caller gets the publisher another thread gives back", "[broker][pool]") {
  RabbitMQConnectionPool pool(pool_config(), 1, 5000ms);
  auto held = pool.get_publisher();
  const auto* conn = held->connection().get();
  std::thread giver([&held] {
    std::this_thread::sleep_for(100ms);
    held.reset();
  });
  auto next = pool.get_publisher();  // waits for the reset above
  giver.join();
  CHECK(next->connection().get() == conn);
  CHECK(pool.in_use() == 1);
}

TEST_CASE("pool: asynchronous get_publisher waits, completes on release, and times out", "[broker][pool]") {
  RabbitMQConnectionPool pool(pool_config(), 1, 300ms);
  auto first = pool.get_publisher(asio::use_future).get();
  REQUIRE(first);
  auto waiting = pool.get_publisher(asio::use_future);
  CHECK(waiting.wait_for(50ms) == std::future_status::timeout);
  first.reset();
  REQUIRE(waiting.wait_for(5s) == std::future_status::ready);
  auto second = waiting.get();
  CHECK(second->connection()->is_open());

  auto expired = pool.get_publisher(asio::use_future);
  REQUIRE(expired.wait_for(5s) == std::future_status::ready);
  try {
    (void)expired.get();
    FAIL("no exception");
  } catch (const std::system_error& e) {
    CHECK(e.code() == kincir::errc::timeout);
  }
}

TEST_CASE("pool: broken connections are not handed out again", "[broker][pool]") {
  RabbitMQConnectionPool pool(pool_config(), 1, 2000ms);
  const std::string topic = unique_topic("pool-broken");

  // Broken while handed out: dropped when it comes back.
  auto p = pool.get_publisher();
  const auto broken = p->connection();
  broken->close();
  p.reset();
  CHECK(pool.idle() == 0);
  auto q = pool.get_publisher();
  CHECK(q->connection() != broken);
  CHECK(q->connection()->is_open());

  // Broken while idle: skipped when handed out.
  const auto idle = q->connection();
  q.reset();
  CHECK(pool.idle() == 1);
  idle->close();
  auto r = pool.get_publisher();
  CHECK(r->connection() != idle);
  CHECK_NOTHROW(r->publish(topic, Message(std::string("fresh"))));
}

TEST_CASE("pool: a failing connection frees its slot and names no password", "[broker][pool]") {
  auto cfg = pool_config();
  cfg.connection.password = "pool-pa55word";
  RabbitMQConnectionPool pool(cfg, 1, 2000ms);
  for (int i = 0; i < 2; ++i) {  // the second try proves the first gave its permit back
    try {
      (void)pool.get_publisher();
      FAIL("no exception");
    } catch (const kincir::Error& e) {
      CHECK(e.code() == kincir::rabbitmq::reply_code::access_refused);
      CHECK(std::string(e.what()).find("pool-pa55word") == std::string::npos);
    }
  }
  CHECK(pool.in_use() == 0);
}

TEST_CASE("pool: closing fails a waiting asynchronous call", "[broker][pool]") {
  PooledPublisher survivor;
  std::future<PooledPublisher> waiting;
  {
    RabbitMQConnectionPool pool(pool_config(), 1, 10000ms);
    survivor = pool.get_publisher();
    waiting = pool.get_publisher(asio::use_future);
  }
  REQUIRE(waiting.wait_for(1s) == std::future_status::ready);
  CHECK_THROWS_AS(waiting.get(), std::system_error);
  CHECK(survivor->connection()->is_open());  // outlives its pool, closed when destroyed
}
