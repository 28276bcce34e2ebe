/// @file
/// Per-thread storage behind `MetricsCollector`: one shard per (collector, thread), written by
/// its owning thread only, read (merged) by snapshots. Private.
#pragma once

#include <kincir/config.hpp>
#include <kincir/metrics/histogram.hpp>

#include <algorithm>  // std::erase_if
#include <array>      // counter and histogram slots
#include <atomic>     // single-writer cells, shard list
#include <cstdint>    // std::uint64_t
#include <memory>     // std::shared_ptr, std::weak_ptr
#include <new>        // std::nothrow
#include <utility>    // std::exchange
#include <vector>     // the per-thread registry

namespace kincir::detail::metrics {

/// Counter slots of every shard; the first `kFirstNamedCounter` are the collector's own.
inline constexpr std::size_t kMaxCounters = 64;
/// Histogram slots of every shard; the first `kFirstNamedHistogram` are the collector's own.
inline constexpr std::size_t kMaxHistograms = 32;

enum BuiltinCounter : std::size_t {
  kPublishedMessages,
  kPublishCalls,
  kReceivedMessages,
  kReceiveCalls,
  kErrors,
  kAcked,
  kNacked,
  kFirstNamedCounter = 8,
};

enum BuiltinHistogram : std::size_t {
  kPublishLatency,
  kReceiveLatency,
  kFirstNamedHistogram,
};

/// Adds to a cell that only the calling thread writes: a plain load and store, no locked
/// instruction. Readers on other threads see each store whole (relaxed atomics).
inline void bump(std::atomic<std::uint64_t>& cell, std::uint64_t n) noexcept {
  cell.store(cell.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

/// One thread's part of one histogram. Allocated on the thread's first sample (zeroed).
struct HistogramCells {
  std::atomic<std::uint64_t> sum{0};
  std::atomic<std::uint64_t> max{0};
  std::array<std::atomic<std::uint64_t>, LatencyHistogram::kBucketCount> buckets{};

  void record(std::uint64_t ns) noexcept {
    bump(buckets[LatencyHistogram::bucket_index(ns)], 1);
    bump(sum, ns);
    if (ns > max.load(std::memory_order_relaxed)) max.store(ns, std::memory_order_relaxed);
  }

  void merge_into(LatencyHistogram& out) const {
    for (std::size_t i = 0; i < buckets.size(); ++i) out.add_bucket(i, buckets[i].load(std::memory_order_relaxed));
    out.add_totals(sum.load(std::memory_order_relaxed), max.load(std::memory_order_relaxed));
  }
};

/// One thread's counters and histograms for one collector. Shards are aligned apart so two
/// threads never write the same cache line (or adjacent-line pair).
struct alignas(kFalseSharingRange) Shard {
  Shard() noexcept = default;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;
  ~Shard() {
    for (auto& h : histograms) delete h.load(std::memory_order_relaxed);
  }

  /// The histogram cells of slot `i`, allocated on first use; null if that allocation failed
  /// (the sample is then dropped rather than throwing from a `noexcept` record).
  HistogramCells* cells(std::size_t i) noexcept {
    HistogramCells* h = histograms[i].load(std::memory_order_relaxed);  // we are the only writer
    if (h != nullptr) [[likely]]
      return h;
    h = new (std::nothrow) HistogramCells;
    // release: a reader that sees the pointer sees zeroed cells.
    histograms[i].store(h, std::memory_order_release);
    return h;
  }

  std::array<std::atomic<std::uint64_t>, kMaxCounters> counters{};
  std::array<std::atomic<HistogramCells*>, kMaxHistograms> histograms{};
  /// True while a live thread writes this shard; a thread that exits clears it so the next new
  /// thread adopts the shard (and its counts) instead of allocating another.
  std::atomic<bool> owned{true};
  Shard* next = nullptr;  // immutable once published on the list
};

/// Every shard of one collector: a push-only lock-free list, freed with the collector. Threads
/// hold it through `weak_ptr` so that a thread exiting after the collector is gone does nothing.
class ShardList {
 public:
  explicit ShardList(std::uint64_t id) noexcept : id_(id) {}
  ShardList(const ShardList&) = delete;
  ShardList& operator=(const ShardList&) = delete;
  ~ShardList() {
    Shard* s = head_.load(std::memory_order_acquire);
    while (s != nullptr) delete std::exchange(s, s->next);
  }

  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }

  /// First shard; walk with `next`. Shards are never removed while the list lives.
  [[nodiscard]] Shard* head() const noexcept { return head_.load(std::memory_order_acquire); }

  /// A shard for the calling thread: a released one if any (adopting its counts), else a new
  /// one; null if memory is exhausted.
  Shard* acquire() noexcept {
    for (Shard* s = head(); s != nullptr; s = s->next) {
      bool expected = false;
      // acquire: see every count the previous owner stored before releasing it.
      if (!s->owned.load(std::memory_order_relaxed) &&
          s->owned.compare_exchange_strong(expected, true, std::memory_order_acquire, std::memory_order_relaxed))
        return s;
    }
    auto* s = new (std::nothrow) Shard;
    if (s == nullptr) return nullptr;
    s->next = head_.load(std::memory_order_relaxed);
    // release: readers walking from the head see the shard's initialised fields and `next`.
    while (!head_.compare_exchange_weak(s->next, s, std::memory_order_release, std::memory_order_relaxed)) {
    }
    return s;
  }

 private:
  std::atomic<Shard*> head_{nullptr};
  std::uint64_t id_;
};

/// The calling thread's most recently used (collector id, shard) pair: the whole fast path is
/// one compare against it. Trivial and constant-initialised, so access needs no TLS guard.
struct ShardCache {
  std::uint64_t id = 0;
  Shard* shard = nullptr;
};
inline constinit thread_local ShardCache tls_cache{};
/// Set once the calling thread has started destroying its registry: records are then dropped.
inline constinit thread_local bool tls_exiting = false;

/// Every shard the calling thread owns; on thread exit each is released for adoption.
class ThreadRegistry {
 public:
  struct Entry {
    std::uint64_t id;
    std::weak_ptr<ShardList> list;
    Shard* shard;
  };

  ThreadRegistry() = default;
  ThreadRegistry(const ThreadRegistry&) = delete;
  ThreadRegistry& operator=(const ThreadRegistry&) = delete;
  ~ThreadRegistry() {
    tls_exiting = true;
    tls_cache = {};
    for (auto& e : entries_) {
      // The list may already be gone with its collector; then so is the shard.
      if (auto list = e.list.lock()) e.shard->owned.store(false, std::memory_order_release);
    }
  }

  [[nodiscard]] Shard* find(std::uint64_t id) const noexcept {
    for (const auto& e : entries_)
      if (e.id == id) return e.shard;
    return nullptr;
  }

  /// Remembers `shard`; also forgets entries of collectors that no longer exist.
  void add(const std::shared_ptr<ShardList>& list, Shard* shard) {
    std::erase_if(entries_, [](const Entry& e) { return e.list.expired(); });
    entries_.push_back(Entry{list->id(), list, shard});
  }

 private:
  std::vector<Entry> entries_;
};

inline ThreadRegistry& thread_registry() {
  thread_local ThreadRegistry registry;
  return registry;
}

/// The calling thread's shard of `list`, creating it on first use. Null when the thread is
/// exiting or memory is exhausted (the caller drops the record).
KINCIR_COLD inline Shard* attach(const std::shared_ptr<ShardList>& list) noexcept {
  if (tls_exiting) return nullptr;
  ThreadRegistry& registry = thread_registry();
  Shard* shard = registry.find(list->id());
  if (shard == nullptr) {
    shard = list->acquire();
    if (shard == nullptr) return nullptr;
    try {
      registry.add(list, shard);
    } catch (...) {  // the shard is still ours, it just will not be released for adoption at exit
    }
  }
  tls_cache = ShardCache{list->id(), shard};
  return shard;
}

/// Process-wide source of collector ids; never reused, so a stale cache entry never matches.
inline std::uint64_t next_collector_id() noexcept {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace kincir::detail::metrics
