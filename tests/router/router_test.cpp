// The router over the in-memory broker: publish-then-ack, nack on failure and exception,
// concurrency limit, graceful and timed-out close, subscriptions left on close, which receive
// errors end a handler (receive_condition), middleware order, lifecycle and bad input.
#include <kincir/router.hpp>
#include <kincir/router/awaitable.hpp>

#include <kincir/memory/broker.hpp>
#include <kincir/memory/publisher.hpp>
#include <kincir/memory/subscriber.hpp>

#include "router/support.hpp"
#include "support/catch.hpp"

#if KINCIR_HAS_AWAITABLE_HANDLERS
#include <asio/steady_timer.hpp>   // coroutine handlers wait on a timer
#include <asio/this_coro.hpp>      // the coroutine's executor
#include <asio/use_awaitable.hpp>  // co_await on Asio operations
#endif

#include <atomic>              // counters shared with handlers
#include <chrono>              // timeouts
#include <condition_variable>  // gates
#include <future>              // bounded waits
#include <memory>              // std::make_shared
#include <mutex>               // gates
#include <optional>            // coroutine results
#include <stdexcept>           // thrown by handlers and a scripted subscriber
#include <stop_token>          // run(stop_token)
#include <string>              // payloads
#include <system_error>        // receive errors
#include <thread>              // closing from another thread
#include <utility>             // std::move
#include <vector>              // recorded order

using namespace std::chrono_literals;
using kincir::HandlerContext;
using kincir::HandlerOptions;
using kincir::HandlerResult;
using kincir::Message;
using kincir::Router;
using kincir::RouterConfig;
using kincir::memory::InMemoryAckSubscriber;
using kincir::memory::InMemoryBroker;
using kincir::memory::InMemoryPublisher;
using kincir::memory::InMemorySubscriber;
using kincir::test::eventually;
using kincir::test::payload;
using kincir::test::receive_n;
using kincir::test::RunningRouter;
using kincir::test::text;

namespace {

RouterConfig fast_config(kincir::Logger* logger = nullptr) {
  RouterConfig c;
  c.poll_interval = 5ms;
  c.close_timeout = 10s;
  c.logger = logger;
  return c;
}

HandlerOptions opts(std::size_t concurrency, std::string group = {}, bool requeue = true) {
  HandlerOptions o;
  o.concurrency = concurrency;
  o.group = std::move(group);
  o.requeue_on_failure = requeue;
  return o;
}

/// Blocks handlers until opened; counts who is waiting.
class Gate {
 public:
  void wait() {
    std::unique_lock lock(mutex_);
    ++waiting_;
    cv_.notify_all();
    cv_.wait_for(lock, kincir::test::kPatience, [&] { return open_; });
    --waiting_;
  }
  void open() {
    const std::lock_guard lock(mutex_);
    open_ = true;
    cv_.notify_all();
  }
  bool wait_for_waiters(int n) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, kincir::test::kPatience, [&] { return waiting_ >= n; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int waiting_ = 0;
  bool open_ = false;
};

/// A subscriber without acks or groups (the plain `Subscriber` concept), over the broker.
class PlainSubscriber {
 public:
  explicit PlainSubscriber(const std::shared_ptr<InMemoryBroker>& b) : inner_(b) {}
  void subscribe(std::string_view topic) { inner_.subscribe(topic); }
  void subscribe(std::string_view topic, std::error_code& ec) { inner_.subscribe(topic, ec); }
  Message receive() { return inner_.receive(); }
  Message receive(std::error_code& ec) { return inner_.receive(ec); }
  std::optional<Message> try_receive() { return inner_.try_receive(); }
  template <class Rep, class Period>
  std::optional<Message> receive_for(std::chrono::duration<Rep, Period> t) {
    return inner_.receive_for(t);
  }

 private:
  InMemorySubscriber inner_;
};
static_assert(kincir::Subscriber<PlainSubscriber>);
static_assert(!kincir::AckSubscriber<PlainSubscriber>);

/// A publisher that always fails (nothing published, the batch left as it was).
struct FailingPublisher {
  void publish(std::string_view, std::vector<Message>&&, std::error_code& ec) { ec = kincir::errc::queue_full; }
  void publish(std::string_view t, std::vector<Message>&& b) {
    std::error_code ec;
    publish(t, std::move(b), ec);
    kincir::throw_if(ec, "FailingPublisher");
  }
  void publish(std::string_view, Message&&, std::error_code& ec) { ec = kincir::errc::queue_full; }
  void publish(std::string_view t, Message&& m) {
    std::error_code ec;
    publish(t, std::move(m), ec);
    kincir::throw_if(ec, "FailingPublisher");
  }
};
static_assert(kincir::Publisher<FailingPublisher>);

/// Codes of a made-up backend: `reconnecting` is mapped to `receive_condition::retry` by its
/// category (as a backend whose receive fails while it reconnects would do); `gone` is not.
enum class scripted_backend_errc { reconnecting = 1, gone };

class ScriptedBackendCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "test.scripted-backend"; }
  std::string message(int v) const override { return v == 1 ? "reconnecting" : "connection gone for good"; }
  bool equivalent(int code, const std::error_condition& condition) const noexcept override {
    if (condition == kincir::receive_condition::retry)
      return code == static_cast<int>(scripted_backend_errc::reconnecting);
    return std::error_category::equivalent(code, condition);
  }
};

const std::error_category& scripted_backend_category() {
  static const ScriptedBackendCategory instance;
  return instance;
}

std::error_code scripted_backend_error(scripted_backend_errc e) {
  return {static_cast<int>(e), scripted_backend_category()};
}

/// An in-memory ack subscriber whose next receives fail with the errors it was given (or throw a
/// non-`system_error` exception, for an empty code), then receive normally.
class ScriptedAckSubscriber : public InMemoryAckSubscriber {
 public:
  using InMemoryAckSubscriber::InMemoryAckSubscriber;

  void fail_next(std::error_code ec) {
    const std::lock_guard lock(mutex_);
    script_.push_back(ec);
  }

  template <class Rep, class Period>
  std::optional<std::pair<Message, handle_type>> receive_with_ack_for(std::chrono::duration<Rep, Period> timeout,
                                                                      std::error_code& ec) {
    {
      const std::lock_guard lock(mutex_);
      if (!script_.empty()) {
        const std::error_code next = script_.front();
        script_.erase(script_.begin());
        ++failures_;
        if (!next) throw std::runtime_error("not a system_error");
        ec = next;
        return std::nullopt;
      }
    }
    return InMemoryAckSubscriber::receive_with_ack_for(timeout, ec);
  }

  [[nodiscard]] int failures() const {
    const std::lock_guard lock(mutex_);
    return failures_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::error_code> script_;
  int failures_ = 0;
};
static_assert(kincir::AckSubscriber<ScriptedAckSubscriber>);

}  // namespace

TEST_CASE("router: a handler's outputs are published, then the input is acked", "[router][concurrency]") {
  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  InMemoryAckSubscriber in(broker);
  InMemoryPublisher out(broker);
  InMemorySubscriber sink(broker);
  sink.subscribe("out");
  Router router(fast_config());
  auto& h = router.add_handler("upper", "in", in, "out", out, [](const Message& m) {
    std::string s = payload(m);
    for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    std::vector<Message> r;
    r.push_back(text(s).with_metadata("from", m.uuid.to_string()));
    r.push_back(text(s + "!"));
    return r;
  });
  CHECK(h.name() == "upper");
  CHECK(h.subscribe_topic() == "in");
  CHECK(h.publish_topic() == "out");
  RunningRouter running(router);
  REQUIRE(running.wait_running());
  CHECK(router.is_running());
  Message input = text("abc");
  const auto id = input.uuid.to_string();
  InMemoryPublisher(broker).publish("in", std::move(input));

  auto got = receive_n(sink, 2);
  REQUIRE(got.size() == 2);
  CHECK(payload(got[0]) == "ABC");
  CHECK(got[0].metadata.get("from") == id);
  CHECK(payload(got[1]) == "ABC!");
  REQUIRE(eventually([&] { return h.stats().acked == 1; }));
  const auto st = h.stats();
  CHECK(st.received == 1);
  CHECK(st.succeeded == 1);
  CHECK(st.published == 2);
  CHECK(st.nacked == 0);
  const auto info = broker->topic_info("in");
  REQUIRE(info.has_value());
  REQUIRE(info->subscriber_info.size() == 1);
  CHECK(info->subscriber_info[0].unacked == 0);
}

TEST_CASE("router: a consumer handler publishes nothing and acks", "[router][concurrency]") {
  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  InMemoryAckSubscriber in(broker);
  Router router(fast_config());
  std::atomic<int> seen{0};
  auto& h = router.add_consumer_handler("count", "in", in, [&](const Message&) { ++seen; });
  CHECK(h.publish_topic().empty());
  RunningRouter running(router);
  REQUIRE(running.wait_running());
  InMemoryPublisher pub(broker);
  for (int i = 0; i < 10; ++i) pub.publish("in", text(std::to_string(i)));
  REQUIRE(eventually([&] { return h.stats().acked == 10; }));
  CHECK(seen == 10);
  CHECK(h.stats().published == 0);
}

TEST_CASE("router: a failure or an exception nacks; the message comes back and no exception escapes",
          "[router][concurrency]") {
  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  InMemoryAckSubscriber in(broker);
  InMemoryPublisher out(broker);
  InMemorySubscriber sink(broker);
  sink.subscribe("out");
  kincir::test::CapturingLogger log;
  Router router(fast_config(&log));
  std::vector<std::uint32_t> counts;
  std::mutex m;
  auto& h =
      router.add_handler("flaky", "in", in, "out", out, [&](Message& msg, const HandlerContext& ctx) -> HandlerResult {
        {
          const std::lock_guard lock(m);
          counts.push_back(ctx.delivery_count);
        }
        if (ctx.delivery_count == 1) return HandlerResult::failure(kincir::errc::timeout);
        if (ctx.delivery_count == 2) throw std::runtime_error("boom");
        return Message(msg);
      });
  RunningRouter running(router);
  REQUIRE(running.wait_running());
  InMemoryPublisher(broker).publish("in", text("x"));
  auto got = receive_n(sink, 1);
  REQUIRE(got.size() == 1);
  CHECK(payload(got[0]) == "x");
  REQUIRE(eventually([&] { return h.stats().acked == 1; }));
  const auto st = h.stats();
  CHECK(st.failed == 2);
  CHECK(st.nacked == 2);
  CHECK(st.succeeded == 1);
  {
    const std::lock_guard lock(m);
    CHECK(counts == std::vector<std::uint32_t>{1, 2, 3});
  }
  CHECK(log.saw("handler failed"));
  bool boom_logged = false;
  for (const auto& r : log.records()) {
    for (const auto& f : r.fields) boom_logged = boom_logged || f == "reason=boom";
  }
  CHECK(boom_logged);
  CHECK(router.is_running());
}

TEST_CASE("router: a failed publish of the outputs nacks the input", "[router][concurrency]") {
  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  InMemoryAckSubscriber in(broker);
  Router router(fast_config());
  auto& h = router.add_handler(
      "h", "in", in, "out", FailingPublisher{}, [](const Message& m) { return Message(m); }, opts(1, {}, false));
  RunningRouter running(router);
  REQUIRE(running.wait_running());
  InMemoryPublisher(broker).publish("in", text("x"));
  REQUIRE(eventually([&] { return h.stats().nacked == 1; }));
  CHECK(h.stats().acked == 0);
  CHECK(h.stats().failed == 1);
  CHECK(h.stats().published == 0);
}

TEST_CASE("router: at most `concurrency` messages of a handler at once, and that many are reached",
          "[router][concurrency]") {
  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  InMemoryAckSubscriber in(broker);
  Router router(fast_config());
  std::atomic<int> now{0};
  std::atomic<int> peak{0};
  Gate gate;
  auto& h = router.add_consumer_handler(
      "slow", "in", in,
      [&](const Message&) {
        const int n = ++now;
        int p = peak.load();
        while (n > p && !peak.compare_exchange_weak(p, n)) {
        }
        gate.wait();
        --now;
      },
      opts(3));
  RunningRouter running(router);
  REQUIRE(running.wait_running());
  InMemoryPublisher pub(broker);
  for (int i = 0; i < 12; ++i) pub.publish("in", text(std::to_string(i)));
  REQUIRE(gate.wait_for_waiters(3));
  gate.open();
  REQUIRE(eventually([&] { return h.stats().acked == 12; }));
  CHECK(peak == 3);
}

TEST_CASE("router: close lets in-flight messages finish, publish and ack", "[router][concurrency]") {
  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  InMemoryAckSubscriber in(broker);
  InMemoryPublisher out(broker);
  InMemorySubscriber sink(broker);
  sink.subscribe("out");
  Router router(fast_config());
  Gate gate;
  auto& h = router.add_handler("h", "in", in, "out", out, [&](const Message& m) {
    gate.wait();
    return Message(m);
  });
  RunningRouter running(router);
  REQUIRE(running.wait_running());
  InMemoryPublisher(broker).publish("in", text("late"));
  REQUIRE(gate.wait_for_waiters(1));
  bool clean = false;
  std::thread closer([&] { clean = router.close(20s); });
  REQUIRE(eventually([&] { return !router.is_running(); }));
  gate.open();
  closer.join();
  CHECK(clean);
  running.join();
  CHECK(router.is_closed());
  CHECK(h.stats().acked == 1);
  auto got = receive_n(sink, 1);
  REQUIRE(got.size() == 1);
  CHECK(payload(got[0]) == "late");
}

TEST_CASE("router: what is still in progress when close times out is nacked, not lost", "[router][concurrency]") {
  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  InMemoryAckSubscriber in(broker);
  InMemoryAckSubscriber other(broker);  // another member of the group, not receiving yet
  other.subscribe("in", "workers");
  InMemoryPublisher out(broker);
  InMemorySubscriber sink(broker);
  sink.subscribe("out");
  Router router(fast_config());
  Gate gate;
  auto& h = router.add_handler(
      "stuck", "in", in, "out", out,
      [&](const Message& m) {
        gate.wait();
        return Message(m);
      },
      opts(1, "workers"));
  RunningRouter running(router);
  REQUIRE(running.wait_running());
  InMemoryPublisher(broker).publish("in", text("stuck"));
  REQUIRE(gate.wait_for_waiters(1));
  CHECK_FALSE(router.close(30ms));
  CHECK(h.stats().abandoned == 1);
  CHECK(h.stats().nacked == 1);
  gate.open();  // the handler returns; its output is dropped (the message will be handled again)
  running.join();
  CHECK(h.stats().acked == 0);
  CHECK_FALSE(sink.try_receive().has_value());
  // The message is back in its group and goes to the other member, delivered a second time (the
  // router's subscriber left the group when the router closed).
  auto again = other.receive_with_ack_for(kincir::test::kPatience);
  REQUIRE(again.has_value());
  CHECK(payload(again->first) == "stuck");
  CHECK(again->second.delivery_count() == 2);
  std::error_code ec;
  CHECK_FALSE(in.receive_with_ack_for(1ms, ec).has_value());
  CHECK(ec == kincir::errc::not_subscribed);
}

TEST_CASE(
    "router: close leaves the subscriptions: a group's later messages go to the other members, a topic's "
    "publishers are no longer held back",
    "[router][concurrency]") {
  SECTION("group") {
    auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
    InMemoryAckSubscriber a(broker);
    InMemoryAckSubscriber b(broker);
    Router router(fast_config());
    std::atomic<int> handled{0};
    auto& h = router.add_consumer_handler(
        "a", "jobs", a, [&](const Message&) { ++handled; }, opts(1, "workers"));
    {
      RunningRouter running(router);
      REQUIRE(running.wait_running());
      InMemoryPublisher(broker).publish("jobs", text("before"));
      REQUIRE(eventually([&] { return h.stats().acked == 1; }));
      b.subscribe("jobs", "workers");
      CHECK(router.close(10s));
    }
    std::error_code ec;
    CHECK_FALSE(a.receive_with_ack_for(1ms, ec).has_value());
    CHECK(ec == kincir::errc::not_subscribed);
    InMemoryPublisher pub(broker);
    for (int i = 0; i < 20; ++i) pub.publish("jobs", text(std::to_string(i)));
    int got = 0;
    while (auto d = b.receive_with_ack_for(got == 20 ? 10ms : kincir::test::kPatience)) {
      b.ack(d->second);
      ++got;
    }
    CHECK(got == 20);  // every one: the closed router's subscriber takes none
    CHECK(handled == 1);
  }
  SECTION("topic with a bounded queue") {
    kincir::memory::BrokerConfig config = kincir::test::quiet_broker_config();
    config.max_queue_size = 4;
    config.overflow_policy = kincir::memory::OverflowPolicy::block;
    auto broker = std::make_shared<InMemoryBroker>(config);
    InMemoryAckSubscriber in(broker);
    Router router(fast_config());
    router.add_consumer_handler("h", "events", in, [](const Message&) {});
    {
      RunningRouter running(router);
      REQUIRE(running.wait_running());
      CHECK(router.close(10s));
    }
    // A subscriber left subscribed and never read would block this publisher at the fifth
    // message; the closed router's has left the topic.
    auto published = std::async(std::launch::async, [&] {
      InMemoryPublisher pub(broker);
      for (int i = 0; i < 20; ++i) pub.publish("events", text(std::to_string(i)));
      return true;
    });
    const bool done = published.wait_for(kincir::test::kPatience) == std::future_status::ready;
    if (!done) in.unsubscribe();  // lets the publisher go, so the test fails instead of hanging
    CHECK(done);
    CHECK(published.get());
  }
  SECTION("a subscriber without unsubscribe() is left as it is") {
    auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
    PlainSubscriber in(broker);
    Router router(fast_config());
    router.add_consumer_handler("h", "events", in, [](const Message&) {});
    {
      RunningRouter running(router);
      REQUIRE(running.wait_running());
      CHECK(router.close(10s));
    }
    InMemoryPublisher(broker).publish("events", text("still subscribed"));
    auto m = in.receive_for(kincir::test::kPatience);
    REQUIRE(m.has_value());
    CHECK(payload(*m) == "still subscribed");
  }
}

TEST_CASE("router: a receive error ends the handler unless it is worth retrying (receive_condition)",
          "[router][concurrency]") {
  using kincir::receive_condition;
  // The rule, code by code.
  CHECK(std::error_code(kincir::errc::broker_shutdown) == receive_condition::ended);
  CHECK(std::error_code(kincir::errc::closed) == receive_condition::ended);
  CHECK(std::error_code(kincir::errc::not_subscribed) == receive_condition::ended);
  CHECK(scripted_backend_error(scripted_backend_errc::gone) == receive_condition::ended);
  CHECK(std::make_error_code(std::errc::connection_reset) == receive_condition::ended);
  CHECK(std::make_error_code(std::errc::timed_out) == receive_condition::ended);  // a socket's last error
  CHECK(scripted_backend_error(scripted_backend_errc::reconnecting) == receive_condition::retry);
  CHECK(scripted_backend_error(scripted_backend_errc::reconnecting) != receive_condition::ended);
  CHECK(std::error_code(kincir::errc::timeout) == receive_condition::retry);
  CHECK(std::make_error_code(std::errc::resource_unavailable_try_again) == receive_condition::retry);
  CHECK(std::make_error_code(std::errc::interrupted) != receive_condition::ended);
  CHECK(std::error_code(kincir::handler_errc::exception) == receive_condition::retry);
  CHECK(std::error_code() != receive_condition::ended);
  CHECK(std::error_code() != receive_condition::retry);

  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  kincir::test::CapturingLogger log;
  RouterConfig config = fast_config(&log);
  config.receive_error_backoff = 1ms;
  SECTION("errors worth retrying: the handler goes on receiving") {
    ScriptedAckSubscriber in(broker);
    in.fail_next(scripted_backend_error(scripted_backend_errc::reconnecting));
    in.fail_next(std::make_error_code(std::errc::resource_unavailable_try_again));
    in.fail_next({});  // throws a plain exception
    Router router(config);
    auto& h = router.add_consumer_handler("h", "in", in, [](const Message&) {});
    RunningRouter running(router);
    REQUIRE(running.wait_running());
    REQUIRE(eventually([&] { return in.failures() == 3; }));
    InMemoryPublisher(broker).publish("in", text("after the errors"));
    REQUIRE(eventually([&] { return h.stats().acked == 1; }));
    CHECK(router.is_running());
    CHECK(log.matching("receive failed; retrying").size() == 3);
    CHECK(log.matching("subscription ended").empty());
  }
  SECTION("any other error: the subscription is over, the handler ends and so does run") {
    ScriptedAckSubscriber in(broker);
    ScriptedAckSubscriber other(broker);
    in.fail_next(scripted_backend_error(scripted_backend_errc::gone));
    other.fail_next(std::make_error_code(std::errc::connection_reset));
    Router router(config);
    router.add_consumer_handler("h", "in", in, [](const Message&) {});
    router.add_consumer_handler("other", "other", other, [](const Message&) {});
    std::error_code run_ec;
    auto ran = std::async(std::launch::async, [&] { router.run({}, run_ec); });
    const bool ended = ran.wait_for(kincir::test::kPatience) == std::future_status::ready;
    if (!ended) router.close(1s);  // the test fails instead of hanging
    ran.wait();
    CHECK(ended);
    CHECK_FALSE(run_ec);
    CHECK(router.is_closed());
    CHECK(log.matching("subscription ended; handler stops").size() == 2);
    CHECK(log.matching("receive failed; retrying").empty());
  }
}

TEST_CASE("router: router middleware wraps handler middleware; the first added is outermost", "[router][concurrency]") {
  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  InMemoryAckSubscriber in(broker);
  Router router(fast_config());
  std::vector<std::string> order;
  std::mutex m;
  auto tag = [&](const std::string& name) -> kincir::Middleware {
    return [&, name](kincir::HandlerFunc next) -> kincir::HandlerFunc {
      return [&, name, next = std::move(next)](Message& msg, const HandlerContext& ctx) {
        {
          const std::lock_guard lock(m);
          order.push_back(name);
        }
        return next(msg, ctx);
      };
    };
  };
  router.add_middleware(tag("router1")).add_middleware(tag("router2"));
  auto& h = router.add_consumer_handler("h", "in", in, [&](const Message&) {
    const std::lock_guard lock(m);
    order.emplace_back("handler");
  });
  h.add_middleware(tag("handler1")).add_middleware(tag("handler2"));
  RunningRouter running(router);
  REQUIRE(running.wait_running());
  InMemoryPublisher(broker).publish("in", text("x"));
  REQUIRE(eventually([&] { return h.stats().acked == 1; }));
  const std::lock_guard lock(m);
  CHECK(order == std::vector<std::string>{"router1", "router2", "handler1", "handler2", "handler"});
}

TEST_CASE("router: run(stop_token) closes on a stop request; the end of every subscription ends run",
          "[router][concurrency]") {
  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  SECTION("stop token") {
    InMemoryAckSubscriber in(broker);
    Router router(fast_config());
    router.add_consumer_handler("h", "in", in, [](const Message&) {});
    std::stop_source stop;
    std::thread t([&] { router.run(stop.get_token()); });
    router.running().wait();
    stop.request_stop();
    t.join();
    CHECK(router.is_closed());
  }
  SECTION("broker shutdown") {
    InMemoryAckSubscriber in(broker);
    Router router(fast_config());
    auto& h = router.add_consumer_handler("h", "in", in, [](const Message&) {});
    std::thread t([&] { router.run(); });
    router.running().wait();
    InMemoryPublisher(broker).publish("in", text("before shutdown"));
    broker->shutdown();
    t.join();  // ends by itself
    CHECK(router.is_closed());
    CHECK(h.stats().acked == 1);
  }
}

TEST_CASE("router: close from inside a handler does not wait for itself", "[router][concurrency]") {
  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  InMemoryAckSubscriber in(broker);
  Router router(fast_config());
  auto& h = router.add_consumer_handler("h", "in", in, [&](const Message&) { router.close(); });
  std::thread t([&] { router.run(); });
  router.running().wait();
  InMemoryPublisher(broker).publish("in", text("stop"));
  t.join();
  CHECK(h.stats().acked == 1);
}

TEST_CASE("router: a subscriber without acks counts failed messages as lost", "[router][concurrency]") {
  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  PlainSubscriber in(broker);
  Router router(fast_config());
  auto& h = router.add_consumer_handler("h", "in", in, [](const Message& m) {
    if (payload(m) == "bad") throw std::runtime_error("bad");
  });
  RunningRouter running(router);
  REQUIRE(running.wait_running());
  InMemoryPublisher pub(broker);
  pub.publish("in", text("good"));
  pub.publish("in", text("bad"));
  REQUIRE(eventually([&] { return h.stats().received == 2 && h.stats().lost == 1; }));
  CHECK(h.stats().succeeded == 1);
}

TEST_CASE("router: a consumer group shares a topic's messages between handlers", "[router][concurrency]") {
  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  InMemoryAckSubscriber a(broker);
  InMemoryAckSubscriber b(broker);
  Router router(fast_config());
  std::atomic<int> total{0};
  auto count = [&](const Message&) { ++total; };
  auto& ha = router.add_consumer_handler("a", "jobs", a, count, opts(1, "workers"));
  auto& hb = router.add_consumer_handler("b", "jobs", b, count, opts(1, "workers"));
  RunningRouter running(router);
  REQUIRE(running.wait_running());
  InMemoryPublisher pub(broker);
  for (int i = 0; i < 50; ++i) pub.publish("jobs", text(std::to_string(i)));
  REQUIRE(eventually([&] { return ha.stats().acked + hb.stats().acked == 50; }));
  CHECK(total == 50);
}

TEST_CASE("router: bad input is rejected with a clear error", "[router]") {
  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  InMemoryAckSubscriber in(broker);
  InMemoryPublisher out(broker);
  PlainSubscriber plain(broker);
  Router router(fast_config());
  auto noop = [](const Message&) {};
  CHECK_THROWS_WITH(router.add_consumer_handler("", "in", in, noop), Catch::Contains("empty handler name"));
  CHECK_THROWS_WITH(router.add_consumer_handler("h", "", in, noop), Catch::Contains("empty subscribe topic"));
  CHECK_THROWS_WITH(router.add_handler("h", "in", in, "", out, noop), Catch::Contains("empty publish topic"));
  CHECK_THROWS_WITH(router.add_consumer_handler("h", "in", in, noop, opts(0)), Catch::Contains("concurrency"));
  CHECK_THROWS_WITH(router.add_consumer_handler("h", "in", plain, noop, opts(1, "g")),
                    Catch::Contains("no consumer groups"));
  router.add_consumer_handler("h", "in", in, noop);
  CHECK_THROWS_WITH(router.add_consumer_handler("h", "other", in, noop), Catch::Contains("duplicate"));
  CHECK_THROWS(router.add_middleware(kincir::Middleware{}));

  Router empty(fast_config());
  std::error_code ec;
  empty.run({}, ec);
  CHECK(ec == kincir::errc::invalid_argument);
  CHECK_THROWS(empty.running().get());
}

TEST_CASE("router: runs once; closed before running it does not run; a failed subscribe reports",
          "[router][concurrency]") {
  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  SECTION("closed before run") {
    InMemoryAckSubscriber in(broker);
    Router router(fast_config());
    router.add_consumer_handler("h", "in", in, [](const Message&) {});
    CHECK(router.close(1s));
    std::error_code ec;
    router.run({}, ec);
    CHECK(ec == kincir::errc::invalid_argument);
    CHECK_THROWS(router.running().get());
  }
  SECTION("run twice") {
    InMemoryAckSubscriber in(broker);
    Router router(fast_config());
    router.add_consumer_handler("h", "in", in, [](const Message&) {});
    {
      RunningRouter running(router);
      REQUIRE(running.wait_running());
      CHECK_THROWS_AS(router.add_consumer_handler("late", "in", in, [](const Message&) {}), kincir::Error);
    }
    std::error_code ec;
    router.run({}, ec);
    CHECK(ec == kincir::errc::invalid_argument);
  }
  SECTION("a middleware that throws while wrapping") {
    InMemoryAckSubscriber in(broker);
    Router router(fast_config());
    router.add_consumer_handler("h", "in", in, [](const Message&) {});
    router.add_middleware([](const kincir::HandlerFunc&) -> kincir::HandlerFunc {
      throw kincir::Error(make_error_code(kincir::errc::invalid_argument), "bad middleware");
    });
    std::error_code ec;
    router.run({}, ec);
    CHECK(ec == kincir::errc::invalid_argument);
    CHECK(router.is_closed());
  }
  SECTION("invalid topic") {
    InMemoryAckSubscriber in(broker);
    Router router(fast_config());
    router.add_consumer_handler("h", std::string(300, 'x'), in, [](const Message&) {});
    std::error_code ec;
    router.run({}, ec);
    CHECK(ec == kincir::errc::invalid_topic);
    CHECK(router.is_closed());
    CHECK_THROWS_AS(router.running().get(), kincir::Error);
  }
}

#if KINCIR_HAS_AWAITABLE_HANDLERS
TEST_CASE("router: coroutine handlers publish what they co_return; a throw nacks; close cancels a wait",
          "[router][concurrency]") {
  auto broker = std::make_shared<InMemoryBroker>(kincir::test::quiet_broker_config());
  InMemoryAckSubscriber in(broker);
  InMemoryPublisher out(broker);
  InMemorySubscriber sink(broker);
  sink.subscribe("out");
  Router router(fast_config());
  std::atomic<int> waiting{0};
  auto& h =
      router.add_handler("co", "in", in, "out", out,
                         kincir::awaitable_handler([&](const Message& m) -> asio::awaitable<std::optional<Message>> {
                           asio::steady_timer timer(co_await asio::this_coro::executor);
                           if (payload(m) == "throw") throw std::runtime_error("coroutine failed");
                           if (payload(m) == "wait") {
                             ++waiting;
                             timer.expires_after(std::chrono::hours(1));
                             co_await timer.async_wait(asio::use_awaitable);  // cancelled by the close
                           }
                           timer.expires_after(1ms);
                           co_await timer.async_wait(asio::use_awaitable);
                           co_return text(payload(m) + " done");
                         }));
  RunningRouter running(router);
  REQUIRE(running.wait_running());
  InMemoryPublisher pub(broker);
  pub.publish("in", text("a"));
  pub.publish("in", text("throw"));
  auto got = receive_n(sink, 1);
  REQUIRE(got.size() == 1);
  CHECK(payload(got[0]) == "a done");
  REQUIRE(eventually([&] { return h.stats().failed >= 1; }));
  pub.publish("in", text("wait"));
  REQUIRE(eventually([&] { return waiting.load() == 1; }));
  CHECK(router.close(20s));  // the wait is cancelled: the message fails and is nacked, not abandoned
  running.join();
  CHECK(h.stats().abandoned == 0);
  CHECK(h.stats().acked == 1);
}
#endif
