// kincir-bench's workloads. Each function measures one repetition of one workload on a fresh
// broker; building the input messages is never timed (except in the message-size workloads,
// whose point is the cost of a message of that size from construction to receipt).
#include "workloads.hpp"

#include "guide.hpp"

#include <benchmark/benchmark.h>
#include <kincir/batch.hpp>
#include <kincir/kincir.hpp>
#include <kincir/metrics.hpp>
#include <kincir/router.hpp>

#include <unistd.h>  // readlink

#include <algorithm>    // std::sort
#include <atomic>       // peak heap, group counters, latency hand-off
#include <chrono>       // timing
#include <cmath>        // std::ceil
#include <cstdint>      // std::int64_t
#include <cstdio>       // popen: runs of a fresh process
#include <cstring>      // std::memcpy
#include <limits>       // the fastest of a few runs
#include <optional>     // try_receive results
#include <string>       // metadata, names
#include <thread>       // publishers and subscribers
#include <type_traits>  // std::is_same_v
#include <utility>      // std::move
#include <vector>       // batches, samples

namespace kincir_bench {
namespace {

using kincir::Message;
using kincir::memory::BrokerConfig;
using kincir::memory::InMemoryAckSubscriber;
using kincir::memory::InMemoryBroker;
using kincir::memory::InMemoryPublisher;
using kincir::memory::InMemorySubscriber;
using namespace std::chrono_literals;

// libstdc++ takes non-atomic shortcuts (reference counts) until a thread has been started;
// measure what a multi-threaded program gets.
const bool kThreadsStarted = [] {
  std::thread([] {}).join();
  return true;
}();

constexpr const char* kTopic = "benchmark";

/// The guide's message: a zeroed payload and an "id" metadata entry (the payload is a
/// std::string rather than the guide's Vec<u8>: both are adopted without a copy).
std::vector<Message> make_messages(std::size_t count, std::size_t size) {
  std::vector<Message> out;
  out.reserve(count);
  for (std::size_t i = 0; i < count; ++i)
    out.push_back(Message(std::string(size, '\0')).with_metadata("id", std::to_string(i)));
  return out;
}

/// The same messages cut into batches of `batch`.
std::vector<std::vector<Message>> make_chunks(std::size_t count, std::size_t size, std::size_t batch) {
  std::vector<std::vector<Message>> chunks;
  std::vector<Message> all = make_messages(count, size);
  chunks.reserve((count + batch - 1) / batch);
  for (std::size_t i = 0; i < count; i += batch) {
    const std::size_t n = std::min(batch, count - i);
    std::vector<Message> chunk;
    chunk.reserve(n);
    for (std::size_t j = 0; j < n; ++j) chunk.push_back(std::move(all[i + j]));
    chunks.push_back(std::move(chunk));
  }
  return chunks;
}

void set_counter(benchmark::State& state, const char* name, double value) { state.counters[name] = value; }

void set_counts(benchmark::State& state, double messages, double deliveries) {
  set_counter(state, kMessages, messages);
  set_counter(state, kDeliveries, deliveries);
}

/// Optional instrumentation of a workload's publishers and subscribers.
struct Metrics {
  kincir::MetricsCollector* collector = nullptr;
  std::uint32_t time_every = 1;
};

/// Calls `fn(x)` or `fn(instrumented(x))`.
template <class T, class Fn>
void with_metrics(T& x, const Metrics& metrics, Fn&& fn) {
  if (metrics.collector == nullptr) {
    fn(x);
  } else {
    auto wrapped = kincir::instrumented(x, *metrics.collector, {.time_every = metrics.time_every});
    fn(wrapped);
  }
}

// --- the guide's simple throughput test ------------------------------------------------------

struct SimpleResult {
  double publish_s = 0;
  double receive_s = 0;
  double peak_bytes = 0;  ///< beyond the input batch
};

SimpleResult simple_test(const Metrics& metrics) {
  InMemoryBroker broker;
  InMemoryPublisher publisher(broker);
  InMemorySubscriber subscriber(broker);
  subscriber.subscribe(kTopic);
  std::vector<Message> messages = make_messages(kGuideCount, kGuideSize);

  SimpleResult r;
  HeapProbe probe(false);
  with_metrics(publisher, metrics, [&](auto& p) {
    const auto start = clock_type::now();
    p.publish(kTopic, std::move(messages));
    r.publish_s = seconds_since(start);
  });
  probe.sample();  // the backlog is largest now
  r.peak_bytes = probe.finish();
  with_metrics(subscriber, metrics, [&](auto& s) {
    const auto start = clock_type::now();
    for (std::size_t i = 0; i < kGuideCount; ++i) benchmark::DoNotOptimize(s.receive());
    r.receive_s = seconds_since(start);
  });
  return r;
}

// --- the guide's workloads next to ZeroMQ and the mutex queues ---------------------------------

/// Which part of a guide run a row times.
enum class Part : std::uint8_t { publish, receive, whole };

double part_seconds(const GuideResult& r, Part part) noexcept {
  switch (part) {
    case Part::publish: return r.publish_s;
    case Part::receive: return r.receive_s;
    case Part::whole: return r.seconds;
  }
  return 0;
}

/// The path of this program, to start it again.
std::string self_path() {
  std::string path(4096, '\0');
  const ssize_t n = readlink("/proc/self/exe", path.data(), path.size() - 1);
  check(n > 0, "cannot find /proc/self/exe");
  path.resize(static_cast<std::size_t>(n));
  return path;
}

/// Runs `workload` once in a fresh process (`kincir-bench --child WORKLOAD IMPL`), as a user runs
/// the guide's program: nothing allocated, faulted in or cached by an earlier run.
GuideResult run_in_fresh_process(const std::string& workload, Impl impl) {
  const std::string command = "'" + self_path() + "' --child " + workload + " " + impl_name(impl);
  std::FILE* child = popen(command.c_str(), "r");
  check(child != nullptr, "cannot start a child process");
  GuideResult r;
  const int fields = std::fscanf(child, "%lf %lf %lf %lf", &r.publish_s, &r.receive_s, &r.seconds, &r.peak_bytes);
  const int status = pclose(child);
  check(fields == 4 && status == 0, "a child run failed");
  return r;
}

/// One repetition of a guide row: kincir and every peer built in, each once, in an order rotated
/// from one repetition to the next (so no implementation always runs first on a machine that
/// warms up or slows down). Sets kincir's time as the iteration time and, for each peer P, the
/// counters `P_s` (its time) and `P_peak`.
template <class Run>
void guide_repetition(benchmark::State& state, std::size_t rep, bool peers, Part part, Run&& run) {
  std::vector<Impl> order;
  for (const Impl impl : kImpls)
    if (impl_available(impl) && (peers || impl == Impl::kincir)) order.push_back(impl);
  std::rotate(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(rep % order.size()), order.end());
  for (const Impl impl : order) {
    const GuideResult r = run(impl);
    const double seconds = part_seconds(r, part);
    if (impl == Impl::kincir) {
      state.SetIterationTime(seconds);
      set_counter(state, kPeakBytes, r.peak_bytes);
    } else {
      set_counter(state, (std::string(impl_name(impl)) + kPeerSecondsSuffix).c_str(), seconds);
      set_counter(state, (std::string(impl_name(impl)) + kPeerPeakSuffix).c_str(), r.peak_bytes);
    }
  }
}

void guide_simple(benchmark::State& state, Part part, bool fresh_process) {
  const std::size_t rep = on_repetition_start();
  for (auto _ : state) {
    guide_repetition(state, rep, true, part, [fresh_process](Impl impl) {
      return fresh_process ? run_in_fresh_process("simple", impl) : simple_run(impl);
    });
  }
  set_counts(state, kGuideCount, kGuideCount);
}

/// The simple test's receive side through `poll`: the caller's function sees each message in
/// place (batches of 256), nothing is handed out or destroyed by the caller.
void simple_poll(benchmark::State& state) {
  on_repetition_start();
  for (auto _ : state) {
    InMemoryBroker broker;
    InMemoryPublisher publisher(broker);
    InMemorySubscriber subscriber(broker);
    subscriber.subscribe(kTopic);
    publisher.publish(kTopic, make_messages(kGuideCount, kGuideSize));
    std::size_t seen = 0;
    std::size_t bad = 0;
    const auto start = clock_type::now();
    while (seen < kGuideCount) {
      seen += subscriber.poll(256, [&bad](const Message& m) { bad += m.payload.size() != kGuideSize ? 1 : 0; });
    }
    state.SetIterationTime(seconds_since(start));
    check(bad == 0, "poll: wrong payload size");
  }
  set_counts(state, kGuideCount, kGuideCount);
}

void guide_concurrent(benchmark::State& state, bool fresh_process) {
  const std::size_t rep = on_repetition_start();
  for (auto _ : state) {
    guide_repetition(state, rep, true, Part::whole, [fresh_process](Impl impl) {
      return fresh_process ? run_in_fresh_process("concurrent", impl) : concurrent_run(impl, false);
    });
  }
  set_counts(state, 100'000, 500'000);
}

void guide_fanout(benchmark::State& state, int subscribers, bool peers) {
  const std::size_t rep = on_repetition_start();
  for (auto _ : state) {
    guide_repetition(state, rep, peers, Part::whole,
                     [subscribers](Impl impl) { return fanout_run(impl, subscribers); });
  }
  set_counts(state, kGuideCount, static_cast<double>(kGuideCount) * subscribers);
}

// --- the guide's concurrent test --------------------------------------------------------------

struct ConcurrentShape {
  int publishers = 10;
  int per_publisher = 10'000;
  int subscribers = 5;
};

struct TimedResult {
  double seconds = 0;
  double peak_bytes = 0;
};

TimedResult concurrent_test(const ConcurrentShape& shape, const Metrics& metrics) {
  const int total = shape.publishers * shape.per_publisher;
  InMemoryBroker broker;
  std::vector<InMemorySubscriber> subscribers;
  subscribers.reserve(static_cast<std::size_t>(shape.subscribers));
  for (int s = 0; s < shape.subscribers; ++s) {
    subscribers.emplace_back(broker);
    subscribers.back().subscribe("high-throughput");
  }
  // The guide's payloads ("Publisher p - Message i"), built before the clock starts.
  std::vector<std::vector<Message>> payloads(static_cast<std::size_t>(shape.publishers));
  for (int p = 0; p < shape.publishers; ++p) {
    auto& mine = payloads[static_cast<std::size_t>(p)];
    mine.reserve(static_cast<std::size_t>(shape.per_publisher));
    for (int i = 0; i < shape.per_publisher; ++i)
      mine.emplace_back("Publisher " + std::to_string(p) + " - Message " + std::to_string(i));
  }

  HeapProbe probe(true);
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(shape.publishers) + static_cast<std::size_t>(shape.subscribers));
  const auto start = clock_type::now();
  for (auto& subscriber : subscribers) {
    threads.emplace_back([&subscriber, &metrics, total] {
      with_metrics(subscriber, metrics, [total](auto& s) {
        for (int i = 0; i < total; ++i) benchmark::DoNotOptimize(s.receive());
      });
    });
  }
  for (auto& mine : payloads) {
    threads.emplace_back([&broker, &mine, &metrics] {
      InMemoryPublisher publisher(broker);
      with_metrics(publisher, metrics, [&mine](auto& p) {
        for (auto& m : mine) p.publish("high-throughput", std::move(m));
      });
    });
  }
  for (auto& t : threads) t.join();
  const double seconds = seconds_since(start);
  return {seconds, probe.finish()};
}

// --- one publisher thread, subscriber threads: fan-out, groups, batch sizes --------------------

enum class Feed : std::uint8_t {
  chunks,            ///< `publish(topic, batch)` of prebuilt batches (a batch of 1: single publish)
  batch_publisher,   ///< `BatchPublisher::add` of every message, then `flush`
  build_and_publish  ///< the publisher builds each message (the size workloads), batches of 64
};

struct PipelineShape {
  std::size_t count = kGuideCount;
  std::size_t size = kGuideSize;
  std::size_t batch = 64;
  int subscribers = 1;
  bool group = false;  ///< subscribers compete in one consumer group instead of each seeing all
  Feed feed = Feed::chunks;
  BrokerConfig config;
};

/// Reads the payload so a receive is not free of the message's memory traffic.
std::uint64_t touch(const Message& m) noexcept {
  return m.payload.empty() ? 0 : m.payload[0] + m.payload[m.payload.size() - 1] + m.payload.size();
}

TimedResult pipeline_test(const PipelineShape& shape) {
  InMemoryBroker broker(shape.config);
  std::vector<InMemorySubscriber> subscribers;
  subscribers.reserve(static_cast<std::size_t>(shape.subscribers));
  for (int s = 0; s < shape.subscribers; ++s) {
    subscribers.emplace_back(broker);
    if (shape.group) {
      subscribers.back().subscribe(kTopic, "workers");
    } else {
      subscribers.back().subscribe(kTopic);
    }
  }
  std::vector<std::vector<Message>> chunks;
  std::vector<Message> singles;
  if (shape.feed == Feed::chunks) chunks = make_chunks(shape.count, shape.size, shape.batch);
  if (shape.feed == Feed::batch_publisher) singles = make_messages(shape.count, shape.size);

  std::atomic<std::size_t> taken{0};  // group mode: messages taken by all members together
  clock_type::time_point group_end{};

  HeapProbe probe(true);
  std::vector<std::thread> threads;
  threads.reserve(subscribers.size() + 1);
  const auto start = clock_type::now();
  for (auto& subscriber : subscribers) {
    if (!shape.group) {
      threads.emplace_back([&subscriber, count = shape.count] {
        std::uint64_t sum = 0;
        for (std::size_t i = 0; i < count; ++i) sum += touch(subscriber.receive());
        benchmark::DoNotOptimize(sum);
      });
    } else {
      threads.emplace_back([&subscriber, &taken, &group_end, count = shape.count] {
        std::uint64_t sum = 0;
        // relaxed: a plain count; join() orders group_end for the reader.
        while (taken.load(std::memory_order_relaxed) < count) {
          std::optional<Message> m = subscriber.receive_for(1ms);
          if (!m) continue;
          sum += touch(*m);
          if (taken.fetch_add(1, std::memory_order_relaxed) + 1 == count) group_end = clock_type::now();
        }
        benchmark::DoNotOptimize(sum);
      });
    }
  }
  threads.emplace_back([&] {
    InMemoryPublisher publisher(broker);
    switch (shape.feed) {
      case Feed::chunks:
        for (auto& chunk : chunks) {
          if (chunk.size() == 1) {
            publisher.publish(kTopic, std::move(chunk.front()));
          } else {
            publisher.publish(kTopic, std::move(chunk));
          }
        }
        break;
      case Feed::batch_publisher: {
        kincir::BatchPublisher<InMemoryPublisher&> batcher(publisher, shape.batch, 100ms);
        for (auto& m : singles) batcher.add(kTopic, std::move(m));
        batcher.flush();
        break;
      }
      case Feed::build_and_publish:
        for (std::size_t i = 0; i < shape.count; i += 64) {
          std::vector<Message> batch;
          const std::size_t n = std::min<std::size_t>(64, shape.count - i);
          batch.reserve(n);
          for (std::size_t j = 0; j < n; ++j) batch.emplace_back(std::string(shape.size, static_cast<char>(i + j)));
          publisher.publish(kTopic, std::move(batch));
        }
        break;
    }
  });
  for (auto& t : threads) t.join();
  const auto end = shape.group ? group_end : clock_type::now();
  return {std::chrono::duration<double>(end - start).count(), probe.finish()};
}

void pipeline(benchmark::State& state, const PipelineShape& shape) {
  on_repetition_start();
  for (auto _ : state) {
    const TimedResult r = pipeline_test(shape);
    state.SetIterationTime(r.seconds);
    set_counter(state, kPeakBytes, r.peak_bytes);
  }
  const auto messages = static_cast<double>(shape.count);
  set_counts(state, messages, shape.group ? messages : messages * shape.subscribers);
  if (shape.feed == Feed::build_and_publish)
    set_counter(state, kPayloadBytes, messages * static_cast<double>(shape.size));
}

// --- publish -> receive latency ----------------------------------------------------------------

/// One message in flight at a time; the publisher stamps it just before `publish`, the subscriber
/// just after its receive returns. Spinning: the subscriber polls `try_receive`, the next message
/// goes out as soon as the last arrived. Sleeping: the subscriber blocks in `receive()` and the
/// publisher pauses `gap` first, so the subscriber is parked (past its spin and yield phases)
/// when the message arrives and the wake-up is part of the latency.
void latency(benchmark::State& state, std::size_t count, bool spinning, std::chrono::microseconds gap) {
  on_repetition_start();
  InMemoryBroker broker;
  InMemoryPublisher publisher(broker);
  InMemorySubscriber subscriber(broker);
  subscriber.subscribe("latency");
  std::vector<Message> messages;
  messages.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    std::string index(sizeof(std::size_t), '\0');
    std::memcpy(index.data(), &i, sizeof i);
    messages.emplace_back(std::move(index));
  }
  std::vector<clock_type::time_point> sent(count);
  std::vector<std::int64_t> latency_ns(count);
  std::atomic<std::size_t> received{0};

  for (auto _ : state) {
    const auto start = clock_type::now();
    std::thread receiver([&] {
      for (std::size_t n = 0; n < count; ++n) {
        Message m;
        if (spinning) {
          std::optional<Message> got;
          while (!(got = subscriber.try_receive())) {
          }
          m = std::move(*got);
        } else {
          m = subscriber.receive();
        }
        const auto now = clock_type::now();
        std::size_t i = 0;
        std::memcpy(&i, m.payload.data(), sizeof i);
        latency_ns[i] = std::chrono::duration_cast<std::chrono::nanoseconds>(now - sent[i]).count();
        // release: the publisher's next stamp comes after this receipt.
        received.store(n + 1, std::memory_order_release);
      }
    });
    for (std::size_t i = 0; i < count; ++i) {
      // acquire: pairs with the receiver's release; one message in flight at a time.
      while (received.load(std::memory_order_acquire) < i) {
        if (!spinning) std::this_thread::yield();
      }
      if (!spinning) std::this_thread::sleep_for(gap);
      sent[i] = clock_type::now();
      publisher.publish("latency", std::move(messages[i]));
    }
    receiver.join();
    state.SetIterationTime(seconds_since(start));
  }
  std::sort(latency_ns.begin(), latency_ns.end());
  const auto at = [&](double q) {
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(count)));
    return static_cast<double>(latency_ns[std::min(count, std::max<std::size_t>(rank, 1)) - 1]);
  };
  set_counts(state, static_cast<double>(count), static_cast<double>(count));
  set_counter(state, kP50, at(0.50));
  set_counter(state, kP99, at(0.99));
  set_counter(state, kP999, at(0.999));
  set_counter(state, kMax, static_cast<double>(latency_ns.back()));
}

// --- metrics overhead ----------------------------------------------------------------------------

/// Runs the workload plain and instrumented in the same repetition (alternating which goes first)
/// and reports the instrumented time, with the overhead against the plain run.
void metrics_simple(benchmark::State& state, std::uint32_t time_every) {
  const std::size_t rep = on_repetition_start();
  for (auto _ : state) {
    kincir::MetricsCollector collector;
    SimpleResult plain;
    SimpleResult timed;
    if (rep % 2 == 0) plain = simple_test({});
    timed = simple_test({&collector, time_every});
    if (rep % 2 != 0) plain = simple_test({});
    const double plain_s = plain.publish_s + plain.receive_s;
    const double timed_s = timed.publish_s + timed.receive_s;
    state.SetIterationTime(timed_s);
    set_counter(state, kOverhead, timed_s / plain_s - 1);
    benchmark::DoNotOptimize(collector.snapshot());
  }
  set_counts(state, kGuideCount, kGuideCount);
}

void metrics_concurrent(benchmark::State& state, std::uint32_t time_every) {
  const std::size_t rep = on_repetition_start();
  const ConcurrentShape shape;
  for (auto _ : state) {
    kincir::MetricsCollector collector;
    TimedResult plain;
    TimedResult timed;
    if (rep % 2 == 0) plain = concurrent_test(shape, {});
    timed = concurrent_test(shape, {&collector, time_every});
    if (rep % 2 != 0) plain = concurrent_test(shape, {});
    state.SetIterationTime(timed.seconds);
    set_counter(state, kOverhead, timed.seconds / plain.seconds - 1);
    benchmark::DoNotOptimize(collector.snapshot());
  }
  const double messages = static_cast<double>(shape.publishers) * shape.per_publisher;
  set_counts(state, messages, messages * shape.subscribers);
}

// --- the router against a hand-written loop ----------------------------------------------------

/// What runs around the handler: nothing, or the usual set (CorrelationId + Retry + Recoverer,
/// the pipeline example's less the poison queue, which costs nothing until a message fails).
enum class RouterSet : std::uint8_t { bare, standard };

constexpr const char* kRouterIn = "router.in";
constexpr const char* kRouterOut = "router.out";

/// The handler both loops run: one output per input (a copy sharing the payload).
Message route_one(const Message& m) { return Message(m); }

/// Ends a run from the consumer's thread when it takes up the last message; the benchmark thread
/// sleeps until then (it must not spin: the machine may have two cores).
class Finish {
 public:
  explicit Finish(std::size_t target) : target_(target) {}
  void one() {
    if (++seen_ != target_) return;  // one consumer thread: a plain count
    end_ = clock_type::now();
    done_.store(true, std::memory_order_release);
    done_.notify_one();
  }
  clock_type::time_point wait() {
    done_.wait(false, std::memory_order_acquire);
    return end_;
  }

 private:
  std::size_t target_;
  std::size_t seen_ = 0;
  clock_type::time_point end_{};
  std::atomic<bool> done_{false};
};

/// Takes what the loop published to kRouterOut; the count.
std::size_t drain(InMemorySubscriber& sink) {
  std::size_t n = 0;
  while (std::size_t got = sink.poll(4096, [](const Message&) {})) n += got;
  return n;
}

/// The hand-written consumer: receive_with_ack_for (the router's poll interval), the handler,
/// publish its output, ack (nack on failure). With the standard set it does by hand what the
/// middleware do: a correlation id for the input (a new UUID when it has none), copied to the
/// output, and an exception caught.
double hand_loop_run(RouterSet set, std::size_t count) {
  InMemoryBroker broker;
  InMemoryAckSubscriber in(broker);
  in.subscribe(kRouterIn);
  InMemorySubscriber sink(broker);
  sink.subscribe(kRouterOut);
  std::vector<Message> messages = make_messages(count, kGuideSize);
  Finish finish(count);
  std::atomic<bool> stop{false};
  std::thread consumer([&] {
    InMemoryPublisher out(broker);
    const kincir::RouterConfig defaults;
    while (!stop.load(std::memory_order_relaxed)) {
      std::error_code ec;
      auto d = in.receive_with_ack_for(defaults.poll_interval, ec);
      if (!d) continue;
      Message& input = d->first;
      std::optional<Message> output;
      if (set == RouterSet::standard) {
        namespace mw = kincir::middleware;
        if (!mw::correlation_id(input)) mw::set_correlation_id(input, kincir::Uuid::new_v4().to_string());
        try {
          output = route_one(input);
          mw::set_correlation_id(*output, *mw::correlation_id(input));
        } catch (...) {
          output.reset();
        }
      } else {
        output = route_one(input);
      }
      finish.one();
      if (output) out.publish(kRouterOut, std::move(*output), ec);
      if (output && !ec) {
        in.ack(d->second, ec);
      } else {
        in.nack(d->second, true, ec);
      }
    }
  });
  InMemoryPublisher publisher(broker);
  const auto start = clock_type::now();
  publisher.publish(kRouterIn, std::move(messages));
  const auto end = finish.wait();
  stop.store(true, std::memory_order_relaxed);
  consumer.join();
  check(drain(sink) == count, "router/hand loop: outputs missing");
  return std::chrono::duration<double>(end - start).count();
}

/// The same through a Router: one handler (concurrency 1, default configuration) publishing its
/// output to kRouterOut, with the middleware of `set`.
double router_run(RouterSet set, std::size_t count) {
  InMemoryBroker broker;
  InMemoryAckSubscriber in(broker);
  InMemorySubscriber sink(broker);
  sink.subscribe(kRouterOut);
  InMemoryPublisher out(broker);
  std::vector<Message> messages = make_messages(count, kGuideSize);
  Finish finish(count);
  kincir::Router router;
  if (set == RouterSet::standard) {
    router.add_middleware(kincir::middleware::CorrelationId())
        .add_middleware(kincir::middleware::Retry())
        .add_middleware(kincir::middleware::Recoverer());
  }
  auto& handler = router.add_handler("bench", kRouterIn, in, kRouterOut, out, [&finish](const Message& m) {
    Message output = route_one(m);
    finish.one();
    return output;
  });
  std::thread runner([&router] { router.run(); });
  router.running().get();  // subscribed: nothing published now is missed
  InMemoryPublisher publisher(broker);
  const auto start = clock_type::now();
  publisher.publish(kRouterIn, std::move(messages));
  const auto end = finish.wait();
  router.close();
  runner.join();
  check(handler.stats().acked == count, "router: not every input acked");
  check(drain(sink) == count, "router: outputs missing");
  return std::chrono::duration<double>(end - start).count();
}

/// The router and the hand loop in the same repetition: `kRounds` runs of each, alternating
/// (which goes first alternates too), each over `kCount` fresh messages; the fastest run of each
/// counts (the machine's other load only ever slows a run down). The router's fastest time is
/// the row's; `overhead` is router time / hand-loop time - 1, so the router's rate is the hand
/// loop's divided by 1 + overhead.
void router_vs_hand(benchmark::State& state, RouterSet set) {
  const std::size_t rep = on_repetition_start();
  constexpr std::size_t kCount = 25'000;
  constexpr int kRounds = 4;
  for (auto _ : state) {
    double hand_s = std::numeric_limits<double>::infinity();
    double router_s = hand_s;
    for (int round = 0; round < kRounds; ++round) {
      const bool hand_first = (rep + static_cast<std::size_t>(round)) % 2 == 0;
      if (hand_first) hand_s = std::min(hand_s, hand_loop_run(set, kCount));
      router_s = std::min(router_s, router_run(set, kCount));
      if (!hand_first) hand_s = std::min(hand_s, hand_loop_run(set, kCount));
    }
    state.SetIterationTime(router_s);
    set_counter(state, kOverhead, router_s / hand_s - 1);
  }
  set_counts(state, kCount, kCount);
}

std::string size_name(std::size_t bytes) {
  if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes / 1024) + "KiB";
  return std::to_string(bytes) + "B";
}

}  // namespace

std::vector<Workload> make_workloads() {
  std::vector<Workload> w;
  const auto add = [&w](std::string name, std::string group, std::string title, Unit unit, std::size_t size, Tier tier,
                        std::function<void(benchmark::State&)> run) {
    w.push_back(Workload{std::move(name), std::move(group), std::move(title), unit, size, tier, std::move(run)});
  };

  add("simple/publish", "simple", "guide: 100 000 x 1 KiB + id metadata, one publish of the whole batch (warm)",
      Unit::messages, kGuideSize, Tier::quick, [](benchmark::State& s) { guide_simple(s, Part::publish, false); });
  add("simple/receive", "simple", "guide: then 100 000 receive(), each message destroyed (warm)", Unit::messages,
      kGuideSize, Tier::quick, [](benchmark::State& s) { guide_simple(s, Part::receive, false); });
  add("simple/poll", "simple", "the same receives through poll(256, fn): messages seen in place (warm)", Unit::messages,
      kGuideSize, Tier::quick, simple_poll);
  add("cold/simple/publish", "cold", "the same, once in a fresh process: the publish", Unit::messages, kGuideSize,
      Tier::quick, [](benchmark::State& s) { guide_simple(s, Part::publish, true); });
  add("cold/simple/receive", "cold", "the same, once in a fresh process: the receives", Unit::messages, kGuideSize,
      Tier::quick, [](benchmark::State& s) { guide_simple(s, Part::receive, true); });
  add("concurrent", "concurrent",
      "guide: 10 publishers x 10 000 single publishes (prebuilt), 5 subscribers get all 100 000 (warm)",
      Unit::deliveries, 0, Tier::quick, [](benchmark::State& s) { guide_concurrent(s, false); });
  add("cold/concurrent", "cold", "guide: the same once in a fresh process, each message built in the publisher's loop",
      Unit::deliveries, 0, Tier::quick, [](benchmark::State& s) { guide_concurrent(s, true); });

  for (const int subscribers : {1, 4, 16, 64}) {
    add("fanout/1->" + std::to_string(subscribers), "fanout",
        "1 publisher (batches of 64) -> " + std::to_string(subscribers) + " subscribers, each gets all 100 000 x 1 KiB",
        Unit::deliveries, kGuideSize,
        subscribers == 4 ? Tier::quick : (subscribers == 64 ? Tier::full : Tier::standard),
        [subscribers](benchmark::State& s) { guide_fanout(s, subscribers, subscribers == 4); });
  }

  for (const int members : {2, 4, 8}) {
    for (const bool ordered : {true, false}) {
      PipelineShape shape;
      shape.subscribers = members;
      shape.group = true;
      shape.config.enable_message_ordering = ordered;
      add("group/" + std::to_string(members) + (ordered ? "-ordered" : "-unordered"), "group",
          "1 publisher -> consumer group of " + std::to_string(members) + " sharing 100 000 x 1 KiB" +
              (ordered ? " (ordering on)" : " (ordering off: batched takes)"),
          Unit::messages, kGuideSize, members == 4 ? Tier::standard : Tier::full,
          [shape](benchmark::State& s) { pipeline(s, shape); });
    }
  }

  for (const std::size_t size : {std::size_t{64}, std::size_t{256}, std::size_t{1024}, std::size_t{4096},
                                 std::size_t{16384}, std::size_t{65536}}) {
    PipelineShape shape;
    shape.size = size;
    shape.count = size <= 1024 ? kGuideCount : (size <= 16384 ? 50'000 : 10'000);
    shape.feed = Feed::build_and_publish;
    shape.config.max_queue_size = 4096;  // bounds the backlog of big messages
    const bool standard = size == 64 || size == 1024 || size == 65536;
    add("size/" + size_name(size), "size",
        "publisher builds " + size_name(size) + " messages (batches of 64), 1 subscriber reads each", Unit::messages,
        size, standard ? Tier::standard : Tier::full, [shape](benchmark::State& s) { pipeline(s, shape); });
  }

  for (const std::size_t batch :
       {std::size_t{1}, std::size_t{8}, std::size_t{64}, std::size_t{256}, std::size_t{1000}}) {
    PipelineShape shape;
    shape.batch = batch;
    const bool standard = batch == 1 || batch == 64 || batch == 1000;
    add("batch/" + std::to_string(batch), "batch",
        "1 publisher, publish() of " + std::to_string(batch) + " message" + (batch == 1 ? "" : "s") +
            " at a time -> 1 subscriber, 100 000 x 1 KiB",
        Unit::messages, kGuideSize, standard ? Tier::standard : Tier::full,
        [shape](benchmark::State& s) { pipeline(s, shape); });
  }

  for (const std::size_t batch : {std::size_t{64}, std::size_t{1000}}) {
    PipelineShape shape;
    shape.batch = batch;
    shape.feed = Feed::batch_publisher;
    add("batch-publisher/" + std::to_string(batch), "batch-publisher",
        "BatchPublisher(batch_size " + std::to_string(batch) + ").add() x 100 000 x 1 KiB -> 1 subscriber",
        Unit::messages, kGuideSize, batch == 64 ? Tier::standard : Tier::full,
        [shape](benchmark::State& s) { pipeline(s, shape); });
  }

  add("latency/spinning", "latency", "publish -> receive, one in flight, subscriber polls try_receive (20 000)",
      Unit::none, 8, Tier::quick, [](benchmark::State& s) { latency(s, 20'000, true, 0us); });
  add("latency/sleeping", "latency",
      "publish -> receive, one in flight every 200 us, subscriber blocked in receive() (2 000)", Unit::none, 8,
      Tier::quick, [](benchmark::State& s) { latency(s, 2'000, false, 200us); });

  add("metrics/simple", "metrics", "guide's simple test (publish + receive), instrumented, every call timed",
      Unit::messages, kGuideSize, Tier::standard, [](benchmark::State& s) { metrics_simple(s, 1); });
  add("metrics/simple-sampled", "metrics", "guide's simple test, instrumented, 1 call in 64 timed", Unit::messages,
      kGuideSize, Tier::standard, [](benchmark::State& s) { metrics_simple(s, 64); });
  add("metrics/concurrent", "metrics", "guide's concurrent test, instrumented, every call timed", Unit::deliveries, 0,
      Tier::quick, [](benchmark::State& s) { metrics_concurrent(s, 1); });
  add("metrics/concurrent-sampled", "metrics", "guide's concurrent test, instrumented, 1 call in 64 timed",
      Unit::deliveries, 0, Tier::standard, [](benchmark::State& s) { metrics_concurrent(s, 64); });

  add("router/bare", "router",
      "Router, one handler (one output per input, no middleware), 25 000 x 1 KiB, fastest of 4; overhead: vs a "
      "hand-written receive/handle/publish/ack loop in the same run",
      Unit::messages, kGuideSize, Tier::standard, [](benchmark::State& s) { router_vs_hand(s, RouterSet::bare); });
  add("router/standard", "router",
      "the same with CorrelationId + Retry + Recoverer; overhead: vs a hand loop doing their work by hand",
      Unit::messages, kGuideSize, Tier::quick, [](benchmark::State& s) { router_vs_hand(s, RouterSet::standard); });
  return w;
}

}  // namespace kincir_bench
