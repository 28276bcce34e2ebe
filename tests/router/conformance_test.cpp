// The conformance suite: what every backend must do for the router (and its users) to work. Each
// test is a function template over a backend fixture (see backends.hpp), registered for:
//   - the in-process backends of KINCIR_CONFORMANCE_BACKENDS (default: the in-memory broker),
//     tagged [conformance]: router_test runs them as part of its unit tests (also under TSan);
//   - RabbitMQ, when KINCIR_CONFORMANCE_RABBITMQ is defined (the build has kincir::rabbitmq and
//     is not a ThreadSanitizer build), tagged [.][conformance][rabbitmq]: hidden from a plain run,
//     run by the CTest entry router_conformance_rabbitmq (`router_test [rabbitmq]`) against the
//     throw-away broker node of the rabbitmq_broker fixture.
// A new backend adds a fixture, registers it here and passes these tests to count as done. Tests
// needing a feature the backend does not declare are skipped with the reason (a WARN line).
#include <kincir/router.hpp>

#include "router/backends.hpp"
#include "router/support.hpp"
#include "support/catch.hpp"

#ifdef KINCIR_CONFORMANCE_RABBITMQ
#include "router/rabbitmq_backend.hpp"
#endif

#include <algorithm>  // std::sort
#include <atomic>     // counters shared with handlers
#include <chrono>     // bounded waits
#include <cstddef>    // std::size_t
#include <cstdint>    // delivery counts
#include <future>     // bounded joins
#include <mutex>      // handled sets
#include <set>        // ids seen
#include <string>     // payloads
#include <thread>     // concurrent subscribers, blocked receivers
#include <vector>     // batches

#ifndef KINCIR_CONFORMANCE_BACKENDS
#define KINCIR_CONFORMANCE_BACKENDS kincir::test::MemoryBackend
#endif

/// Registers the test `fn<TestType>()` as `title` for every backend (`fn` names a template: it
/// cannot be parenthesised).
// NOLINTBEGIN(bugprone-macro-parentheses)
#ifdef KINCIR_CONFORMANCE_RABBITMQ
#define KINCIR_CONFORMANCE_TEST(title, fn)                                                                 \
  TEMPLATE_TEST_CASE(title, "[conformance][concurrency]", KINCIR_CONFORMANCE_BACKENDS) { fn<TestType>(); } \
  TEMPLATE_TEST_CASE(title, "[.][conformance][rabbitmq]", kincir::test::RabbitMQBackend) { fn<TestType>(); }
#else
#define KINCIR_CONFORMANCE_TEST(title, fn) \
  TEMPLATE_TEST_CASE(title, "[conformance][concurrency]", KINCIR_CONFORMANCE_BACKENDS) { fn<TestType>(); }
#endif
// NOLINTEND(bugprone-macro-parentheses)

using namespace std::chrono_literals;
using kincir::HandlerContext;
using kincir::HandlerResult;
using kincir::Message;
using kincir::test::eventually;
using kincir::test::kPatience;
using kincir::test::payload;
using kincir::test::text;

#define KINCIR_REQUIRE_FEATURE(feature, reason)                                           \
  do {                                                                                    \
    if (!TestType::kFeatures.feature) {                                                   \
      WARN("skipped on " << TestType::kName << ": no " #feature " (" << (reason) << ")"); \
      return;                                                                             \
    }                                                                                     \
  } while (false)

/// Whether the backend declares a known defect for this case (backends.hpp, KnownDefects; none is
/// declared today).
#define KINCIR_HAS_DEFECT(defect) (!TestType::kDefects.defect.empty())
#define KINCIR_WARN_DEFECT(defect) \
  WARN("known defect on " << TestType::kName << " (" #defect "): " << TestType::kDefects.defect)

// A namespace of its own: the files of router_test may be compiled as one unit.
namespace conformance_suite {
namespace {

std::vector<Message> numbered(int n, const std::string& prefix = "") {
  std::vector<Message> out;
  for (int i = 0; i < n; ++i) out.push_back(text(prefix + std::to_string(i)).with_metadata("n", std::to_string(i)));
  return out;
}

/// Receives with acks until `n` messages arrived, an error, or patience ran out; acks each. No
/// assertions (it runs on other threads too, and Catch2's are for the test's thread).
template <class S>
std::vector<Message> receive_acked(S& s, std::size_t n) {
  std::vector<Message> out;
  const auto until = std::chrono::steady_clock::now() + kPatience;
  while (out.size() < n && std::chrono::steady_clock::now() < until) {
    std::error_code ec;
    auto d = s.receive_with_ack_for(20ms, ec);
    if (ec) break;
    if (!d) continue;
    s.ack(d->second);
    out.push_back(std::move(d->first));
  }
  return out;
}

kincir::RouterConfig quick_router() {
  kincir::RouterConfig c;
  c.poll_interval = 5ms;
  c.close_timeout = 10s;
  return c;
}

kincir::HandlerOptions in_group(std::string group) {
  kincir::HandlerOptions o;
  o.group = std::move(group);
  return o;
}

}  // namespace

template <class TestType>
void publish_and_subscribe() {
  TestType backend;
  const auto topic = backend.topic("pubsub");
  auto sub = backend.subscriber();
  sub.subscribe(topic);
  auto pub = backend.publisher();
  Message m = text("hello").with_metadata("key", "value").with_metadata("other", "x");
  const auto id = m.uuid;
  pub.publish(topic, std::move(m));
  auto got = receive_acked(sub, 1);
  REQUIRE(got.size() == 1);
  CHECK(got[0].uuid == id);
  CHECK(payload(got[0]) == "hello");
  CHECK(got[0].metadata.get("key") == "value");
  CHECK(got[0].metadata.get("other") == "x");
}
KINCIR_CONFORMANCE_TEST("conformance: publish and subscribe; id, payload and metadata preserved", publish_and_subscribe)

template <class TestType>
void many_messages_in_order() {
  TestType backend;
  const auto topic = backend.topic("many");
  auto sub = backend.subscriber();
  sub.subscribe(topic);
  auto pub = backend.publisher();
  constexpr int kCount = 1000;
  pub.publish(topic, numbered(kCount / 2));
  for (auto& m : numbered(kCount / 2, "b")) pub.publish(topic, std::move(m));
  auto got = receive_acked(sub, kCount);
  REQUIRE(got.size() == kCount);
  std::vector<std::string> expected;
  for (int i = 0; i < kCount / 2; ++i) expected.push_back(std::to_string(i));
  for (int i = 0; i < kCount / 2; ++i) expected.push_back("b" + std::to_string(i));
  std::vector<std::string> seen;
  for (const auto& m : got) seen.push_back(payload(m));
  if (!TestType::kFeatures.ordering) {
    std::sort(seen.begin(), seen.end());
    std::sort(expected.begin(), expected.end());
  }
  CHECK(seen == expected);
}
KINCIR_CONFORMANCE_TEST("conformance: many messages, in order where the backend orders", many_messages_in_order)

template <class TestType>
void concurrent_subscribers() {
  TestType backend;
  const auto topic = backend.topic("fanout");
  constexpr int kSubscribers = 4;
  constexpr int kCount = 200;
  std::vector<typename TestType::subscriber_type> subs;
  for (int i = 0; i < kSubscribers; ++i) subs.push_back(backend.subscriber());
  {
    std::vector<std::thread> threads;
    for (auto& s : subs) threads.emplace_back([&s, &topic] { s.subscribe(topic); });
    for (auto& t : threads) t.join();
  }
  auto pub = backend.publisher();
  pub.publish(topic, numbered(kCount));
  std::vector<std::size_t> counts(kSubscribers);
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < kSubscribers; ++i) {
      threads.emplace_back([&, i] { counts[i] = receive_acked(subs[i], kCount).size(); });
    }
    for (auto& t : threads) t.join();
  }
  for (auto c : counts) CHECK(c == kCount);
}
KINCIR_CONFORMANCE_TEST("conformance: concurrent subscribers each receive everything", concurrent_subscribers)

template <class TestType>
void nack_redelivers() {
  TestType backend;
  KINCIR_REQUIRE_FEATURE(requeue, "nack cannot redeliver");
  const auto topic = backend.topic("nack");
  auto sub = backend.subscriber();
  sub.subscribe(topic);
  auto pub = backend.publisher();
  Message m = text("again");
  const auto id = m.uuid;
  pub.publish(topic, std::move(m));
  auto first = sub.receive_with_ack_for(kPatience);
  REQUIRE(first.has_value());
  sub.nack(first->second, true);
  auto second = sub.receive_with_ack_for(kPatience);
  REQUIRE(second.has_value());
  CHECK(second->first.uuid == id);
  CHECK(second->second.is_retry());
  if (TestType::kFeatures.delivery_count) CHECK(second->second.delivery_count() == 2);
  sub.ack(second->second);
  CHECK_FALSE(sub.receive_with_ack_for(20ms).has_value());
}
KINCIR_CONFORMANCE_TEST("conformance: a nacked message is delivered again", nack_redelivers)

template <class TestType>
void router_redelivers_failures() {
  TestType backend;
  KINCIR_REQUIRE_FEATURE(requeue, "a failed message cannot come back");
  const auto in_topic = backend.topic("router-in");
  const auto out_topic = backend.topic("router-out");
  auto in = backend.subscriber();
  auto out = backend.subscriber();
  out.subscribe(out_topic);
  auto pub = backend.publisher();
  auto out_pub = backend.publisher();
  kincir::Router router(quick_router());
  std::atomic<int> failures{0};
  std::atomic<std::uint32_t> second_delivery_count{0};
  auto& h = router.add_handler("echo", in_topic, in, out_topic, out_pub,
                               [&](Message& m, const HandlerContext& ctx) -> HandlerResult {
                                 if (payload(m) == "fail once") {
                                   if (failures.fetch_add(1) == 0) return HandlerResult::failure(kincir::errc::closed);
                                   second_delivery_count = ctx.delivery_count;
                                 }
                                 return text(payload(m) + " handled");
                               });
  kincir::test::RunningRouter running(router);
  REQUIRE(running.wait_running());
  pub.publish(in_topic, text("fail once"));
  pub.publish(in_topic, text("fine"));
  auto got = receive_acked(out, 2);
  REQUIRE(got.size() == 2);
  std::set<std::string> payloads;
  for (const auto& m : got) payloads.insert(payload(m));
  CHECK(payloads == std::set<std::string>{"fail once handled", "fine handled"});
  REQUIRE(eventually([&] { return h.stats().acked == 2; }));
  CHECK(h.stats().nacked == 1);
  if (TestType::kFeatures.delivery_count) CHECK(second_delivery_count == 2);
}
KINCIR_CONFORMANCE_TEST("conformance: a router redelivers what its handler failed on, and publishes what it returns",
                        router_redelivers_failures)

template <class TestType>
void group_continues_after_close() {
  TestType backend;
  KINCIR_REQUIRE_FEATURE(groups, "no consumer groups");
  const auto topic = backend.topic("continue");
  auto a = backend.subscriber();
  auto b = backend.subscriber();
  std::mutex m;
  std::set<std::string> handled;
  auto record = [&](const Message& msg) {
    const std::lock_guard lock(m);
    handled.insert(payload(msg));
  };
  kincir::Router first(quick_router());
  kincir::Router second(quick_router());
  auto& ha = first.add_consumer_handler("a", topic, a, record, in_group("workers"));
  // The second member is slow, so the first one gets messages too (a fast member may otherwise
  // take every message: which member takes one is not fixed).
  auto slow_record = [&](const Message& msg) {
    record(msg);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  second.add_consumer_handler("b", topic, b, slow_record, in_group("workers"));
  kincir::test::RunningRouter run_first(first);
  kincir::test::RunningRouter run_second(second);
  REQUIRE(run_first.wait_running());
  REQUIRE(run_second.wait_running());
  auto pub = backend.publisher();
  // Publish until the first consumer has handled something (group members compete: which one
  // takes a message is not fixed), then close its router and go on publishing.
  int published = 0;
  REQUIRE(eventually([&] {
    pub.publish(topic, text(std::to_string(published++)));
    return ha.stats().acked > 0;
  }));
  // The close leaves a's subscription: what a's subscriber held (a RabbitMQ consumer's prefetch)
  // goes back to the group, and nothing published from now on goes to a.
  CHECK(first.close(10s));
  run_first.join();
  const int total = published + 100;
  for (; published < total; ++published) pub.publish(topic, text(std::to_string(published)));
  CHECK(eventually([&] {
    const std::lock_guard lock(m);
    return handled.size() == static_cast<std::size_t>(total);
  }));
}
KINCIR_CONFORMANCE_TEST("conformance: a group continues when one consumer's router closes; nothing is lost",
                        group_continues_after_close)

template <class TestType>
void groups_once_per_group() {
  TestType backend;
  KINCIR_REQUIRE_FEATURE(groups, "no consumer groups");
  const auto topic = backend.topic("groups");
  auto g1a = backend.subscriber();
  auto g1b = backend.subscriber();
  auto g2 = backend.subscriber();
  g1a.subscribe(topic, "g1");
  g1b.subscribe(topic, "g1");
  g2.subscribe(topic, "g2");
  constexpr int kCount = 200;
  backend.publisher().publish(topic, numbered(kCount));
  std::mutex m;
  std::multiset<std::string> group1;
  std::atomic<bool> done{false};
  auto drain = [&](typename TestType::subscriber_type& s) {
    while (!done.load()) {
      auto d = s.receive_with_ack_for(5ms);
      if (!d) continue;
      s.ack(d->second);
      const std::lock_guard lock(m);
      group1.insert(payload(d->first));
    }
  };
  std::thread ta([&] { drain(g1a); });
  std::thread tb([&] { drain(g1b); });
  auto second_group = receive_acked(g2, kCount);
  const bool all = eventually([&] {
    const std::lock_guard lock(m);
    return group1.size() >= kCount;
  });
  std::this_thread::sleep_for(20ms);  // a duplicate would arrive now
  done = true;
  ta.join();
  tb.join();
  CHECK(all);
  CHECK(second_group.size() == kCount);
  const std::lock_guard lock(m);
  CHECK(group1.size() == kCount);
  CHECK(std::set<std::string>(group1.begin(), group1.end()).size() == kCount);
}
KINCIR_CONFORMANCE_TEST("conformance: consumer groups get each message once per group", groups_once_per_group)

template <class TestType>
void topics_isolated() {
  TestType backend;
  const auto t1 = backend.topic("iso");
  const auto t2 = backend.topic("iso");
  auto s1 = backend.subscriber();
  auto s2 = backend.subscriber();
  s1.subscribe(t1);
  s2.subscribe(t2);
  auto pub = backend.publisher();
  pub.publish(t1, numbered(10, "one-"));
  pub.publish(t2, numbered(5, "two-"));
  auto got1 = receive_acked(s1, 10);
  auto got2 = receive_acked(s2, 5);
  REQUIRE(got1.size() == 10);
  REQUIRE(got2.size() == 5);
  for (const auto& m : got1) CHECK(payload(m).rfind("one-", 0) == 0);
  for (const auto& m : got2) CHECK(payload(m).rfind("two-", 0) == 0);
  CHECK_FALSE(s1.receive_with_ack_for(20ms).has_value());
  CHECK_FALSE(s2.receive_with_ack_for(20ms).has_value());
}
KINCIR_CONFORMANCE_TEST("conformance: topics are isolated from each other", topics_isolated)

template <class TestType>
void close_wakes_receivers() {
  TestType backend;
  const auto topic = backend.topic("close");
  auto blocked = backend.subscriber();
  blocked.subscribe(topic);
  auto routed = backend.subscriber();
  kincir::Router router(quick_router());
  router.add_consumer_handler("h", topic, routed, [](const Message&) {});
  // Every wait is bounded: a receiver that is not woken returns after twice the patience, a
  // router that does not end is closed below (and the test fails).
  std::error_code receive_ec;
  std::error_code run_ec;
  std::atomic<bool> receiver_returned{false};
  std::atomic<bool> router_returned{false};
  std::thread receiver([&] {
    (void)blocked.receive_with_ack_for(2 * kPatience, receive_ec);
    receiver_returned = true;
  });
  std::thread runner([&] {
    router.run({}, run_ec);
    router_returned = true;
  });
  const bool running = router.running().wait_for(kPatience) == std::future_status::ready;
  std::this_thread::sleep_for(10ms);  // let the receiver block
  backend.shutdown();
  const bool woken = eventually([&] { return receiver_returned.load(); });
  // The router's subscription ended for good (receive_condition::ended): run returns by itself.
  const bool ended = eventually([&] { return router_returned.load(); });
  if (!ended) router.close(1s);
  receiver.join();
  runner.join();
  CHECK(running);
  CHECK(woken);
  CHECK(receive_ec);
  CHECK(receive_ec == kincir::receive_condition::ended);
  CHECK(ended);
  CHECK_FALSE(run_ec);
  CHECK(router.is_closed());
}
KINCIR_CONFORMANCE_TEST("conformance: closing the backend wakes a blocked receiver and ends a router",
                        close_wakes_receivers)

template <class TestType>
void published_before_subscribing() {
  TestType backend;
  const auto topic = backend.topic("early");
  {
    // Declare the topic (and, on brokers that keep queues, the group's queue) first.
    auto early = backend.subscriber();
    early.subscribe(topic, "late-group");
  }
  backend.publisher().publish(topic, numbered(3));
  auto late = backend.subscriber();
  late.subscribe(topic, "late-group");
  if (TestType::kFeatures.receives_before_subscribe) {
    auto got = receive_acked(late, 3);
    REQUIRE(got.size() == 3);
    std::set<std::string> payloads;
    for (const auto& m : got) payloads.insert(payload(m));
    CHECK(payloads == std::set<std::string>{"0", "1", "2"});
  } else {
    CHECK_FALSE(late.receive_with_ack_for(20ms).has_value());
  }
  // Without a group, on every backend: only what is published after subscribing.
  auto alone = backend.subscriber();
  alone.subscribe(topic);
  CHECK_FALSE(alone.receive_with_ack_for(20ms).has_value());
}
KINCIR_CONFORMANCE_TEST("conformance: messages published before subscribing, as the backend documents",
                        published_before_subscribing)

template <class TestType>
void reconnects() {
  TestType backend;
  KINCIR_REQUIRE_FEATURE(reconnect, "an in-process backend has no connection to lose");
  const auto topic = backend.topic("reconnect");
  auto own = backend.subscriber();     // a queue of its own (where the backend has queues)
  auto member = backend.subscriber();  // a group's queue, which outlives the connection
  own.subscribe(topic);
  member.subscribe(topic, "survivors");
  // A router over the same connection: a connection the client recovers does not end it.
  auto routed = backend.subscriber();
  std::mutex routed_mutex;
  std::set<std::string> routed_payloads;
  kincir::Router router(quick_router());
  router.add_consumer_handler(
      "routed", topic, routed,
      [&](const Message& m) {
        const std::lock_guard lock(routed_mutex);
        routed_payloads.insert(payload(m));
      },
      in_group("routed"));
  kincir::test::RunningRouter running(router);
  REQUIRE(running.wait_running());
  const auto routed_saw = [&](const std::string& p) {
    const std::lock_guard lock(routed_mutex);
    return routed_payloads.count(p) != 0;
  };
  auto pub = backend.publisher();
  pub.publish(topic, text("before"));
  CHECK(receive_acked(own, 1).size() == 1);
  CHECK(receive_acked(member, 1).size() == 1);
  CHECK(eventually([&] { return routed_saw("before"); }));
  REQUIRE(backend.reconnect());
  // Publishing works again (a publish may wait for the connection, or fail while it is down).
  CHECK(eventually([&] {
    std::error_code ec;
    pub.publish(topic, text("after"), ec);
    return !ec;
  }));
  // The group's queue kept its binding: the member consumes again and gets what was published.
  // (At least once: an ack lost with the connection brings "before" again first.)
  bool after = false;
  for (int i = 0; i < 3 && !after; ++i) {
    auto got = receive_acked(member, 1);
    if (got.empty()) break;
    after = payload(got[0]) == "after";
  }
  CHECK(after);
  // A subscriber's own queue is declared and bound again once its connection is back: what was
  // published before that went nowhere, so publish until something arrives.
  bool own_receives = false;
  const auto until = std::chrono::steady_clock::now() + kPatience;
  while (!own_receives && std::chrono::steady_clock::now() < until) {
    std::error_code publish_ec;
    pub.publish(topic, text("probe"), publish_ec);
    std::error_code ec;
    auto d = own.receive_with_ack_for(50ms, ec);
    if (ec) {
      FAIL_CHECK("the subscription ended after the reconnect: " << ec.message());
      break;
    }
    if (d) {
      own.ack(d->second);
      own_receives = true;
    }
  }
  CHECK(own_receives);
  CHECK(eventually([&] { return routed_saw("after"); }));
  CHECK(router.is_running());
}
KINCIR_CONFORMANCE_TEST("conformance: the client recovers from a dropped connection", reconnects)

}  // namespace conformance_suite
