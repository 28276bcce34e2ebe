// Fault injection against a real broker: the seven scenarios of the reliability work. Each one
// publishes N messages with confirms (persistent, to a durable group queue) from one connection
// while a consumer on another connection acknowledges them, and injects faults meanwhile:
//   cut       the proxy cuts every connection every 300 ms (bandwidth throttled)
//   close     rabbitmqctl close_connection on the publisher's and the consumer's connection
//   restart   rabbitmqctl stop_app / start_app mid-stream
//   kill      the broker killed with SIGKILL and started again on its data
//   alarm     a memory alarm (set_vm_memory_high_watermark) blocks the publisher, then clears
//   stall     the proxy holds every byte for three heartbeat intervals (bytes also delayed)
//   block     a consumer handler blocks for three heartbeat intervals
// and checks: every message confirmed to the publisher arrives at least once; every publish gets
// exactly one outcome; every wait has a deadline; memory stays bounded. It prints the figures
// (messages, faults, duplicates, recovery times p50/max).
//
// Environment: KINCIR_RABBITMQ_URI, KINCIR_RABBITMQ_CTL (rabbitmqctl), KINCIR_RABBITMQ_NODE_SH
// (broker.sh with the node's ports, for kill and restart) and KINCIR_RABBITMQ_NODE_DIR name the
// test's own node; KINCIR_FAULT_MESSAGES
// (default 2000) and KINCIR_FAULT_SECONDS (the shortest stream, default 6) size the run.
#include <kincir/rabbitmq/publisher.hpp>   // RabbitMQPublisher
#include <kincir/rabbitmq/subscriber.hpp>  // RabbitMQSubscriber

#include <unistd.h>  // sysconf for the page size

#include <algorithm>   // std::sort
#include <array>       // ctl output
#include <atomic>      // counters shared with handlers
#include <chrono>      // deadlines, pacing
#include <cstdio>      // popen, printf
#include <cstdlib>     // std::getenv
#include <deque>       // retries
#include <fstream>     // /proc/self/statm
#include <functional>  // scenario faults
#include <future>      // the blocking handler
#include <map>         // outcome errors
#include <memory>      // counters
#include <mutex>       // retries, recovery times
#include <semaphore>   // publishes in flight
#include <string>      // payloads
#include <thread>      // publisher, consumer, fault and monitor threads
#include <vector>      // per-message counters

#include "broker_ctl.hpp"
#include "support/catch.hpp"
#include "support/fault_proxy.hpp"

using namespace std::chrono_literals;
using kincir::Message;
using kincir::rabbitmq::Connection;
using kincir::rabbitmq::RabbitMQConfig;
using kincir::rabbitmq::RabbitMQPublisher;
using kincir::rabbitmq::RabbitMQSubscriber;
using kincir::rabbitmq::RecoveryEvent;
using kincir::rabbitmq::RecoveryState;
namespace amqp = kincir::rabbitmq::amqp;
using Clock = std::chrono::steady_clock;
using kincir::test::close_connections_named;
using kincir::test::ctl;

namespace {

std::string env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read before threads start
  return v != nullptr ? v : fallback;
}

std::size_t env_size(const char* name, std::size_t fallback) {
  const std::string v = env(name, "");
  if (v.empty()) return fallback;
  return static_cast<std::size_t>(std::stoull(v));
}

std::string shell(const std::string& command) {
  std::string out;
  FILE* p = popen((command + " 2>&1").c_str(), "r");  // NOLINT(cert-env33-c): the test's own scripts
  if (p == nullptr) return out;
  std::array<char, 512> buf{};
  while (std::fgets(buf.data(), static_cast<int>(buf.size()), p) != nullptr) out += buf.data();
  pclose(p);
  return out;
}

/// Runs broker.sh `command` (kill, restart) on the test's node.
std::string node_sh(const std::string& command) {
  const std::string node = env("KINCIR_RABBITMQ_NODE_SH", "");
  REQUIRE_FALSE(node.empty());
  return shell(node + " " + command + " " + env("KINCIR_RABBITMQ_NODE_DIR", ""));
}

std::size_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0;
  std::size_t resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

/// What a scenario's fault thread gets.
struct FaultContext {
  kincir::test::FaultProxy* proxy = nullptr;
  std::string publisher_name;
  std::string consumer_name;
  std::chrono::seconds heartbeat{1};
  std::atomic<bool>* stop = nullptr;
  std::function<bool()> publisher_blocked;
  Clock::time_point start;
  /// Sleeps until `t` after the start, or until the stream ends; false if it ended.
  bool at(Clock::duration t) const {
    while (Clock::now() < start + t) {
      if (stop->load()) return false;
      std::this_thread::sleep_for(10ms);
    }
    return !stop->load();
  }
};

struct Scenario {
  std::string name;
  bool proxied = false;
  bool block_consumer = false;
  bool expect_recovery = true;
  /// Injects the faults; returns how many.
  std::function<int(FaultContext&)> fault;
};

struct Figures {
  std::size_t messages = 0;
  std::size_t attempts = 0;
  std::size_t confirmed = 0;
  std::size_t received = 0;
  std::size_t distinct = 0;
  std::size_t marked_duplicates = 0;
  std::size_t redelivered = 0;
  std::size_t stale_acks = 0;
  int faults = 0;
  std::uint64_t republished = 0;
};

void run(const Scenario& s) {
  const std::size_t n = env_size("KINCIR_FAULT_MESSAGES", 2000);
  const auto min_stream = std::chrono::seconds(env_size("KINCIR_FAULT_SECONDS", 6));
  const auto deadline = Clock::now() + 150s + std::chrono::milliseconds(n * 3);
  const std::chrono::seconds heartbeat{1};

  // Per message: publishes made, outcomes seen, confirmed, receptions. Declared before the
  // connections, whose handlers use them, so that they outlive every handler.
  std::vector<std::atomic<std::uint32_t>> attempts(n);
  std::vector<std::atomic<std::uint32_t>> outcomes(n);
  std::vector<std::atomic<bool>> confirmed(n);
  std::vector<std::uint32_t> receptions(n, 0);
  std::atomic<std::size_t> confirmed_count{0};
  std::atomic<std::size_t> double_outcomes{0};
  std::mutex retry_mutex;
  std::deque<std::size_t> retries;
  std::map<std::string, std::size_t> failed_outcomes;
  std::counting_semaphore<1024> window(256);
  std::atomic<bool> hung{false};
  std::atomic<bool> stream_done{false};
  Figures f;
  f.messages = n;
  std::mutex downtime_mutex;
  std::vector<Clock::duration> downtimes;

  RabbitMQConfig base = RabbitMQConfig::for_testing();
  base.apply_uri(env("KINCIR_RABBITMQ_URI", "amqp://guest:guest@127.0.0.1:5674"));
  base.topology.durable_exchanges = true;
  base.topology.durable_queues = true;
  base.persistent = true;
  base.max_unconfirmed = 256;
  base.prefetch = 200;
  base.confirm_timeout = 60s;
  base.call_timeout = 10s;
  base.connection.heartbeat = amqp::HeartbeatSetting::seconds(static_cast<std::uint16_t>(heartbeat.count()));
  std::unique_ptr<kincir::test::FaultProxy> proxy;
  if (s.proxied) {
    proxy = std::make_unique<kincir::test::FaultProxy>(base.endpoints[0].port);
    base.endpoints[0].port = proxy->port();
  }
  base.recovery.on_state = [&](const RecoveryEvent& e) {
    if (e.state != RecoveryState::recovered) return;
    const std::lock_guard lock(downtime_mutex);
    downtimes.push_back(e.downtime);
  };
  const std::string tag = kincir::Uuid::new_v4().to_string().substr(0, 8);
  auto pub_cfg = base;
  pub_cfg.connection.connection_name = "kincir-fault-pub-" + tag;
  auto con_cfg = base;
  con_cfg.connection.connection_name = "kincir-fault-con-" + tag;
  const std::string topic = "fault." + s.name + "." + tag;

  auto con_conn = Connection::open(con_cfg);
  RabbitMQSubscriber sub(con_conn);
  sub.subscribe(topic, "g");  // the durable group queue exists before the first publish
  auto pub_conn = Connection::open(pub_cfg);
  RabbitMQPublisher pub(pub_conn);

  const auto start = Clock::now();
  const std::size_t rss0 = rss_bytes();
  std::atomic<std::size_t> rss_peak{rss0};
  std::atomic<bool> saw_blocked{false};
  std::atomic<std::uint64_t> blocked_ms{0};
  std::atomic<bool> stop_monitor{false};
  std::thread monitor([&] {
    while (!stop_monitor.load()) {
      const std::size_t r = rss_bytes();
      if (r > rss_peak.load()) rss_peak.store(r);
      if (pub.blocked()) {
        saw_blocked.store(true);
        blocked_ms.fetch_add(50);
      }
      std::this_thread::sleep_for(50ms);
    }
  });

  auto publish = [&](std::size_t i) {
    if (!window.try_acquire_until(deadline)) {
      hung.store(true);
      return false;
    }
    attempts[i].fetch_add(1);
    std::string body = std::to_string(i);
    body.resize(128, '.');
    pub.async_publish(topic, Message(std::move(body)), [&, i](std::error_code ec) {
      if (outcomes[i].fetch_add(1) + 1 > attempts[i].load()) double_outcomes.fetch_add(1);
      if (!ec) {
        if (!confirmed[i].exchange(true)) confirmed_count.fetch_add(1);
      } else {
        const std::lock_guard lock(retry_mutex);
        ++failed_outcomes[ec.message()];
        retries.push_back(i);
      }
      window.release();
    });
    return true;
  };

  std::thread publisher([&] {
    for (std::size_t i = 0; i < n && !hung.load(); ++i) {
      const auto due = start + min_stream * static_cast<std::int64_t>(i) / static_cast<std::int64_t>(n);
      std::this_thread::sleep_until(due);
      publish(i);
    }
    // Publishes that failed (a deadline passed) are made again until confirmed.
    while (confirmed_count.load() < n && !hung.load() && Clock::now() < deadline) {
      std::size_t i = 0;
      {
        const std::lock_guard lock(retry_mutex);
        if (!retries.empty()) {
          i = retries.front();
          retries.pop_front();
        } else {
          i = n;
        }
      }
      if (i == n) {
        std::this_thread::sleep_for(5ms);
        continue;
      }
      if (!confirmed[i].load()) publish(i);
    }
    // Every outcome is in once all the permits are back.
    for (int k = 0; k < 256; ++k)
      if (!window.try_acquire_until(deadline)) hung.store(true);
    stream_done.store(true);
  });

  std::string consumer_error;
  std::thread consumer([&] {
    bool blocked_once = false;
    std::size_t distinct = 0;
    while (Clock::now() < deadline) {
      if (stream_done.load() && distinct >= confirmed_count.load()) break;
      if (s.block_consumer && !blocked_once && f.received >= n / 2) {
        blocked_once = true;
        // A handler on the connection's handler thread blocks for three heartbeat intervals.
        std::promise<void> ran;
        sub.async_receive([&ran, heartbeat, &receptions, &f, &distinct](std::error_code ec, const Message& m) {
          std::this_thread::sleep_for(heartbeat * 3 + 200ms);
          if (!ec) {
            const std::size_t i = std::stoull(std::string(m.payload.view().substr(0, 10)));
            if (i < receptions.size() && receptions[i]++ == 0) ++distinct;
            ++f.received;
          }
          ran.set_value();
        });
        if (ran.get_future().wait_until(deadline) != std::future_status::ready) {
          consumer_error = "the blocking handler never ran";
          break;
        }
        continue;
      }
      std::error_code ec;
      auto got = sub.receive_with_ack_for(200ms, ec);
      if (ec) {
        consumer_error = ec.message();
        break;
      }
      if (!got) continue;
      auto& [m, handle] = *got;
      const std::size_t i = std::stoull(std::string(m.payload.view().substr(0, 10)));
      if (i >= n) {
        consumer_error = "a message that was never published";
        break;
      }
      ++f.received;
      if (receptions[i]++ == 0) ++distinct;
      if (m.metadata.get(kincir::rabbitmq::kPossibleDuplicateHeader)) ++f.marked_duplicates;
      if (handle.delivery_count() > 1) ++f.redelivered;
      std::error_code aec;
      sub.ack(handle, aec);
      if (aec == kincir::rabbitmq::errc::stale_delivery) ++f.stale_acks;
    }
    f.distinct = distinct;
  });

  FaultContext ctx;
  ctx.proxy = proxy.get();
  ctx.publisher_name = pub_cfg.connection.connection_name;
  ctx.consumer_name = con_cfg.connection.connection_name;
  ctx.heartbeat = heartbeat;
  ctx.stop = &stream_done;
  ctx.publisher_blocked = [&pub] { return pub.blocked(); };
  ctx.start = start;
  f.faults = s.fault ? s.fault(ctx) : 0;

  publisher.join();
  consumer.join();
  const auto wall = Clock::now() - start;
  stop_monitor.store(true);
  monitor.join();

  // Late outcomes would be double ones: give them a moment to show up.
  std::this_thread::sleep_for(300ms);
  std::size_t missing_outcomes = 0;
  for (std::size_t i = 0; i < n; ++i) {
    f.attempts += attempts[i].load();
    if (outcomes[i].load() != attempts[i].load()) ++missing_outcomes;
  }
  f.confirmed = confirmed_count.load();
  f.republished = pub.republished();
  std::size_t lost = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (confirmed[i].load() && receptions[i] == 0) ++lost;
  std::vector<double> times;
  {
    const std::lock_guard lock(downtime_mutex);
    for (const auto d : downtimes) times.push_back(ms(d));
  }
  std::sort(times.begin(), times.end());
  const double p50 = times.empty() ? 0.0 : times[times.size() / 2];
  const double max = times.empty() ? 0.0 : times.back();
  const double rss_growth = static_cast<double>(rss_peak.load() - rss0) / (1024.0 * 1024.0);
  const auto pub_stats = pub_conn->recovery_stats();
  const auto con_stats = con_conn->recovery_stats();

  std::printf(
      "fault %-8s messages %zu confirmed %zu publishes %zu | faults %d | received %zu distinct %zu duplicates %zu "
      "(marked %zu, redelivered %zu, republished %llu, stale acks %zu) | recoveries pub %llu con %llu, recovery "
      "p50 %.0f ms max %.0f ms | blocked %llu ms | lost %zu | rss +%.1f MiB | %.1f s\n",
      s.name.c_str(), f.messages, f.confirmed, f.attempts, f.faults, f.received, f.distinct, f.received - f.distinct,
      f.marked_duplicates, f.redelivered, static_cast<unsigned long long>(f.republished), f.stale_acks,
      static_cast<unsigned long long>(pub_stats.recovered), static_cast<unsigned long long>(con_stats.recovered), p50,
      max, static_cast<unsigned long long>(blocked_ms.load()), lost, rss_growth,
      std::chrono::duration<double>(wall).count());
  for (const auto& [what, count] : failed_outcomes) std::printf("    failed outcome x%zu: %s\n", count, what.c_str());
  std::fflush(stdout);

  INFO("scenario " << s.name << ", consumer error: " << consumer_error);
  CHECK_FALSE(hung.load());
  CHECK(consumer_error.empty());
  CHECK(f.confirmed == n);             // every message was eventually confirmed
  CHECK(lost == 0);                    // and every confirmed message arrived
  CHECK(double_outcomes.load() == 0);  // never two outcomes for one publish
  CHECK(missing_outcomes == 0);        // never none
  CHECK(rss_growth < 512.0);           // bounded memory
  if (s.expect_recovery) {
    CHECK(f.faults > 0);
    CHECK(pub_stats.recovered + con_stats.recovered >= 1);
  } else {
    CHECK(pub_stats.recovering == 0);
    CHECK(con_stats.recovering == 0);
  }
  CHECK(pub_stats.failed == 0);
  CHECK(con_stats.failed == 0);
  if (s.name == "alarm") CHECK(saw_blocked.load());
}

}  // namespace

TEST_CASE("fault: the proxy cuts every connection every 300 ms", "[fault][cut]") {
  Scenario s{"cut", true, false, true, [](FaultContext& c) {
               c.proxy->set_throttle(std::size_t{4} << 20);
               int faults = 0;
               for (auto t = 1000ms; c.at(t); t += 300ms) {
                 c.proxy->cut_all();
                 ++faults;
               }
               return faults;
             }};
  run(s);
}

TEST_CASE("fault: rabbitmqctl close_connection on the publisher and the consumer", "[fault][close]") {
  Scenario s{"close", false, false, true, [](FaultContext& c) {
               int faults = 0;
               for (auto t = 1000ms; c.at(t) && faults < 6; t += 1500ms) {
                 faults += close_connections_named(c.publisher_name, "kincir fault test");
                 faults += close_connections_named(c.consumer_name, "kincir fault test");
               }
               return faults;
             }};
  run(s);
}

TEST_CASE("fault: rabbitmqctl stop_app and start_app mid-stream", "[fault][restart]") {
  Scenario s{"restart", false, false, true, [](FaultContext& c) {
               if (!c.at(1500ms)) return 0;
               ctl("stop_app");
               std::this_thread::sleep_for(1s);
               ctl("start_app");
               return 1;
             }};
  run(s);
}

TEST_CASE("fault: the broker is killed with SIGKILL and started again", "[fault][kill]") {
  Scenario s{"kill", false, false, true, [](FaultContext& c) {
               if (!c.at(1500ms)) return 0;
               node_sh("kill");
               std::this_thread::sleep_for(500ms);
               const std::string out = node_sh("restart");
               INFO(out);
               REQUIRE(out.find("accepts AMQP") != std::string::npos);
               return 1;
             }};
  run(s);
}

TEST_CASE("fault: a memory alarm blocks the publisher, then clears", "[fault][alarm]") {
  Scenario s{"alarm", false, false, false, [](FaultContext& c) {
               if (!c.at(1500ms)) return 0;
               const std::string raised = ctl("set_vm_memory_high_watermark 0.0000001");
               // The broker blocks the connection at its next publish: hold the alarm until it
               // did, then two more seconds (at most 15 s in all).
               const auto until = Clock::now() + 15s;
               while (!c.publisher_blocked() && Clock::now() < until) std::this_thread::sleep_for(20ms);
               std::this_thread::sleep_for(2s);
               const std::string cleared = ctl("set_vm_memory_high_watermark 0.4");
               INFO(raised << cleared);
               CHECK(cleared.find("0.4") != std::string::npos);
               return 1;
             }};
  run(s);
}

TEST_CASE("fault: the proxy stalls the connections for three heartbeat intervals", "[fault][stall]") {
  Scenario s{"stall", true, false, true, [](FaultContext& c) {
               c.proxy->set_delay(2ms);
               if (!c.at(1500ms)) return 0;
               c.proxy->stall(c.heartbeat * 3);
               return 1;
             }};
  run(s);
}

TEST_CASE("fault: a consumer handler blocks for three heartbeat intervals", "[fault][block]") {
  Scenario s{"block", false, true, false, {}};
  run(s);
}
