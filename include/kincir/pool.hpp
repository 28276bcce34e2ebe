/// @file
/// `kincir::MessagePool`: reuse of message shells (their metadata storage) across messages.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/bytes.hpp>
#include <kincir/core/message.hpp>
#include <kincir/core/uuid.hpp>

#include <algorithm>  // std::min
#include <atomic>     // pool ids
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <iterator>   // std::make_move_iterator
#include <mutex>      // the shared free list
#include <utility>    // std::move
#include <vector>     // free lists

namespace kincir {

namespace detail::pool {

/// Source of pool ids: a thread cache names its pool by id, not address, so a new pool at a
/// dead pool's address never picks up stale shells.
inline std::atomic<std::uint64_t> next_pool_id{1};

/// One thread's cache of shells, for the pool it used last.
struct ThreadCache {
  std::uint64_t owner = 0;
  std::vector<Message> shells;
};

inline ThreadCache& thread_cache() {
  thread_local ThreadCache cache;
  return cache;
}

}  // namespace detail::pool

/// A bounded pool of message shells with `get_message(payload)` / `return_message(message)`, as in
/// the Rust kincir crate's performance guide.
///
/// `get_message` returns a message with a fresh id, the given payload and empty metadata whose
/// storage (the entry vector's capacity) comes from a returned message; `return_message` drops
/// the payload at once (a pooled shell never keeps a buffer alive) and keeps the shell.
///
/// The fast path takes and returns shells in a per-thread cache of up to
/// `min(kThreadCacheSize, max_size)` shells, without atomics or locks; the cache trades half its shells with a
/// mutex-protected shared list of at most `max_size` shells when it runs empty or full. A thread caches shells for one
/// pool at a time (the last it used). Shells beyond those bounds are freed.
///
/// What it saves is the metadata vector's allocation and nothing else: a `Message` is a 64-byte
/// value whose construction allocates nothing but that vector (and metadata strings longer than
/// the small-string buffer, which are not reused). See docs/batching.md for measurements.
///
/// Thread safety: every member may be called from any thread.
class MessagePool {
 public:
  /// Most shells one thread caches.
  static constexpr std::size_t kThreadCacheSize = 32;

  /// A pool that keeps at most `max_size` shells in its shared list.
  explicit MessagePool(std::size_t max_size)
      : id_(detail::pool::next_pool_id.fetch_add(1, std::memory_order_relaxed)),
        max_size_(max_size),
        cache_limit_(std::min(kThreadCacheSize, max_size)) {
    shared_.reserve(std::min<std::size_t>(max_size, 1024));
  }

  MessagePool(const MessagePool&) = delete;
  MessagePool& operator=(const MessagePool&) = delete;

  /// Releases the calling thread's cache if it holds this pool's shells (other threads free
  /// theirs when they next use a pool, or at exit).
  ~MessagePool() {
    auto& cache = detail::pool::thread_cache();
    if (cache.owner == id_) {
      cache.shells.clear();
      cache.owner = 0;
    }
  }

  /// A message carrying `payload`, with a new random id and no metadata.
  [[nodiscard]] Message get_message(Bytes payload) {
    if (cache_limit_ == 0) return Message(std::move(payload));
    auto& cache = local_cache();
    if (cache.shells.empty()) refill(cache);
    if (cache.shells.empty()) return Message(std::move(payload));
    Message m = std::move(cache.shells.back());
    cache.shells.pop_back();
    m.uuid = Uuid::new_v4();
    m.payload = std::move(payload);
    return m;
  }

  /// Keeps `message`'s shell for reuse: its payload is released now, its metadata cleared.
  void return_message(Message&& message) {
    message.payload = Bytes();
    message.metadata.clear();
    if (cache_limit_ == 0) return;
    auto& cache = local_cache();
    if (cache.shells.size() >= cache_limit_) spill(cache);
    cache.shells.push_back(std::move(message));
  }

  /// Shells in the shared list (not counting thread caches).
  [[nodiscard]] std::size_t size() const {
    const std::lock_guard lock(mutex_);
    return shared_.size();
  }

  /// Shells in the calling thread's cache for this pool.
  [[nodiscard]] std::size_t thread_cached() const {
    const auto& cache = detail::pool::thread_cache();
    return cache.owner == id_ ? cache.shells.size() : 0;
  }

  [[nodiscard]] std::size_t max_size() const noexcept { return max_size_; }

 private:
  /// The calling thread's cache, switched to this pool if it held another pool's shells.
  detail::pool::ThreadCache& local_cache() {
    auto& cache = detail::pool::thread_cache();
    if (cache.owner != id_) [[unlikely]] {
      cache.shells.clear();
      cache.shells.reserve(kThreadCacheSize);
      cache.owner = id_;
    }
    return cache;
  }

  /// Moves up to half a cache of shells from the shared list into `cache`.
  void refill(detail::pool::ThreadCache& cache) {
    const std::lock_guard lock(mutex_);
    const std::size_t n = std::min(half_cache(), shared_.size());
    const auto first = shared_.end() - static_cast<std::ptrdiff_t>(n);
    cache.shells.insert(cache.shells.end(), std::make_move_iterator(first), std::make_move_iterator(shared_.end()));
    shared_.erase(first, shared_.end());
  }

  /// Moves half of a full cache to the shared list; what does not fit is freed.
  void spill(detail::pool::ThreadCache& cache) {
    const std::size_t n = std::min(half_cache(), cache.shells.size());
    const auto first = cache.shells.end() - static_cast<std::ptrdiff_t>(n);
    {
      const std::lock_guard lock(mutex_);
      const std::size_t room = max_size_ - std::min(max_size_, shared_.size());
      const std::size_t keep = std::min(room, n);
      shared_.insert(shared_.end(), std::make_move_iterator(first),
                     std::make_move_iterator(first + static_cast<std::ptrdiff_t>(keep)));
    }
    cache.shells.erase(first, cache.shells.end());
  }

  [[nodiscard]] std::size_t half_cache() const noexcept { return cache_limit_ > 1 ? cache_limit_ / 2 : 1; }

  const std::uint64_t id_;
  const std::size_t max_size_;
  const std::size_t cache_limit_;  // min(kThreadCacheSize, max_size_)
  mutable std::mutex mutex_;
  std::vector<Message> shared_;
};

}  // namespace kincir
