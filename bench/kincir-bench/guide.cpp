// kincir-bench: the guide's workloads as kincir, ZeroMQ and a mutex-queue broker run them. Each
// implementation does the same work: the same messages (payload + an "id" entry where the guide
// has one), built at the same point, every receipt counted and its payload size checked.
#include "guide.hpp"

#include <benchmark/benchmark.h>
#include <kincir/kincir.hpp>

#include <algorithm>           // std::min
#include <condition_variable>  // the mutex queue
#include <cstring>             // std::memset
#include <deque>               // the mutex queue
#include <memory>              // std::unique_ptr
#include <mutex>               // the mutex queue
#include <stdexcept>           // std::runtime_error
#include <string>              // payloads, metadata
#include <thread>              // publishers and subscribers
#include <utility>             // std::move
#include <vector>              // batches, threads

#if KINCIR_BENCH_HAVE_ZMQ
#include <zmq.hpp>
#endif

namespace kincir_bench {

void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(what);
}

const char* impl_name(Impl impl) noexcept {
  switch (impl) {
    case Impl::kincir: return "kincir";
    case Impl::zeromq: return "zeromq";
    case Impl::mutex: return "mutex";
  }
  return "?";
}

const char* impl_label(Impl impl) noexcept {
  switch (impl) {
    case Impl::kincir: return "kincir";
    case Impl::zeromq: return "ZeroMQ inproc PUB/SUB";
    case Impl::mutex: return "mutex+condvar queue per subscriber";
  }
  return "?";
}

bool impl_available(Impl impl) noexcept {
#if KINCIR_BENCH_HAVE_ZMQ
  (void)impl;
  return true;
#else
  return impl != Impl::zeromq;
#endif
}

namespace {

using kincir::Message;

constexpr const char* kTopic = "benchmark";
constexpr const char* kConcurrentTopic = "high-throughput";

std::string guide_payload(int publisher, int i) {
  return "Publisher " + std::to_string(publisher) + " - Message " + std::to_string(i);
}

// --- kincir -------------------------------------------------------------------------------------

namespace with_kincir {

using kincir::memory::InMemoryBroker;
using kincir::memory::InMemoryPublisher;
using kincir::memory::InMemorySubscriber;

GuideResult simple() {
  InMemoryBroker broker;
  InMemoryPublisher publisher(broker);
  InMemorySubscriber subscriber(broker);
  subscriber.subscribe(kTopic);
  std::vector<Message> messages;
  messages.reserve(kGuideCount);
  for (std::size_t i = 0; i < kGuideCount; ++i)
    messages.push_back(Message(std::vector<std::uint8_t>(kGuideSize, 0)).with_metadata("id", std::to_string(i)));

  GuideResult r;
  HeapProbe probe(false);
  auto start = clock_type::now();
  publisher.publish(kTopic, std::move(messages));
  r.publish_s = seconds_since(start);
  r.peak_bytes = probe.finish();  // the backlog is largest now
  std::size_t bad = 0;
  start = clock_type::now();
  for (std::size_t i = 0; i < kGuideCount; ++i) bad += subscriber.receive().payload.size() != kGuideSize ? 1 : 0;
  r.receive_s = seconds_since(start);
  check(bad == 0, "kincir simple: wrong payload size");
  return r;
}

GuideResult concurrent(bool build_in_loop, int publishers, int per_publisher, int subscribers) {
  const int total = publishers * per_publisher;
  InMemoryBroker broker;
  std::vector<InMemorySubscriber> subs;
  subs.reserve(static_cast<std::size_t>(subscribers));
  for (int s = 0; s < subscribers; ++s) {
    subs.emplace_back(broker);
    subs.back().subscribe(kConcurrentTopic);
  }
  std::vector<std::vector<Message>> prebuilt(static_cast<std::size_t>(publishers));
  if (!build_in_loop) {
    for (int p = 0; p < publishers; ++p) {
      auto& mine = prebuilt[static_cast<std::size_t>(p)];
      mine.reserve(static_cast<std::size_t>(per_publisher));
      for (int i = 0; i < per_publisher; ++i) mine.emplace_back(guide_payload(p, i));
    }
  }
  std::atomic<int> received{0};
  HeapProbe probe(true);
  std::vector<std::thread> threads;
  const auto start = clock_type::now();
  for (auto& subscriber : subs) {
    threads.emplace_back([&subscriber, &received, total] {
      int n = 0;
      for (int i = 0; i < total; ++i) n += subscriber.receive().payload.empty() ? 0 : 1;
      received.fetch_add(n, std::memory_order_relaxed);
    });
  }
  for (int p = 0; p < publishers; ++p) {
    threads.emplace_back([&broker, &prebuilt, p, per_publisher, build_in_loop] {
      InMemoryPublisher publisher(broker);
      if (build_in_loop) {
        for (int i = 0; i < per_publisher; ++i) publisher.publish(kConcurrentTopic, Message(guide_payload(p, i)));
      } else {
        for (auto& m : prebuilt[static_cast<std::size_t>(p)]) publisher.publish(kConcurrentTopic, std::move(m));
      }
    });
  }
  for (auto& t : threads) t.join();
  GuideResult r;
  r.seconds = seconds_since(start);
  r.peak_bytes = probe.finish();
  check(received.load() == total * subscribers, "kincir concurrent: messages missing");
  return r;
}

GuideResult fanout(int subscribers) {
  InMemoryBroker broker;
  std::vector<InMemorySubscriber> subs;
  subs.reserve(static_cast<std::size_t>(subscribers));
  for (int s = 0; s < subscribers; ++s) {
    subs.emplace_back(broker);
    subs.back().subscribe(kTopic);
  }
  std::vector<std::vector<Message>> chunks;
  for (std::size_t i = 0; i < kGuideCount; i += 64) {
    std::vector<Message> chunk;
    for (std::size_t j = i; j < std::min(kGuideCount, i + 64); ++j)
      chunk.push_back(Message(std::vector<std::uint8_t>(kGuideSize, 1)).with_metadata("id", std::to_string(j)));
    chunks.push_back(std::move(chunk));
  }
  std::atomic<std::size_t> bad{0};
  HeapProbe probe(true);
  std::vector<std::thread> threads;
  const auto start = clock_type::now();
  for (auto& subscriber : subs) {
    threads.emplace_back([&subscriber, &bad] {
      std::size_t wrong = 0;
      for (std::size_t i = 0; i < kGuideCount; ++i) {
        const Message m = subscriber.receive();
        wrong += m.payload.size() != kGuideSize || m.payload[kGuideSize - 1] != 1 ? 1 : 0;
      }
      bad.fetch_add(wrong, std::memory_order_relaxed);
    });
  }
  threads.emplace_back([&broker, &chunks] {
    InMemoryPublisher publisher(broker);
    for (auto& chunk : chunks) publisher.publish(kTopic, std::move(chunk));
  });
  for (auto& t : threads) t.join();
  GuideResult r;
  r.seconds = seconds_since(start);
  r.peak_bytes = probe.finish();
  check(bad.load() == 0, "kincir fan-out: wrong payload");
  return r;
}

}  // namespace with_kincir

// --- the naive baseline: a mutex + condition variable + deque per subscriber --------------------

namespace with_mutex {

/// What a per-subscriber-queue broker does: publishing locks every subscriber's queue in turn
/// and appends a copy of each message (the payload is shared, as kincir's is); receiving locks
/// its own queue and waits on its condition variable.
class MutexBroker {
 public:
  class Queue {
   public:
    void push(const std::vector<Message>& batch) {
      {
        const std::lock_guard lock(mutex_);
        for (const auto& m : batch) messages_.push_back(m);
      }
      ready_.notify_one();
    }
    void push_moved(std::vector<Message>& batch) {
      {
        const std::lock_guard lock(mutex_);
        for (auto& m : batch) messages_.push_back(std::move(m));
      }
      ready_.notify_one();
    }
    Message receive() {
      std::unique_lock lock(mutex_);
      ready_.wait(lock, [this] { return !messages_.empty(); });
      Message m = std::move(messages_.front());
      messages_.pop_front();
      return m;
    }

   private:
    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<Message> messages_;
  };

  Queue& subscribe() {
    const std::lock_guard lock(mutex_);
    queues_.push_back(std::make_unique<Queue>());
    return *queues_.back();
  }

  void publish(std::vector<Message>&& batch) {
    const std::lock_guard lock(mutex_);  // the subscriber list of the topic
    for (std::size_t q = 0; q < queues_.size(); ++q) {
      if (q + 1 == queues_.size())
        queues_[q]->push_moved(batch);
      else
        queues_[q]->push(batch);
    }
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<Queue>> queues_;
};

GuideResult simple() {
  MutexBroker broker;
  auto& queue = broker.subscribe();
  std::vector<Message> messages;
  messages.reserve(kGuideCount);
  for (std::size_t i = 0; i < kGuideCount; ++i)
    messages.push_back(Message(std::vector<std::uint8_t>(kGuideSize, 0)).with_metadata("id", std::to_string(i)));
  GuideResult r;
  HeapProbe probe(false);
  auto start = clock_type::now();
  broker.publish(std::move(messages));
  r.publish_s = seconds_since(start);
  r.peak_bytes = probe.finish();
  std::size_t bad = 0;
  start = clock_type::now();
  for (std::size_t i = 0; i < kGuideCount; ++i) bad += queue.receive().payload.size() != kGuideSize ? 1 : 0;
  r.receive_s = seconds_since(start);
  check(bad == 0, "mutex simple: wrong payload size");
  return r;
}

GuideResult concurrent(bool build_in_loop, int publishers, int per_publisher, int subscribers) {
  const int total = publishers * per_publisher;
  MutexBroker broker;
  std::vector<MutexBroker::Queue*> queues;
  for (int s = 0; s < subscribers; ++s) queues.push_back(&broker.subscribe());
  std::vector<std::vector<Message>> prebuilt(static_cast<std::size_t>(publishers));
  if (!build_in_loop) {
    for (int p = 0; p < publishers; ++p)
      for (int i = 0; i < per_publisher; ++i) prebuilt[static_cast<std::size_t>(p)].emplace_back(guide_payload(p, i));
  }
  std::atomic<int> received{0};
  HeapProbe probe(true);
  std::vector<std::thread> threads;
  const auto start = clock_type::now();
  for (auto* queue : queues) {
    threads.emplace_back([queue, &received, total] {
      int n = 0;
      for (int i = 0; i < total; ++i) n += queue->receive().payload.empty() ? 0 : 1;
      received.fetch_add(n, std::memory_order_relaxed);
    });
  }
  for (int p = 0; p < publishers; ++p) {
    threads.emplace_back([&broker, &prebuilt, p, per_publisher, build_in_loop] {
      for (int i = 0; i < per_publisher; ++i) {
        std::vector<Message> one;
        one.push_back(build_in_loop ? Message(guide_payload(p, i))
                                    : std::move(prebuilt[static_cast<std::size_t>(p)][static_cast<std::size_t>(i)]));
        broker.publish(std::move(one));
      }
    });
  }
  for (auto& t : threads) t.join();
  GuideResult r;
  r.seconds = seconds_since(start);
  r.peak_bytes = probe.finish();
  check(received.load() == total * subscribers, "mutex concurrent: messages missing");
  return r;
}

GuideResult fanout(int subscribers) {
  MutexBroker broker;
  std::vector<MutexBroker::Queue*> queues;
  for (int s = 0; s < subscribers; ++s) queues.push_back(&broker.subscribe());
  std::vector<std::vector<Message>> chunks;
  for (std::size_t i = 0; i < kGuideCount; i += 64) {
    std::vector<Message> chunk;
    for (std::size_t j = i; j < std::min(kGuideCount, i + 64); ++j)
      chunk.push_back(Message(std::vector<std::uint8_t>(kGuideSize, 1)).with_metadata("id", std::to_string(j)));
    chunks.push_back(std::move(chunk));
  }
  std::atomic<std::size_t> bad{0};
  HeapProbe probe(true);
  std::vector<std::thread> threads;
  const auto start = clock_type::now();
  for (auto* queue : queues) {
    threads.emplace_back([queue, &bad] {
      std::size_t wrong = 0;
      for (std::size_t i = 0; i < kGuideCount; ++i) {
        const Message m = queue->receive();
        wrong += m.payload.size() != kGuideSize || m.payload[kGuideSize - 1] != 1 ? 1 : 0;
      }
      bad.fetch_add(wrong, std::memory_order_relaxed);
    });
  }
  threads.emplace_back([&broker, &chunks] {
    for (auto& chunk : chunks) broker.publish(std::move(chunk));
  });
  for (auto& t : threads) t.join();
  GuideResult r;
  r.seconds = seconds_since(start);
  r.peak_bytes = probe.finish();
  check(bad.load() == 0, "mutex fan-out: wrong payload");
  return r;
}

}  // namespace with_mutex

// --- ZeroMQ inproc PUB/SUB ---------------------------------------------------------------------

#if KINCIR_BENCH_HAVE_ZMQ
namespace with_zeromq {

/// An XPUB socket with its high-water mark off (nothing is dropped), bound to `endpoint`. XPUB
/// rather than PUB only so that the set-up can wait until every subscription has arrived.
zmq::socket_t publisher_socket(zmq::context_t& context, const std::string& endpoint) {
  zmq::socket_t s(context, zmq::socket_type::xpub);
  s.set(zmq::sockopt::sndhwm, 0);
  s.set(zmq::sockopt::xpub_verbose, 1);
  s.bind(endpoint);
  return s;
}

zmq::socket_t subscriber_socket(zmq::context_t& context) {
  zmq::socket_t s(context, zmq::socket_type::sub);
  s.set(zmq::sockopt::rcvhwm, 0);
  return s;
}

/// Set-up, outside the clock: waits until `count` subscriptions reached `publisher`.
void await_subscriptions(zmq::socket_t& publisher, int count) {
  for (int i = 0; i < count; ++i) {
    zmq::message_t subscription;
    check(publisher.recv(subscription).has_value(), "zeromq: no subscription");
  }
}

/// The guide's message as the application holds it before handing it to ZeroMQ: the payload and
/// its "id"; sending copies each into a frame of its own (metadata frame, then payload), as
/// sending a buffer through cppzmq does. (Frames built before the clock and sent zero-copy make
/// ZeroMQ's publish faster and its receive no different: see docs/performance.md.)
struct AppMessage {
  std::string metadata;
  std::vector<std::uint8_t> payload;
};

AppMessage app_message(std::size_t i, std::uint8_t fill) {
  return {"id=" + std::to_string(i), std::vector<std::uint8_t>(kGuideSize, fill)};
}

void send(zmq::socket_t& socket, const AppMessage& m) {
  (void)socket.send(zmq::buffer(m.metadata), zmq::send_flags::sndmore);
  (void)socket.send(zmq::buffer(m.payload), zmq::send_flags::none);
}

GuideResult simple() {
  zmq::context_t context(1);
  zmq::socket_t pub = publisher_socket(context, "inproc://simple");
  zmq::socket_t sub = subscriber_socket(context);
  sub.connect("inproc://simple");
  sub.set(zmq::sockopt::subscribe, "");
  await_subscriptions(pub, 1);
  std::vector<AppMessage> messages;
  messages.reserve(kGuideCount);
  for (std::size_t i = 0; i < kGuideCount; ++i) messages.push_back(app_message(i, 0));

  GuideResult r;
  HeapProbe probe(false);
  auto start = clock_type::now();
  for (const auto& m : messages) send(pub, m);
  r.publish_s = seconds_since(start);
  r.peak_bytes = probe.finish();
  std::size_t bad = 0;
  start = clock_type::now();
  for (std::size_t i = 0; i < kGuideCount; ++i) {
    zmq::message_t metadata;
    zmq::message_t payload;
    (void)sub.recv(metadata);
    (void)sub.recv(payload);
    bad += payload.size() != kGuideSize ? 1 : 0;
  }
  r.receive_s = seconds_since(start);
  check(bad == 0, "zeromq simple: wrong payload size");
  return r;
}

GuideResult concurrent(bool build_in_loop, int publishers, int per_publisher, int subscribers) {
  const int total = publishers * per_publisher;
  zmq::context_t context(1);
  std::vector<zmq::socket_t> pubs;
  std::vector<zmq::socket_t> subs;
  for (int p = 0; p < publishers; ++p)
    pubs.push_back(publisher_socket(context, "inproc://concurrent-" + std::to_string(p)));
  for (int s = 0; s < subscribers; ++s) {
    subs.push_back(subscriber_socket(context));
    for (int p = 0; p < publishers; ++p) subs.back().connect("inproc://concurrent-" + std::to_string(p));
    subs.back().set(zmq::sockopt::subscribe, "");
  }
  for (auto& pub : pubs) await_subscriptions(pub, subscribers);
  std::vector<std::vector<std::string>> prebuilt(static_cast<std::size_t>(publishers));
  if (!build_in_loop) {
    for (int p = 0; p < publishers; ++p)
      for (int i = 0; i < per_publisher; ++i) prebuilt[static_cast<std::size_t>(p)].emplace_back(guide_payload(p, i));
  }
  std::atomic<int> received{0};
  HeapProbe probe(true);
  std::vector<std::thread> threads;
  const auto start = clock_type::now();
  for (auto& sub : subs) {
    threads.emplace_back([&sub, &received, total] {
      int n = 0;
      for (int i = 0; i < total; ++i) {
        zmq::message_t m;
        (void)sub.recv(m);
        n += m.empty() ? 0 : 1;
      }
      received.fetch_add(n, std::memory_order_relaxed);
    });
  }
  for (int p = 0; p < publishers; ++p) {
    threads.emplace_back([&pubs, &prebuilt, p, per_publisher, build_in_loop] {
      auto& pub = pubs[static_cast<std::size_t>(p)];
      for (int i = 0; i < per_publisher; ++i) {
        if (build_in_loop) {
          const std::string text = guide_payload(p, i);
          (void)pub.send(zmq::message_t(text.data(), text.size()), zmq::send_flags::none);
        } else {
          (void)pub.send(zmq::buffer(prebuilt[static_cast<std::size_t>(p)][static_cast<std::size_t>(i)]),
                         zmq::send_flags::none);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  GuideResult r;
  r.seconds = seconds_since(start);
  r.peak_bytes = probe.finish();
  check(received.load() == total * subscribers, "zeromq concurrent: messages missing");
  return r;
}

GuideResult fanout(int subscribers) {
  zmq::context_t context(1);
  zmq::socket_t pub = publisher_socket(context, "inproc://fanout");
  std::vector<zmq::socket_t> subs;
  for (int s = 0; s < subscribers; ++s) {
    subs.push_back(subscriber_socket(context));
    subs.back().connect("inproc://fanout");
    subs.back().set(zmq::sockopt::subscribe, "");
  }
  await_subscriptions(pub, subscribers);
  std::vector<AppMessage> messages;
  messages.reserve(kGuideCount);
  for (std::size_t i = 0; i < kGuideCount; ++i) messages.push_back(app_message(i, 1));
  std::atomic<std::size_t> bad{0};
  HeapProbe probe(true);
  std::vector<std::thread> threads;
  const auto start = clock_type::now();
  for (auto& sub : subs) {
    threads.emplace_back([&sub, &bad] {
      std::size_t wrong = 0;
      for (std::size_t i = 0; i < kGuideCount; ++i) {
        zmq::message_t metadata;
        zmq::message_t payload;
        (void)sub.recv(metadata);
        (void)sub.recv(payload);
        wrong += payload.size() != kGuideSize || payload.data<std::uint8_t>()[kGuideSize - 1] != 1 ? 1 : 0;
      }
      bad.fetch_add(wrong, std::memory_order_relaxed);
    });
  }
  threads.emplace_back([&pub, &messages] {
    for (const auto& m : messages) send(pub, m);
  });
  for (auto& t : threads) t.join();
  GuideResult r;
  r.seconds = seconds_since(start);
  r.peak_bytes = probe.finish();
  check(bad.load() == 0, "zeromq fan-out: wrong payload");
  return r;
}

}  // namespace with_zeromq
#endif

[[noreturn]] void unavailable(Impl impl) {
  throw std::runtime_error(std::string(impl_label(impl)) + " is not built in");
}

}  // namespace

GuideResult guide_run(const std::string& workload, Impl impl) {
  if (workload == "simple") return simple_run(impl);
  if (workload == "concurrent") return concurrent_run(impl, true);
  if (workload == "fanout") return fanout_run(impl, 4);
  throw std::runtime_error("unknown guide workload " + workload);
}

GuideResult simple_run(Impl impl) {
  switch (impl) {
    case Impl::kincir: return with_kincir::simple();
    case Impl::mutex: return with_mutex::simple();
    case Impl::zeromq:
#if KINCIR_BENCH_HAVE_ZMQ
      return with_zeromq::simple();
#else
      break;
#endif
  }
  unavailable(impl);
}

GuideResult concurrent_run(Impl impl, bool build_in_loop, int publishers, int per_publisher, int subscribers) {
  switch (impl) {
    case Impl::kincir: return with_kincir::concurrent(build_in_loop, publishers, per_publisher, subscribers);
    case Impl::mutex: return with_mutex::concurrent(build_in_loop, publishers, per_publisher, subscribers);
    case Impl::zeromq:
#if KINCIR_BENCH_HAVE_ZMQ
      return with_zeromq::concurrent(build_in_loop, publishers, per_publisher, subscribers);
#else
      break;
#endif
  }
  unavailable(impl);
}

GuideResult fanout_run(Impl impl, int subscribers) {
  switch (impl) {
    case Impl::kincir: return with_kincir::fanout(subscribers);
    case Impl::mutex: return with_mutex::fanout(subscribers);
    case Impl::zeromq:
#if KINCIR_BENCH_HAVE_ZMQ
      return with_zeromq::fanout(subscribers);
#else
      break;
#endif
  }
  unavailable(impl);
}

}  // namespace kincir_bench
