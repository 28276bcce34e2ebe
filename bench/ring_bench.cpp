// BroadcastRing against two baselines written here, in the same binary:
//   - spsc:  one bounded single-producer/single-consumer queue per consumer (cached indices, the
//            rigtorp design); the producer pushes every element into each consumer's queue
//            (2 producers: one queue per producer and consumer; a group: batches dealt round-robin);
//   - mutex: std::mutex + std::deque + std::condition_variable, bounded, one queue per consumer
//            (a group shares one queue).
// The ring runs twice: "ring" with its default wait strategy (readers park after spinning and
// yielding; the producer then wakes them), "ring-spin" with readers that spin and yield like the
// baselines' consumers.
// Workloads: 1->1, 1->4 (fan-out), 2->4, and 1 -> a group of 2 (each element to one reader), with
// 8-byte and 64-byte elements, publish batches of 1 and 64. Every run moves N elements, checks
// counts, sums and per-producer order, and reports msgs/s and deliveries/s over wall time.
// Capacity: 65536 elements for the ring and for each baseline queue; threads are not pinned.
//
//   build/release/bench/ring_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <kincir/memory/ring.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>           // std::min
#include <array>               // batches
#include <atomic>              // start flag, queue indices
#include <chrono>              // wall time of a run
#include <condition_variable>  // mutex baseline
#include <cstddef>             // std::size_t, std::ptrdiff_t
#include <cstdint>             // std::uint64_t
#include <cstdlib>             // std::abort on a failed publish
#include <deque>               // mutex baseline
#include <limits>              // a wait strategy that never parks
#include <memory>              // queues per consumer
#include <mutex>               // mutex baseline
#include <optional>            // the group cursor of a run
#include <string>              // benchmark names
#include <thread>              // producers and consumers
#include <type_traits>         // element kinds
#include <vector>              // threads, queues

namespace {

using kincir::memory::BroadcastRing;
using kincir::memory::ProducerMode;
using kincir::memory::PublishStatus;
using kincir::memory::RingOptions;
using kincir::memory::WaitStatus;

// libstdc++ takes non-atomic shortcuts until a thread has been started; measure the real thing.
const bool kThreadsStarted = [] {
  std::thread([] {}).join();
  return true;
}();

constexpr std::size_t kCapacity = std::size_t{1} << 16;
constexpr int kProducerShift = 48;

/// A 64-byte element, the size of a `kincir::Message`.
struct Msg64 {
  std::uint64_t key = 0;
  std::uint64_t pad[7] = {};
};
static_assert(sizeof(Msg64) == 64, "Message-sized element");

std::uint64_t key_of(std::uint64_t v) { return v; }
std::uint64_t key_of(const Msg64& m) { return m.key; }
template <class T>
T make(std::uint64_t key) {
  if constexpr (std::is_same_v<T, Msg64>) {
    Msg64 m;
    m.key = key;
    return m;
  } else {
    return key;
  }
}

struct Workload {
  int producers;
  int consumers;  // independent readers, or group members
  bool group;
};

/// What a consumer saw; checked after the run.
struct Tally {
  std::uint64_t count = 0;
  std::uint64_t sum = 0;
  std::uint64_t last[2] = {0, 0};  // per producer: last index + 1
  bool ordered = true;

  void add(std::uint64_t key) {
    const auto p = static_cast<std::size_t>(key >> kProducerShift);
    const std::uint64_t i = key & ((std::uint64_t{1} << kProducerShift) - 1);
    if (p > 1 || i + 1 <= last[p]) ordered = false;
    if (p <= 1) last[p] = i + 1;
    ++count;
    sum += key;
  }
};

void backoff(unsigned& spins) {
  if (++spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  } else {
    std::this_thread::yield();
  }
}

// --- Baseline 1: bounded SPSC queue with cached indices ---------------------------------------

template <class T>
class SpscQueue {
 public:
  explicit SpscQueue(std::size_t capacity) : mask_(capacity - 1), slots_(capacity) {}

  /// Pushes n elements, waiting for room; the tail is stored once per contiguous run.
  void push(const T* items, std::size_t n) {
    std::size_t t = tail_.load(std::memory_order_relaxed);
    unsigned spins = 0;
    for (std::size_t i = 0; i < n;) {
      if (t - head_cache_ > mask_) {
        head_cache_ = head_.load(std::memory_order_acquire);
        if (t - head_cache_ > mask_) {
          backoff(spins);
          continue;
        }
      }
      const std::size_t k = std::min(mask_ + 1 - (t - head_cache_), n - i);
      for (std::size_t j = 0; j < k; ++j) slots_[(t + j) & mask_] = items[i + j];
      t += k;
      i += k;
      tail_.store(t, std::memory_order_release);
    }
  }

  /// Calls fn on up to max elements in place; stores the head once.
  template <class Fn>
  std::size_t consume(std::size_t max, Fn&& fn) {
    const std::size_t h = head_.load(std::memory_order_relaxed);
    if (h == tail_cache_) {
      tail_cache_ = tail_.load(std::memory_order_acquire);
      if (h == tail_cache_) return 0;
    }
    const std::size_t n = std::min(max, tail_cache_ - h);
    for (std::size_t i = 0; i < n; ++i) fn(slots_[(h + i) & mask_]);
    head_.store(h + n, std::memory_order_release);
    return n;
  }

 private:
  const std::size_t mask_;
  std::vector<T> slots_;
  alignas(kincir::kFalseSharingRange) std::atomic<std::size_t> tail_{0};
  std::size_t head_cache_ = 0;  // producer's copy of head_
  alignas(kincir::kFalseSharingRange) std::atomic<std::size_t> head_{0};
  std::size_t tail_cache_ = 0;  // consumer's copy of tail_
};

// --- Baseline 2: mutex + deque + condition variables ------------------------------------------

template <class T>
class MutexQueue {
 public:
  explicit MutexQueue(std::size_t capacity) : capacity_(capacity) {}

  void push(const T* items, std::size_t n) {
    for (std::size_t i = 0; i < n;) {
      std::unique_lock<std::mutex> lock(mutex_);
      not_full_.wait(lock, [&] { return queue_.size() < capacity_; });
      const std::size_t k = std::min(capacity_ - queue_.size(), n - i);
      queue_.insert(queue_.end(), items + i, items + i + k);
      i += k;
      lock.unlock();
      not_empty_.notify_all();
    }
  }

  /// Takes up to max elements (waiting for one), then calls fn outside the lock; 0 once closed and empty.
  template <class Fn>
  std::size_t consume(std::size_t max, std::vector<T>& buffer, Fn&& fn) {
    buffer.clear();
    {
      std::unique_lock<std::mutex> lock(mutex_);
      not_empty_.wait(lock, [&] { return !queue_.empty() || closed_; });
      const std::size_t n = std::min(max, queue_.size());
      buffer.insert(buffer.end(), queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    }
    not_full_.notify_all();
    for (const T& item : buffer) fn(item);
    return buffer.size();
  }

  void close() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      closed_ = true;
    }
    not_empty_.notify_all();
  }

 private:
  const std::size_t capacity_;
  std::mutex mutex_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::deque<T> queue_;
  bool closed_ = false;
};

// --- Runs ---------------------------------------------------------------------------------------

/// Starts consumers and producers, releases them together, returns the seconds until all finish.
template <class Consume, class Produce, class Finish>
double timed_run(const Workload& w, Consume consume, Produce produce, Finish finish) {
  std::atomic<bool> go{false};
  std::vector<std::thread> consumers;
  std::vector<std::thread> producers;
  for (int c = 0; c < w.consumers; ++c) {
    consumers.emplace_back([&, c] {
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      consume(c);
    });
  }
  for (int p = 0; p < w.producers; ++p) {
    producers.emplace_back([&, p] {
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      produce(p);
    });
  }
  const auto start = std::chrono::steady_clock::now();
  go.store(true, std::memory_order_release);
  for (auto& t : producers) t.join();
  finish();
  for (auto& t : consumers) t.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// Produces `count` elements of producer p in batches of `batch`, handing each batch to `push`.
template <class T, class Push>
void produce_batches(int p, std::uint64_t count, std::size_t batch, Push push) {
  std::array<T, 64> items{};
  const std::uint64_t base = static_cast<std::uint64_t>(p) << kProducerShift;
  for (std::uint64_t i = 0; i < count;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(batch, count - i));
    for (std::size_t k = 0; k < n; ++k) items[k] = make<T>(base | (i + k));
    push(items.data(), n);
    i += n;
  }
}

/// Checks the tallies; returns an error text or empty.
std::string check(const Workload& w, const std::vector<Tally>& tallies, std::uint64_t per_producer) {
  std::uint64_t expected_sum = 0;
  for (int p = 0; p < w.producers; ++p) {
    const std::uint64_t base = static_cast<std::uint64_t>(p) << kProducerShift;
    expected_sum += base * per_producer + per_producer * (per_producer - 1) / 2;
  }
  const std::uint64_t total = per_producer * static_cast<std::uint64_t>(w.producers);
  if (w.group) {
    std::uint64_t count = 0;
    std::uint64_t sum = 0;
    for (const auto& t : tallies) {
      count += t.count;
      sum += t.sum;
      if (!t.ordered) return "group member saw a producer out of order";
    }
    if (count != total || sum != expected_sum) return "group did not get every element exactly once";
    return {};
  }
  for (const auto& t : tallies) {
    if (!t.ordered) return "consumer saw a producer out of order";
    if (t.count != total || t.sum != expected_sum) return "consumer did not get every element exactly once";
  }
  return {};
}

void report(benchmark::State& state, const Workload& w, std::uint64_t total) {
  const double runs = static_cast<double>(state.iterations());
  const double deliveries = w.group ? 1.0 : static_cast<double>(w.consumers);
  state.counters["msgs/s"] = benchmark::Counter(static_cast<double>(total) * runs, benchmark::Counter::kIsRate);
  state.counters["deliveries/s"] =
      benchmark::Counter(static_cast<double>(total) * deliveries * runs, benchmark::Counter::kIsRate);
}

/// `park`: the ring's default wait strategy (spin, yield 16 times, then park). Otherwise readers
/// spin and yield without ever parking, as the baselines' consumers do.
template <class T>
void BM_Ring(benchmark::State& state, Workload w, std::uint64_t total, bool park) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  const std::uint64_t per_producer = total / static_cast<std::uint64_t>(w.producers);
  for (auto _ : state) {
    RingOptions options;
    options.capacity = kCapacity;
    options.block_size = 256;
    options.producer_mode = w.producers == 1 ? ProducerMode::single : ProducerMode::multi;
    if (!park) options.wait.yield_iterations = std::numeric_limits<std::uint32_t>::max();
    BroadcastRing<T> ring(options);
    std::vector<typename BroadcastRing<T>::Cursor> cursors;
    std::optional<typename BroadcastRing<T>::GroupCursor> group;
    if (w.group) {
      group.emplace(ring.add_group_cursor());
    } else {
      for (int c = 0; c < w.consumers; ++c) cursors.push_back(ring.add_cursor());
    }
    std::vector<Tally> tallies(static_cast<std::size_t>(w.consumers));
    const double seconds = timed_run(
        w,
        [&](int c) {
          Tally& tally = tallies[static_cast<std::size_t>(c)];
          auto read = [&](auto& cursor) {
            T one{};
            for (;;) {
              std::size_t n = 0;
              if (batch == 1) {
                if (cursor.try_read(one)) {
                  tally.add(key_of(one));
                  n = 1;
                }
              } else {
                n = cursor.poll(batch, [&](const T& e) { tally.add(key_of(e)); });
              }
              if (n == 0 && cursor.wait() == WaitStatus::closed) return;
            }
          };
          if (w.group) {
            read(*group);
          } else {
            read(cursors[static_cast<std::size_t>(c)]);
          }
        },
        [&](int p) {
          produce_batches<T>(p, per_producer, batch, [&](T* items, std::size_t n) {
            const PublishStatus s = n == 1 ? ring.publish(std::move(items[0])) : ring.publish(items, items + n);
            if (s != PublishStatus::ok) std::abort();
          });
        },
        [&] { ring.close(); });
    state.SetIterationTime(seconds);
    if (const std::string error = check(w, tallies, per_producer); !error.empty()) {
      state.SkipWithError(error.c_str());
      return;
    }
  }
  report(state, w, per_producer * static_cast<std::uint64_t>(w.producers));
}

/// Queue of producer p to consumer c in the SPSC baseline.
std::size_t queue_index(const Workload& w, int p, int c) {
  return static_cast<std::size_t>(p) * static_cast<std::size_t>(w.consumers) + static_cast<std::size_t>(c);
}

template <class T>
void BM_Spsc(benchmark::State& state, Workload w, std::uint64_t total) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  const std::uint64_t per_producer = total / static_cast<std::uint64_t>(w.producers);
  for (auto _ : state) {
    // Queue [p][c]: producer p to consumer c; a group has one queue per member, dealt round-robin.
    std::vector<std::unique_ptr<SpscQueue<T>>> queues;
    for (int i = 0; i < w.producers * w.consumers; ++i) queues.push_back(std::make_unique<SpscQueue<T>>(kCapacity));
    std::atomic<int> producers_left{w.producers};
    std::vector<Tally> tallies(static_cast<std::size_t>(w.consumers));
    const double seconds = timed_run(
        w,
        [&](int c) {
          Tally& tally = tallies[static_cast<std::size_t>(c)];
          unsigned spins = 0;
          for (;;) {
            std::size_t n = 0;
            for (int p = 0; p < w.producers; ++p) {
              n += queues[queue_index(w, p, c)]->consume(batch, [&](const T& e) { tally.add(key_of(e)); });
            }
            if (n != 0) {
              spins = 0;
              continue;
            }
            if (producers_left.load(std::memory_order_acquire) == 0) {
              // Producers are done: drain once more, then stop.
              bool empty = true;
              for (int p = 0; p < w.producers; ++p) {
                while (queues[queue_index(w, p, c)]->consume(batch, [&](const T& e) { tally.add(key_of(e)); }) != 0) {
                  empty = false;
                }
              }
              if (empty) return;
            }
            backoff(spins);
          }
        },
        [&](int p) {
          int next = 0;
          produce_batches<T>(p, per_producer, batch, [&](T* items, std::size_t n) {
            if (w.group) {
              queues[queue_index(w, p, next)]->push(items, n);
              next = (next + 1) % w.consumers;
            } else {
              for (int c = 0; c < w.consumers; ++c) queues[queue_index(w, p, c)]->push(items, n);
            }
          });
          producers_left.fetch_sub(1, std::memory_order_release);
        },
        [] {});
    state.SetIterationTime(seconds);
    if (const std::string error = check(w, tallies, per_producer); !error.empty()) {
      state.SkipWithError(error.c_str());
      return;
    }
  }
  report(state, w, per_producer * static_cast<std::uint64_t>(w.producers));
}

template <class T>
void BM_Mutex(benchmark::State& state, Workload w, std::uint64_t total) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  const std::uint64_t per_producer = total / static_cast<std::uint64_t>(w.producers);
  for (auto _ : state) {
    const int queue_count = w.group ? 1 : w.consumers;
    std::vector<std::unique_ptr<MutexQueue<T>>> queues;
    for (int i = 0; i < queue_count; ++i) queues.push_back(std::make_unique<MutexQueue<T>>(kCapacity));
    std::vector<Tally> tallies(static_cast<std::size_t>(w.consumers));
    const double seconds = timed_run(
        w,
        [&](int c) {
          Tally& tally = tallies[static_cast<std::size_t>(c)];
          std::vector<T> buffer;
          buffer.reserve(batch);
          MutexQueue<T>& q = *queues[static_cast<std::size_t>(w.group ? 0 : c)];
          while (q.consume(batch, buffer, [&](const T& e) { tally.add(key_of(e)); }) != 0) {
          }
        },
        [&](int p) {
          produce_batches<T>(p, per_producer, batch, [&](T* items, std::size_t n) {
            for (auto& q : queues) q->push(items, n);
          });
        },
        [&] {
          for (auto& q : queues) q->close();
        });
    state.SetIterationTime(seconds);
    if (const std::string error = check(w, tallies, per_producer); !error.empty()) {
      state.SkipWithError(error.c_str());
      return;
    }
  }
  report(state, w, per_producer * static_cast<std::uint64_t>(w.producers));
}

template <class T>
void register_all(const char* type) {
  struct Named {
    const char* name;
    Workload w;
  };
  const Named workloads[] = {
      {"1to1", {1, 1, false}},
      {"1to4", {1, 4, false}},
      {"2to4", {2, 4, false}},
      {"1toGroup2", {1, 2, true}},
  };
  // Elements per run: enough for tens of milliseconds on the fast paths; the mutex queue gets
  // fewer so a fan-out run stays under a second.
  const std::uint64_t fast = std::uint64_t{1} << 21;
  const std::uint64_t slow = std::uint64_t{1} << 17;
  for (const Named& n : workloads) {
    const std::string suffix = std::string("/") + n.name + "/" + type;
    benchmark::RegisterBenchmark(("ring" + suffix).c_str(), BM_Ring<T>, n.w, fast, true)
        ->Arg(1)
        ->Arg(64)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("ring-spin" + suffix).c_str(), BM_Ring<T>, n.w, fast, false)
        ->Arg(1)
        ->Arg(64)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("spsc" + suffix).c_str(), BM_Spsc<T>, n.w, fast)
        ->Arg(1)
        ->Arg(64)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("mutex" + suffix).c_str(), BM_Mutex<T>, n.w, slow)
        ->Arg(1)
        ->Arg(64)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
}

/// The single-element publish path alone: one producer, one cursor drained in the same thread
/// every 64 publishes (no parked reader, so no system call), ns per publish.
void BM_RingPublishOne(benchmark::State& state) {
  RingOptions options;
  options.capacity = 1024;
  options.block_size = 256;
  options.producer_mode = state.range(0) == 0 ? ProducerMode::single : ProducerMode::multi;
  BroadcastRing<std::uint64_t> ring(options);
  auto cursor = ring.add_cursor();
  std::uint64_t i = 0;
  std::uint64_t sum = 0;
  for (auto _ : state) {
    (void)ring.publish(std::uint64_t{i});
    if (++i % 64 == 0) cursor.poll(64, [&](const std::uint64_t& v) { sum += v; });
  }
  benchmark::DoNotOptimize(sum);
  state.SetLabel(state.range(0) == 0 ? "single producer" : "multi producer");
}
BENCHMARK(BM_RingPublishOne)->Arg(0)->Arg(1);

}  // namespace

int main(int argc, char** argv) {
  (void)kThreadsStarted;
  register_all<std::uint64_t>("8B");
  register_all<Msg64>("64B");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
