/// @file
/// Internal: spinning and parking for `BroadcastRing` (pause instruction, futex-style park/wake,
/// asymmetric fences).
///
/// On Linux a parked thread sleeps on the futex behind a 32-bit signal word, with an optional
/// deadline; elsewhere it uses `std::atomic::wait` (timed waits then poll with short sleeps). The
/// ring only calls `wake_all` when its waiter count says someone is parked, so the fast paths make
/// no system call.
#pragma once

#include <kincir/config.hpp>

#include <atomic>       // std::atomic
#include <chrono>       // deadlines
#include <cstdint>      // std::uint32_t
#include <thread>       // std::this_thread::sleep_for (portable fallback)
#include <type_traits>  // std::is_same_v

#if defined(__linux__)
#include <linux/futex.h>       // FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE
#include <linux/membarrier.h>  // MEMBARRIER_CMD_PRIVATE_EXPEDITED
#include <sys/syscall.h>       // SYS_futex, SYS_membarrier
#include <unistd.h>            // syscall

#include <climits>  // INT_MAX (wake everyone)
#include <ctime>    // timespec
#endif

namespace kincir::memory::detail {

/// The clock every ring deadline is converted to.
using WaitClock = std::chrono::steady_clock;

/// "No deadline".
inline constexpr WaitClock::time_point kNoDeadline = WaitClock::time_point::max();

/// Tells the CPU that this thread is spinning (x86 `pause`, ARM `yield`).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();  // _mm_pause without <immintrin.h>, which costs every includer ~0.3 s
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#endif
}

/// True if `heavy_fence()` can make `light_fence()` free: Linux `membarrier` with private
/// expedited commands (the process registers once, on first use).
inline bool asymmetric_fences() noexcept {
#if defined(__linux__) && defined(SYS_membarrier)
  static const bool available = [] {
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-vararg): no wrapper for membarrier
    const long commands = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (commands < 0 || (commands & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return false;
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-vararg): no wrapper for membarrier
    return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  }();
  return available;
#else
  return false;
#endif
}

/// A sequentially consistent fence. ThreadSanitizer does not model fences and GCC warns about
/// every one it instruments (-Wtsan), which fails users' `-fsanitize=thread -Werror` builds; the
/// warning is silenced here, where it is known to be harmless: kincir's fences only order a store
/// before a load (so a sleeping thread is never missed), and every happens-before edge TSan needs
/// comes from release/acquire pairs, which it does model.
inline void full_fence() noexcept {
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtsan"
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
#pragma GCC diagnostic pop
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

/// The frequent side of a store-then-load handshake (publish then check for parked readers).
/// With asymmetric fences it only stops the compiler from reordering; otherwise a full fence.
inline void light_fence() noexcept {
  if (asymmetric_fences()) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  } else {
    full_fence();
  }
}

/// The rare side (about to park): every thread of the process passes a full memory barrier, so
/// each `light_fence()` caller either sees this thread's earlier stores or has its own earlier
/// stores seen by this thread's later loads.
inline void heavy_fence() noexcept {
#if defined(__linux__) && defined(SYS_membarrier)
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-vararg): no wrapper for membarrier
  if (asymmetric_fences() && syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return;
#endif
  full_fence();
}

/// Converts a deadline on any clock to `WaitClock`.
template <class Clock, class Duration>
WaitClock::time_point to_wait_clock(std::chrono::time_point<Clock, Duration> deadline) noexcept {
  if constexpr (std::is_same_v<Clock, WaitClock>) {
    return std::chrono::time_point_cast<WaitClock::duration>(deadline);
  } else {
    const auto now = Clock::now();
    if (deadline <= now) return WaitClock::now();
    const auto left = std::chrono::duration_cast<WaitClock::duration>(deadline - now);
    const auto base = WaitClock::now();
    if (left >= kNoDeadline - base) return kNoDeadline;
    return base + left;
  }
}

/// Sleeps while `word` holds `expected`, until `wake_all(word)` or `deadline`. May return early
/// (spurious wake-up); the caller re-checks its condition. Returns false once the deadline passed.
inline bool park_until(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       WaitClock::time_point deadline) noexcept {
#if defined(__linux__)
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(int), "the futex word is the atomic itself");
  timespec timeout{};
  timespec* timeout_ptr = nullptr;
  if (deadline != kNoDeadline) {
    const auto now = WaitClock::now();
    if (now >= deadline) return false;
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now).count();
    timeout.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    timeout.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    timeout_ptr = &timeout;
  }
  // The futex compares the word with `expected` atomically with going to sleep: a wake_all after
  // the word changed cannot be missed.
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-vararg): the futex system call has no wrapper
  syscall(SYS_futex, reinterpret_cast<int*>(&word), FUTEX_WAIT_PRIVATE, static_cast<int>(expected), timeout_ptr,
          nullptr, 0);
  return deadline == kNoDeadline || WaitClock::now() < deadline;
#else
  if (deadline == kNoDeadline) {
    word.wait(expected, std::memory_order_acquire);
    return true;
  }
  if (WaitClock::now() >= deadline) return false;
  if (word.load(std::memory_order_acquire) == expected) std::this_thread::sleep_for(std::chrono::microseconds(50));
  return WaitClock::now() < deadline;
#endif
}

/// Wakes every thread parked on `word` (the caller has changed the word first).
inline void wake_all(std::atomic<std::uint32_t>& word) noexcept {
#if defined(__linux__)
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-vararg): the futex system call has no wrapper
  syscall(SYS_futex, reinterpret_cast<int*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
#else
  word.notify_all();
#endif
}

}  // namespace kincir::memory::detail
