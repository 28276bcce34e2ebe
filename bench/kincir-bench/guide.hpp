// kincir-bench: the guide's workloads run by kincir and by its peers (ZeroMQ inproc PUB/SUB, a
// mutex + condition-variable queue per subscriber), and the measuring tools they share.
#pragma once

#include <malloc.h>  // mallinfo2: heap bytes in use

#include <atomic>   // peak heap
#include <chrono>   // timing
#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint8_t
#include <string>   // names
#include <thread>   // the heap sampler

namespace kincir_bench {

using clock_type = std::chrono::steady_clock;

inline constexpr std::size_t kGuideCount = 100'000;  // the guide's simple test
inline constexpr std::size_t kGuideSize = 1024;

inline double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

/// Heap bytes in use, every glibc arena.
inline std::size_t heap_in_use() noexcept {
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

/// Peak heap growth above the moment of construction, sampled at every `sample()` and, when
/// asked, every millisecond by a background thread (cheap: one mallinfo2 per sample).
class HeapProbe {
 public:
  explicit HeapProbe(bool background) : baseline_(heap_in_use()), peak_(baseline_) {
    if (background) {
      sampler_ = std::jthread([this](const std::stop_token& stop) {
        while (!stop.stop_requested()) {
          sample();
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      });
    }
  }

  void sample() noexcept {
    const std::size_t now = heap_in_use();
    std::size_t peak = peak_.load(std::memory_order_relaxed);
    while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
  }

  /// Stops sampling; the peak growth in bytes.
  double finish() {
    if (sampler_.joinable()) {
      sampler_.request_stop();
      sampler_.join();
    }
    sample();
    return static_cast<double>(peak_.load(std::memory_order_relaxed) - baseline_);
  }

 private:
  std::size_t baseline_;
  std::atomic<std::size_t> peak_;
  std::jthread sampler_;  // last: stopped before the members it reads go away
};

/// Who runs a guide workload.
enum class Impl : std::uint8_t {
  kincir,
  zeromq,  ///< ZeroMQ inproc: XPUB (verbose, to wait for subscriptions) -> SUB, high-water marks off
  mutex,   ///< one std::deque + std::mutex + std::condition_variable per subscriber
};
inline constexpr Impl kImpls[] = {Impl::kincir, Impl::zeromq, Impl::mutex};

/// Short name (counters, JSON, --child) and the table's label.
const char* impl_name(Impl impl) noexcept;
const char* impl_label(Impl impl) noexcept;
/// Whether this build can run `impl` (ZeroMQ is optional).
bool impl_available(Impl impl) noexcept;

/// One run of a guide workload. `publish_s`/`receive_s` for the simple test, `seconds` (wall
/// time, threads started inside it) for the multi-threaded ones. `peak_bytes`: heap growth during
/// the timed part beyond the input messages (simple: after the publish, the backlog's size).
struct GuideResult {
  double publish_s = 0;
  double receive_s = 0;
  double seconds = 0;
  double peak_bytes = 0;
};

/// The guide's simple test: 100 000 x 1 KiB messages with an `id` metadata entry, built before
/// the clock, one publish of the batch, then 100 000 receives, each message's payload size checked
/// and the message destroyed.
GuideResult simple_run(Impl impl);

/// The guide's concurrent test: `publishers` threads x `per_publisher` single publishes of
/// "Publisher p - Message i", `subscribers` threads each receiving every message. `build_in_loop`:
/// each publisher builds each message right before publishing it (as the guide does); otherwise
/// the messages are built before the clock.
GuideResult concurrent_run(Impl impl, bool build_in_loop, int publishers = 10, int per_publisher = 10'000,
                           int subscribers = 5);

/// 1 -> N fan-out: one publisher thread sends 100 000 x 1 KiB built before the clock (kincir and
/// the mutex queues in batches of 64, ZeroMQ one message at a time, its only way), N subscriber
/// threads each receive and read every message.
GuideResult fanout_run(Impl impl, int subscribers);

/// "simple", "concurrent" (messages built in the loop) or "fanout" (1 -> 4), as above.
GuideResult guide_run(const std::string& workload, Impl impl);

/// Throws std::runtime_error if a received count or payload size is wrong.
void check(bool ok, const char* what);

}  // namespace kincir_bench
