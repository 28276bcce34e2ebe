// The middleware, called directly around small handlers (deterministic, no threads), and a few
// compositions through the router over the in-memory broker.
#include <kincir/router.hpp>

#include <kincir/memory/broker.hpp>
#include <kincir/memory/publisher.hpp>
#include <kincir/memory/subscriber.hpp>

#include "router/support.hpp"
#include "support/catch.hpp"

#include <atomic>        // counters shared with handlers
#include <chrono>        // intervals
#include <cstddef>       // std::size_t
#include <memory>        // std::make_shared
#include <stdexcept>     // thrown by handlers
#include <stop_token>    // cancelled contexts
#include <string>        // payloads
#include <system_error>  // std::system_error
#include <utility>       // std::move
#include <vector>        // recorded calls

using namespace std::chrono_literals;
using kincir::handler_errc;
using kincir::HandlerContext;
using kincir::HandlerFunc;
using kincir::HandlerResult;
using kincir::Message;
using kincir::test::CapturingLogger;
using kincir::test::payload;
using kincir::test::text;
namespace mw = kincir::middleware;

namespace {

/// Records what is published; fails while `failing`.
struct CapturePublisher {
  std::vector<std::pair<std::string, Message>> published;
  bool failing = false;

  void publish(std::string_view topic, std::vector<Message>&& batch, std::error_code& ec) {
    if (failing) {
      ec = kincir::errc::queue_full;
      return;
    }
    for (auto& m : batch) published.emplace_back(std::string(topic), std::move(m));
    batch.clear();
  }
  void publish(std::string_view t, std::vector<Message>&& b) {
    std::error_code ec;
    publish(t, std::move(b), ec);
    kincir::throw_if(ec, "CapturePublisher");
  }
  void publish(std::string_view topic, Message&& m, std::error_code& ec) {
    if (failing) {
      ec = kincir::errc::queue_full;
      return;
    }
    published.emplace_back(std::string(topic), std::move(m));
  }
  void publish(std::string_view t, Message&& m) {
    std::error_code ec;
    publish(t, std::move(m), ec);
    kincir::throw_if(ec, "CapturePublisher");
  }
};

/// A handler that fails its first `failures` calls (by returning an error), then echoes.
struct Flaky {
  int failures = 0;
  int calls = 0;
  HandlerFunc func() {
    return [this](Message& m, const HandlerContext&) -> HandlerResult {
      ++calls;
      if (calls <= failures) return HandlerResult::failure(kincir::errc::queue_full, "flaky " + std::to_string(calls));
      return Message(m);
    };
  }
};

HandlerContext context(CapturingLogger* log = nullptr) {
  HandlerContext ctx;
  ctx.handler_name = "h";
  ctx.subscribe_topic = "in";
  ctx.publish_topic = "out";
  if (log != nullptr) ctx.logger = log;
  return ctx;
}

/// The integer values of field `key` in the records whose message is `message`.
std::vector<std::string> field_values(const CapturingLogger& log, const std::string& message, const std::string& key) {
  std::vector<std::string> out;
  for (const auto& r : log.records()) {
    if (r.message != message) continue;
    for (const auto& f : r.fields) {
      if (f.rfind(key + "=", 0) == 0) out.push_back(f.substr(key.size() + 1));
    }
  }
  return out;
}

mw::RetryOptions quick_retry(std::size_t retries) {
  mw::RetryOptions o;
  o.max_retries = retries;
  o.initial_interval = 1ms;
  o.max_interval = 2ms;
  return o;
}

}  // namespace

TEST_CASE("Retry: calls again until success, up to max_retries", "[router][middleware]") {
  Message m = text("x");
  auto ctx = context();
  SECTION("success after two failures") {
    Flaky flaky{2};
    std::vector<std::size_t> hooks;
    auto o = quick_retry(3);
    o.on_retry = [&](std::size_t n, const HandlerResult& r) {
      hooks.push_back(n);
      CHECK_FALSE(r.ok());
    };
    auto h = mw::Retry(o)(flaky.func());
    auto r = h(m, ctx);
    CHECK(r.ok());
    CHECK(flaky.calls == 3);
    CHECK(hooks == std::vector<std::size_t>{1, 2});
  }
  SECTION("exhausted: the last failure is returned") {
    Flaky flaky{100};
    CapturingLogger log;
    auto lctx = context(&log);
    auto r = mw::Retry(quick_retry(2))(flaky.func())(m, lctx);
    CHECK_FALSE(r.ok());
    CHECK(r.reason() == "flaky 3");
    CHECK(flaky.calls == 3);
    CHECK(log.saw("retries exhausted"));
  }
  SECTION("exceptions are retried") {
    int calls = 0;
    auto r = mw::Retry(quick_retry(2))([&](Message&, const HandlerContext&) -> HandlerResult {
      if (++calls == 1) throw std::runtime_error("first");
      return {};
    })(m, ctx);
    CHECK(r.ok());
    CHECK(calls == 2);
  }
  SECTION("the predicate decides what is retried") {
    Flaky flaky{100};
    auto o = quick_retry(5);
    o.should_retry = [](const HandlerResult& r, const Message&) { return r.error() != kincir::errc::queue_full; };
    auto r = mw::Retry(o)(flaky.func())(m, ctx);
    CHECK_FALSE(r.ok());
    CHECK(flaky.calls == 1);
  }
  SECTION("max_retries 0 calls once") {
    Flaky flaky{100};
    CHECK_FALSE(mw::Retry(quick_retry(0))(flaky.func())(m, ctx).ok());
    CHECK(flaky.calls == 1);
  }
}

TEST_CASE("Retry: waits grow by the multiplier up to max_interval; jitter stays in its band; max_elapsed stops",
          "[router][middleware]") {
  Message m = text("x");
  CapturingLogger log;
  auto ctx = context(&log);
  SECTION("exponential, capped") {
    mw::RetryOptions o;
    o.max_retries = 4;
    o.initial_interval = 2ms;
    o.multiplier = 3.0;
    o.max_interval = 10ms;
    Flaky flaky{100};
    (void)mw::Retry(o)(flaky.func())(m, ctx);
    CHECK(field_values(log, "retrying", "wait_ms") == std::vector<std::string>{"2", "6", "10", "10"});
  }
  SECTION("jitter") {
    mw::RetryOptions o;
    o.max_retries = 20;
    o.initial_interval = 4ms;
    o.multiplier = 1.0;
    o.jitter = 0.5;
    Flaky flaky{100};
    (void)mw::Retry(o)(flaky.func())(m, ctx);
    const auto waits = field_values(log, "retrying", "wait_ms");
    REQUIRE(waits.size() == 20);
    for (const auto& w : waits) {
      CHECK(std::stoi(w) >= 2);
      CHECK(std::stoi(w) <= 6);
    }
  }
  SECTION("max_elapsed") {
    mw::RetryOptions o;
    o.max_retries = 10;
    o.initial_interval = 200ms;
    o.max_elapsed = 50ms;
    Flaky flaky{100};
    CHECK_FALSE(mw::Retry(o)(flaky.func())(m, ctx).ok());
    CHECK(flaky.calls == 1);
    CHECK(log.saw("retry time exhausted"));
  }
}

TEST_CASE("Retry: a close interrupts the wait and the message is not retried further", "[router][middleware]") {
  Message m = text("x");
  auto ctx = context();
  std::stop_source stop;
  ctx.stop = stop.get_token();
  stop.request_stop();
  mw::RetryOptions o;
  o.initial_interval = std::chrono::hours(1);
  Flaky flaky{100};
  auto r = mw::Retry(o)(flaky.func())(m, ctx);
  CHECK(r.error() == handler_errc::cancelled);
  CHECK(flaky.calls == 1);
}

TEST_CASE("Retry: bad options are rejected naming the field", "[router][middleware]") {
  mw::RetryOptions o;
  o.multiplier = 0.5;
  CHECK_THROWS_WITH(mw::Retry(o), Catch::Contains("multiplier"));
  o = {};
  o.jitter = 2;
  CHECK_THROWS_WITH(mw::Retry(o), Catch::Contains("jitter"));
  o = {};
  o.initial_interval = -1ms;
  CHECK_THROWS_WITH(mw::Retry(o), Catch::Contains("initial_interval"));
}

TEST_CASE("PoisonQueue: a failed message goes to the poison topic with why, where from and which handler",
          "[router][middleware]") {
  CapturePublisher pub;
  Message m = text("bad").with_metadata("k", "v");
  const auto id = m.uuid;
  auto ctx = context();
  auto fail = [](Message&, const HandlerContext&) { return HandlerResult::failure(kincir::errc::timeout, "too slow"); };
  SECTION("poisoned, then success") {
    auto r = mw::PoisonQueue(pub, "poison")(fail)(m, ctx);
    CHECK(r.ok());
    CHECK(r.messages().empty());
    REQUIRE(pub.published.size() == 1);
    const auto& [topic, p] = pub.published[0];
    CHECK(topic == "poison");
    CHECK(p.uuid == id);
    CHECK(payload(p) == "bad");
    CHECK(p.metadata.get("k") == "v");
    CHECK(p.metadata.get(mw::kPoisonReasonKey) == "too slow");
    CHECK(p.metadata.get(mw::kPoisonTopicKey) == "in");
    CHECK(p.metadata.get(mw::kPoisonHandlerKey) == "h");
  }
  SECTION("publishing fails: the original failure stands") {
    pub.failing = true;
    auto r = mw::PoisonQueue(pub, "poison")(fail)(m, ctx);
    CHECK(r.error() == kincir::errc::timeout);
  }
  SECTION("not poisoned: successes, closes, an open circuit, what the predicate rejects") {
    CHECK(mw::PoisonQueue(pub, "poison")([](Message&, const HandlerContext&) { return HandlerResult(); })(m, ctx).ok());
    auto cancelled = [](Message&, const HandlerContext&) { return HandlerResult::failure(handler_errc::cancelled); };
    CHECK(mw::PoisonQueue(pub, "poison")(cancelled)(m, ctx).error() == handler_errc::cancelled);
    auto open = [](Message&, const HandlerContext&) { return HandlerResult::failure(handler_errc::circuit_open); };
    CHECK(mw::PoisonQueue(pub, "poison")(open)(m, ctx).error() == handler_errc::circuit_open);
    auto never = [](const HandlerResult&, const Message&) { return false; };
    CHECK_FALSE(mw::PoisonQueue(pub, "poison", never)(fail)(m, ctx).ok());
    CHECK(pub.published.empty());
  }
  SECTION("an owned publisher; an empty topic is rejected") {
    auto r = mw::PoisonQueue(CapturePublisher{}, "poison")(fail)(m, ctx);
    CHECK(r.ok());
    CHECK_THROWS_WITH(mw::PoisonQueue(pub, ""), Catch::Contains("empty topic"));
  }
}

TEST_CASE("Recoverer: an exception becomes a failure carrying what was thrown", "[router][middleware]") {
  Message m = text("x");
  CapturingLogger log;
  auto ctx = context(&log);
  auto r = mw::Recoverer()(
      [](Message&, const HandlerContext&) -> HandlerResult { throw std::runtime_error("disk on fire"); })(m, ctx);
  CHECK(r.error() == handler_errc::exception);
  CHECK(r.reason() == "disk on fire");
  CHECK(r.exception() != nullptr);
  CHECK(log.saw("handler threw"));
  auto s = mw::Recoverer()([](Message&, const HandlerContext&) -> HandlerResult {
    throw std::system_error(make_error_code(kincir::errc::closed), "gone");
  })(m, ctx);
  CHECK(s.error() == kincir::errc::closed);
  auto t = mw::Recoverer()([](Message&, const HandlerContext&) -> HandlerResult { throw 42; })(m, ctx);
  CHECK(t.reason() == "unknown exception");
}

TEST_CASE("CorrelationId: set when missing, carried to every output", "[router][middleware]") {
  auto ctx = context();
  auto two_outputs = [](Message& in, const HandlerContext&) {
    CHECK(mw::correlation_id(in).has_value());
    std::vector<Message> out;
    out.push_back(text("a"));
    out.push_back(text("b").with_metadata(mw::kCorrelationIdKey, "stale"));
    return HandlerResult(std::move(out));
  };
  SECTION("given") {
    Message m = text("x").with_metadata(mw::kCorrelationIdKey, "abc");
    auto r = mw::CorrelationId()(two_outputs)(m, ctx);
    REQUIRE(r.messages().size() == 2);
    CHECK(mw::correlation_id(r.messages()[0]) == "abc");
    CHECK(mw::correlation_id(r.messages()[1]) == "abc");
  }
  SECTION("missing") {
    Message m = text("x");
    auto r = mw::CorrelationId()(two_outputs)(m, ctx);
    const auto id = mw::correlation_id(m);
    REQUIRE(id.has_value());
    CHECK(id->size() == 36);
    CHECK(mw::correlation_id(r.messages()[0]) == *id);
  }
}

TEST_CASE("Timeout: a call that overruns its deadline fails with errc::timeout", "[router][middleware]") {
  Message m = text("x");
  auto ctx = context();
  auto patient = [](Message& in, const HandlerContext& c) -> HandlerResult {
    const auto give_up = std::chrono::steady_clock::now() + kincir::test::kPatience;
    while (!c.cancelled() && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(1ms);
    return Message(in);
  };
  auto r = mw::Timeout(20ms)(patient)(m, ctx);
  CHECK(r.error() == kincir::errc::timeout);
  CHECK(r.messages().empty());
  auto quick = mw::Timeout(kincir::test::kPatience)([](Message& in, const HandlerContext& c) -> HandlerResult {
    CHECK(c.deadline != HandlerContext::clock::time_point::max());
    return Message(in);
  })(m, ctx);
  CHECK(quick.ok());
  CHECK_THROWS_WITH(mw::Timeout(0ms), Catch::Contains("positive"));
}

TEST_CASE("Throttle: calls are spaced; a close ends the wait", "[router][middleware]") {
  Message m = text("x");
  auto ctx = context();
  int calls = 0;
  auto count = [&](Message&, const HandlerContext&) {
    ++calls;
    return HandlerResult();
  };
  SECTION("six calls at one per 10 ms take at least 50 ms") {
    auto h = mw::Throttle(10, 100ms)(count);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 6; ++i) CHECK(h(m, ctx).ok());
    CHECK(std::chrono::steady_clock::now() - start >= 50ms);
    CHECK(calls == 6);
  }
  SECTION("close") {
    auto h = mw::Throttle(1, std::chrono::hours(1))(count);
    CHECK(h(m, ctx).ok());
    std::stop_source stop;
    ctx.stop = stop.get_token();
    stop.request_stop();
    CHECK(h(m, ctx).error() == handler_errc::cancelled);
    CHECK(calls == 1);
  }
  CHECK_THROWS(mw::Throttle(0, 1s));
}

TEST_CASE("Deduplicator: once per key within the window, memory bounded", "[router][middleware]") {
  auto ctx = context();
  int calls = 0;
  bool fail = false;
  auto count = [&](Message&, const HandlerContext&) {
    ++calls;
    return fail ? HandlerResult::failure(kincir::errc::closed) : HandlerResult();
  };
  SECTION("by id") {
    mw::Deduplicator dedup;
    auto h = dedup(count);
    Message a = text("a");
    Message again = a;
    Message b = text("a");  // same payload, another id
    CHECK(h(a, ctx).ok());
    CHECK(h(again, ctx).ok());
    CHECK(h(b, ctx).ok());
    CHECK(calls == 2);
    CHECK(dedup.duplicates() == 1);
  }
  SECTION("a failure is not remembered") {
    mw::Deduplicator dedup;
    auto h = dedup(count);
    Message a = text("a");
    fail = true;
    CHECK_FALSE(h(a, ctx).ok());
    fail = false;
    CHECK(h(a, ctx).ok());
    CHECK(calls == 2);
  }
  SECTION("by key, bounded") {
    mw::DeduplicatorOptions o;
    o.key = [](const Message& m) { return payload(m); };
    o.max_keys = 10;
    mw::Deduplicator dedup(o);
    auto h = dedup(count);
    for (int i = 0; i < 100; ++i) {
      Message m = text(std::to_string(i));
      (void)h(m, ctx);
      CHECK(dedup.size() <= 10);
    }
    Message recent = text("99");
    Message forgotten = text("0");
    (void)h(recent, ctx);
    (void)h(forgotten, ctx);
    CHECK(calls == 101);
  }
  SECTION("the window passes") {
    mw::DeduplicatorOptions o;
    o.window = 20ms;
    mw::Deduplicator dedup(o);
    auto h = dedup(count);
    Message a = text("a");
    (void)h(a, ctx);
    std::this_thread::sleep_for(40ms);
    (void)h(a, ctx);
    CHECK(calls == 2);
    CHECK(dedup.size() == 1);
  }
}

TEST_CASE("CircuitBreaker: opens after consecutive failures, fails fast, closes after a good trial",
          "[router][middleware]") {
  auto ctx = context();
  int calls = 0;
  bool fail = true;
  auto dep = [&](Message&, const HandlerContext&) {
    ++calls;
    return fail ? HandlerResult::failure(kincir::errc::closed) : HandlerResult();
  };
  mw::CircuitBreakerOptions o;
  o.failure_threshold = 2;
  o.open_duration = 30ms;
  SECTION("fail fast") {
    mw::CircuitBreaker breaker(o);
    auto h = breaker(dep);
    Message m = text("x");
    CHECK_FALSE(h(m, ctx).ok());
    CHECK(breaker.state() == mw::CircuitState::closed);
    CHECK_FALSE(h(m, ctx).ok());
    CHECK(breaker.state() == mw::CircuitState::open);
    CHECK(h(m, ctx).error() == handler_errc::circuit_open);
    CHECK(calls == 2);
    std::this_thread::sleep_for(60ms);
    fail = false;
    CHECK(h(m, ctx).ok());  // the trial
    CHECK(breaker.state() == mw::CircuitState::closed);
    CHECK(calls == 3);
  }
  SECTION("a failed trial opens it again") {
    mw::CircuitBreaker breaker(o);
    auto h = breaker(dep);
    Message m = text("x");
    (void)h(m, ctx);
    (void)h(m, ctx);
    std::this_thread::sleep_for(60ms);
    CHECK_FALSE(h(m, ctx).ok());
    CHECK(breaker.state() == mw::CircuitState::open);
    CHECK(calls == 3);
  }
  SECTION("waiting while open ends with a close") {
    o.wait_while_open = true;
    o.open_duration = std::chrono::hours(1);
    mw::CircuitBreaker breaker(o);
    auto h = breaker(dep);
    Message m = text("x");
    (void)h(m, ctx);
    (void)h(m, ctx);
    std::stop_source stop;
    ctx.stop = stop.get_token();
    stop.request_stop();
    CHECK(h(m, ctx).error() == handler_errc::cancelled);
    CHECK(calls == 2);
  }
  o.failure_threshold = 0;
  CHECK_THROWS(mw::CircuitBreaker(o));
}

TEST_CASE("router + middleware: retry, then poison queue with correlation id; the input is acked",
          "[router][middleware][concurrency]") {
  auto broker = std::make_shared<kincir::memory::InMemoryBroker>(kincir::test::quiet_broker_config());
  kincir::memory::InMemoryAckSubscriber in(broker);
  kincir::memory::InMemoryPublisher pub(broker);
  kincir::memory::InMemorySubscriber poison(broker);
  poison.subscribe("poison");
  CapturingLogger log;
  kincir::RouterConfig config;
  config.poll_interval = 5ms;
  config.logger = &log;
  kincir::Router router(config);
  router.add_middleware(mw::CorrelationId())
      .add_middleware(mw::PoisonQueue(pub, "poison"))
      .add_middleware(mw::Retry(quick_retry(2)))
      .add_middleware(mw::Recoverer());
  std::atomic<int> calls{0};
  auto& h = router.add_handler("orders", "in", in, "out", pub, [&](const Message&) -> std::vector<Message> {
    ++calls;
    throw std::runtime_error("cannot parse order");
  });
  kincir::test::RunningRouter running(router);
  REQUIRE(running.wait_running());
  pub.publish("in", text("garbage").with_metadata(mw::kCorrelationIdKey, "corr-1"));
  auto got = kincir::test::receive_n(poison, 1);
  REQUIRE(got.size() == 1);
  CHECK(payload(got[0]) == "garbage");
  CHECK(got[0].metadata.get(mw::kPoisonReasonKey) == "cannot parse order");
  CHECK(got[0].metadata.get(mw::kPoisonTopicKey) == "in");
  CHECK(got[0].metadata.get(mw::kPoisonHandlerKey) == "orders");
  CHECK(mw::correlation_id(got[0]) == "corr-1");
  REQUIRE(kincir::test::eventually([&] { return h.stats().acked == 1; }));
  CHECK(calls == 3);
  CHECK(h.stats().nacked == 0);
  CHECK(log.saw("retrying"));
  CHECK(log.saw("message poisoned"));
}

TEST_CASE("router + InstantAck: acked before the handler runs, a failure is not redelivered",
          "[router][middleware][concurrency]") {
  auto broker = std::make_shared<kincir::memory::InMemoryBroker>(kincir::test::quiet_broker_config());
  kincir::memory::InMemoryAckSubscriber in(broker);
  kincir::RouterConfig config;
  config.poll_interval = 5ms;
  kincir::Router router(config);
  std::atomic<int> calls{0};
  auto& h = router.add_consumer_handler("h", "in", in, [&](const Message&) {
    ++calls;
    throw std::runtime_error("after the ack");
  });
  h.add_middleware(mw::InstantAck());
  kincir::test::RunningRouter running(router);
  REQUIRE(running.wait_running());
  kincir::memory::InMemoryPublisher(broker).publish("in", text("x"));
  REQUIRE(kincir::test::eventually([&] { return h.stats().failed == 1; }));
  CHECK(h.stats().acked == 1);
  CHECK(h.stats().nacked == 0);
  std::this_thread::sleep_for(30ms);  // a redelivery would arrive within a few ms
  CHECK(calls == 1);
}
