// Helpers shared by the ring tests: an element type that tracks its lifetime, one that stalls a
// producer in the middle of a publish, a counting allocator, and the element-count scale for
// sanitizer builds.
#pragma once

#include <kincir/memory/ring.hpp>

#include <atomic>   // lifetime and allocation counters
#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint64_t
#include <memory>   // std::allocator
#include <thread>   // std::this_thread::yield (a stalled element)

namespace kincir::test {

#if defined(__SANITIZE_THREAD__)
#define KINCIR_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KINCIR_TEST_TSAN 1
#endif
#endif

/// Element counts of the stress tests: 1 million normally, fewer under ThreadSanitizer (which
/// runs these 5-20 times slower) so a run stays within a few seconds.
#if defined(KINCIR_TEST_TSAN)
inline constexpr std::uint64_t kStressElements = 100'000;
#else
inline constexpr std::uint64_t kStressElements = 1'000'000;
#endif

/// An element that counts constructions, copies and destructions, and detects use after
/// destruction and double destruction through a marker.
struct Tracked {
  static constexpr std::uint64_t kAlive = 0x5AFE5AFE5AFE5AFEull;
  static constexpr std::uint64_t kDead = 0xDEADDEADDEADDEADull;

  static inline std::atomic<long> live{0};
  static inline std::atomic<long> copies{0};
  static inline std::atomic<long> errors{0};  // destroyed twice, or used after destruction

  std::uint64_t value = 0;
  std::uint64_t marker = kAlive;

  Tracked() noexcept { live.fetch_add(1, std::memory_order_relaxed); }
  explicit Tracked(std::uint64_t v) noexcept : value(v) { live.fetch_add(1, std::memory_order_relaxed); }
  Tracked(const Tracked& other) noexcept : value(other.value) {
    check(other);
    live.fetch_add(1, std::memory_order_relaxed);
    copies.fetch_add(1, std::memory_order_relaxed);
  }
  Tracked(Tracked&& other) noexcept : value(other.value) {
    check(other);
    live.fetch_add(1, std::memory_order_relaxed);
  }
  Tracked& operator=(const Tracked& other) noexcept {
    check(other);
    check(*this);
    value = other.value;
    copies.fetch_add(1, std::memory_order_relaxed);
    return *this;
  }
  Tracked& operator=(Tracked&& other) noexcept {
    check(other);
    check(*this);
    value = other.value;
    return *this;
  }
  ~Tracked() {
    check(*this);
    marker = kDead;
    live.fetch_sub(1, std::memory_order_relaxed);
  }

  static void check(const Tracked& t) noexcept {
    if (t.marker != kAlive) errors.fetch_add(1, std::memory_order_relaxed);
  }
  static void reset_counts() noexcept {
    copies.store(0);
    errors.store(0);
  }
};

/// An element whose move construction can be made to stop in the middle of a publish (as a
/// producer that is preempted there would): `arm()` makes the next one wait until `resume()`.
struct Stalling {
  static inline std::atomic<long> live{0};
  static inline std::atomic<bool> armed{false};
  static inline std::atomic<bool> holding{false};
  static inline std::atomic<bool> paused{false};

  std::uint64_t value = 0;

  Stalling() noexcept { live.fetch_add(1, std::memory_order_relaxed); }
  explicit Stalling(std::uint64_t v) noexcept : value(v) { live.fetch_add(1, std::memory_order_relaxed); }
  Stalling(const Stalling& other) noexcept : value(other.value) { live.fetch_add(1, std::memory_order_relaxed); }
  Stalling(Stalling&& other) noexcept : value(other.value) {
    live.fetch_add(1, std::memory_order_relaxed);
    if (armed.exchange(false)) {
      paused.store(true);
      while (holding.load()) std::this_thread::yield();
      paused.store(false);
    }
  }
  Stalling& operator=(const Stalling&) noexcept = default;
  Stalling& operator=(Stalling&&) noexcept = default;
  ~Stalling() { live.fetch_sub(1, std::memory_order_relaxed); }

  /// The next move construction waits until `resume()`.
  static void arm() noexcept {
    holding.store(true);
    armed.store(true);
  }
  static void resume() noexcept { holding.store(false); }
};

/// Bytes and blocks handed out through one `CountingAllocator` family.
struct AllocStats {
  std::atomic<std::size_t> live_bytes{0};
  std::atomic<std::size_t> allocations{0};
};

/// Forwards to `std::allocator` and counts what is live; rebinds share the counters.
template <class U>
struct CountingAllocator {
  using value_type = U;

  AllocStats* stats;

  explicit CountingAllocator(AllocStats* s) noexcept : stats(s) {}
  template <class V>
  CountingAllocator(const CountingAllocator<V>& other) noexcept
      : stats(other.stats) {}  // NOLINT(google-explicit-constructor)

  U* allocate(std::size_t n) {
    U* p = std::allocator<U>().allocate(n);
    stats->live_bytes.fetch_add(n * sizeof(U), std::memory_order_relaxed);
    stats->allocations.fetch_add(1, std::memory_order_relaxed);
    return p;
  }
  void deallocate(U* p, std::size_t n) noexcept {
    stats->live_bytes.fetch_sub(n * sizeof(U), std::memory_order_relaxed);
    std::allocator<U>().deallocate(p, n);
  }

  template <class V>
  bool operator==(const CountingAllocator<V>& other) const noexcept {
    return stats == other.stats;
  }
};

/// A counted element that asks readers for prefetch hints (`detail::RingPrefetchable`): each hint
/// checks that it is given a live element (ThreadSanitizer sees any race with its producer or its
/// last reader) and is counted in `hints`.
struct Hinted {
  static inline std::atomic<long> hints{0};
  Tracked tracked;
  Hinted() noexcept = default;
  explicit Hinted(std::uint64_t v) noexcept : tracked(v) {}
};
inline void ring_prefetch(const Hinted& h) noexcept {
  Tracked::check(h.tracked);
  Hinted::hints.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace kincir::test
