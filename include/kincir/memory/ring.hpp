/// @file
/// `kincir::memory::BroadcastRing`: the bounded, lock-free, multi-producer ring under the in-memory
/// broker. Every cursor sees every element published after it joined; the readers of one
/// `GroupCursor` share it, and each element then goes to exactly one of them.
///
/// Design, memory orders and measurements: docs/ring.md.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>
#include <kincir/memory/detail/ring_storage.hpp>
#include <kincir/memory/detail/wait.hpp>

#include <algorithm>     // std::min, std::max
#include <atomic>        // std::atomic, std::atomic_thread_fence
#include <bit>           // std::bit_ceil, std::has_single_bit, std::countr_zero
#include <chrono>        // deadlines
#include <cstddef>       // std::size_t, std::byte
#include <cstdint>       // std::uint32_t, std::uint64_t
#include <iterator>      // std::random_access_iterator, std::iter_value_t
#include <memory>        // std::allocator, std::allocator_traits, std::addressof
#include <mutex>         // std::mutex (joins, leaves, block retirement)
#include <new>           // placement new, std::launder
#include <optional>      // results of the wait loop
#include <system_error>  // std::error_code
#include <thread>        // std::this_thread::yield
#include <type_traits>   // element and allocator checks
#include <utility>       // std::move, std::exchange, std::as_const

namespace kincir::memory {

/// What a producer does when the slowest cursor is `capacity` elements behind.
enum class FullPolicy {
  block,     ///< Wait (wait strategy) for room or for `close()`; nothing is ever lost.
  fail,      ///< Return `PublishStatus::full`; nothing of the batch is published.
  overtake,  ///< Push lagging cursors forward; they skip what they missed and count it in `lost()`.
};

/// Who may publish.
enum class ProducerMode {
  multi,   ///< Any number of threads; a batch costs one atomic read-modify-write on the tail.
  single,  ///< One thread at a time; publishing does no read-modify-write at all.
};

/// How readers (and producers blocked on a full ring) wait: spin, then yield, then park.
struct WaitStrategy {
  std::uint32_t spin_iterations = 64;   ///< Checks separated by a pause instruction.
  std::uint32_t yield_iterations = 16;  ///< Checks separated by `std::this_thread::yield()`.
};

/// Construction options of a `BroadcastRing`.
struct RingOptions {
  /// Max backlog in elements; rounded up to a power of two. Memory follows the backlog, not this.
  std::size_t capacity = std::size_t{1} << 16;
  std::size_t block_size = 256;  ///< Slots per block; a power of two, at most `capacity`.
  FullPolicy full_policy = FullPolicy::block;
  ProducerMode producer_mode = ProducerMode::multi;
  WaitStrategy wait{};
};

/// Result of a publish.
enum class PublishStatus {
  ok,       ///< Everything was published.
  full,     ///< `FullPolicy::fail` only: the ring had no room; nothing of the batch was published.
  closed,   ///< The ring is closed; nothing (of this piece, see `publish`) was published.
  timeout,  ///< `publish_until` ran out of time waiting for room; nothing (of this piece) was published.
};

/// Result of a reader's wait.
enum class WaitStatus {
  ready,    ///< An element is available (for a group: was available; another member may take it).
  timeout,  ///< The deadline passed first.
  closed,   ///< The ring is closed and this cursor has read everything that was published.
};

/// A bounded, lock-free ring in which every cursor sees every element.
///
/// - Producers claim a batch of slots at once, move the elements in and publish each slot with a
///   release store of its sequence. Any thread may publish (`ProducerMode::multi`), or one thread
///   at a time without any read-modify-write (`ProducerMode::single`).
/// - A `Cursor` is one reader and sees every element published after it joined. A `GroupCursor`
///   is shared: its readers may call it concurrently and each element goes to one of them.
/// - Each element is read by every cursor (a group counts as one); the last reader moves it out,
///   the others copy it. A consumed slot holds nothing alive.
/// - Slots live in blocks of `block_size`, allocated when first written and recycled when every
///   cursor has passed them; the table of blocks follows the backlog. An idle ring costs a few
///   kilobytes and at most a few blocks, whatever its capacity.
///
/// Thread safety: the ring's members may be called concurrently from any thread, except that
/// with `ProducerMode::single` only one thread at a time may publish. The ring must outlive its
/// cursors (destroy or `reset()` them first); destroying the ring destroys the elements it holds.
///
/// `T` must be nothrow move constructible; reading into an `out` also needs it copy assignable
/// (a copy is made for every cursor but the last).
template <class T, class Allocator = std::allocator<T>>
class BroadcastRing {
  static_assert(std::is_nothrow_move_constructible_v<T>,
                "elements are moved into slots in the middle of a claimed batch, which cannot be undone");
  static_assert(std::is_nothrow_destructible_v<T>, "elements are destroyed on paths that cannot report errors");
  static_assert(std::is_same_v<typename std::allocator_traits<Allocator>::value_type, T>,
                "the allocator must allocate T (it is rebound for blocks and bookkeeping)");

  // Trivially copyable and destructible elements need no per-slot countdown: nothing is destroyed
  // and a copy costs what a move costs.
  static constexpr bool kCounted = !(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>);
  using Slot = detail::RingSlot<T, kCounted>;
  using Table = detail::BlockTable<Slot>;
  using Entry = typename Table::Entry;
  using State = detail::CursorState;
  using Chunk = detail::CursorChunk;
  using Departed = detail::DepartedCursor;
  using Phase = detail::CursorPhase;
  using Clock = detail::WaitClock;
  using Traits = std::allocator_traits<Allocator>;
  using LineAlloc = typename Traits::template rebind_alloc<detail::CacheLine>;
  using LineTraits = std::allocator_traits<LineAlloc>;
  using ChunkAlloc = typename Traits::template rebind_alloc<Chunk>;
  using ChunkTraits = std::allocator_traits<ChunkAlloc>;
  using DepartedAlloc = typename Traits::template rebind_alloc<Departed>;
  using DepartedTraits = std::allocator_traits<DepartedAlloc>;

  static_assert(alignof(Slot) <= kCacheLineSize, "blocks are arrays of cache lines; a slot may not need more");
  static_assert(std::is_trivially_destructible_v<Slot>, "blocks are freed without running slot destructors");
  static_assert(std::is_trivially_destructible_v<Entry>, "tables are freed without running entry destructors");
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "sequences must be lock-free atomics");
  static_assert(std::is_pointer_v<typename LineTraits::pointer>, "blocks are addressed through raw pointers");
  static_assert(std::is_pointer_v<typename ChunkTraits::pointer> && std::is_pointer_v<typename DepartedTraits::pointer>,
                "registry entries are addressed through raw pointers");

  static constexpr std::uint64_t kNone = detail::kNoSequence;
  static constexpr std::size_t kSpareBlocks =
      2;  // recycled blocks kept for the producer: steady traffic allocates nothing
  static constexpr std::size_t kSmallTable = 64;  // entries of a new table (1 KiB; 64 live blocks)

  /// What a single-reader cursor keeps to itself.
  struct Reader {
    State* state = nullptr;
    std::uint64_t pos = 0;
    std::uint32_t join = 0;
    bool shared = false;           // reads claim ranges like a group (cursors of an overtaking ring)
    std::uint64_t tail_cache = 0;  // copy of the tail: slots at or above it are not looked at
    std::uint64_t block_number = kNone;
    Slot* block = nullptr;
  };

 public:
  using value_type = T;
  using allocator_type = Allocator;

  class Cursor;
  class GroupCursor;

  /// Largest capacity `normalize` accepts. Memory does not depend on the capacity: it follows the
  /// backlog (see docs/ring.md), so this only keeps sequence arithmetic far from overflowing.
  static constexpr std::size_t kMaxCapacity = std::size_t{1} << 62;

  /// Checks `options` and returns them with the capacity rounded up to a power of two. Sets `ec`
  /// to `errc::invalid_argument` (and returns `options` unchanged) if they cannot be used:
  /// capacity 0 or above `kMaxCapacity` (2^62), block size 0 or not a power of two, capacity below
  /// block size.
  static RingOptions normalize(RingOptions options, std::error_code& ec) noexcept {
    ec.clear();
    if (options.capacity == 0 || options.capacity > kMaxCapacity || options.block_size == 0 ||
        !std::has_single_bit(options.block_size) || std::bit_ceil(options.capacity) < options.block_size) {
      ec = make_error_code(errc::invalid_argument);
      return options;
    }
    options.capacity = std::bit_ceil(options.capacity);
    return options;
  }

  /// Creates an empty ring; allocates only a small block table (blocks come with the first publish,
  /// and the table grows with the backlog), whatever the capacity.
  /// @throws kincir::Error (`errc::invalid_argument`) if `normalize` rejects `options`;
  /// std::bad_alloc if the small table cannot be allocated.
  explicit BroadcastRing(RingOptions options = {}, const Allocator& alloc = Allocator())
      : alloc_(alloc), options_(checked(options)) {
    capacity_ = options_.capacity;
    block_size_ = options_.block_size;
    block_shift_ = static_cast<std::uint32_t>(std::countr_zero(block_size_));
    block_mask_ = block_size_ - 1;
    // A producer may write block b once every cursor has passed sequence b * block_size - capacity,
    // so block b - (capacity / block_size + 1) is always passed: a table that large never has a
    // live block in the way. It starts much smaller and grows only as far as the backlog needs.
    max_table_size_ = std::bit_ceil(capacity_ / block_size_ + 1);
    lines_per_block_ = (block_size_ * sizeof(Slot) + kCacheLineSize - 1) / kCacheLineSize;
    single_ = options_.producer_mode == ProducerMode::single;
    for (auto& s : spare_) s.store(nullptr, std::memory_order_relaxed);
    for (auto& p : passed_) p.store(0, std::memory_order_relaxed);
    Table* table = allocate_table(std::min(kSmallTable, max_table_size_));
    if (table == nullptr) throw std::bad_alloc();
    table_.store(table, std::memory_order_relaxed);
    table_entries_.store(table->size, std::memory_order_relaxed);
  }

  /// Destroys the elements still held and frees every block. No cursor may exist any more and no
  /// other call may be running.
  ~BroadcastRing() {
    Table* table = table_.load(std::memory_order_acquire);
    for (std::size_t i = 0; i < table->size; ++i) {
      Slot* block = table->entries()[i].slots.load(std::memory_order_acquire);
      if (block == nullptr) continue;
      if constexpr (kCounted) {
        for (std::size_t j = 0; j < block_size_; ++j) {
          if (block[j].remaining.load(std::memory_order_acquire) != 0) block[j].value().~T();
        }
      }
      deallocate_block(block);
    }
    deallocate_table(table);
    // Replaced tables only point to blocks the current one also holds, or to retired ones.
    while (Table* t = retired_tables_) {
      retired_tables_ = t->next_retired;
      deallocate_table(t);
    }
    for (auto& s : spare_) {
      if (Slot* block = s.load(std::memory_order_acquire)) deallocate_block(block);
    }
    for (Chunk* c = chunks_.load(std::memory_order_acquire); c != nullptr;) {
      Chunk* next = c->next.load(std::memory_order_relaxed);
      deallocate_chunk(c);
      c = next;
    }
    free_unlinked_chunks_locked();
    deallocate_records(departed_list_);
    deallocate_records(finished_records_);
  }

  BroadcastRing(const BroadcastRing&) = delete;
  BroadcastRing& operator=(const BroadcastRing&) = delete;
  BroadcastRing(BroadcastRing&&) = delete;
  BroadcastRing& operator=(BroadcastRing&&) = delete;

  /// A new independent cursor positioned at the current tail: it sees what is published after
  /// this call returns (and possibly elements published concurrently with it), never anything
  /// published before. @throws std::bad_alloc if the cursor registry must grow and cannot.
  Cursor add_cursor() {
    State* st = join(false);
    return Cursor(this, st);
  }

  /// A new cursor shared by several readers, positioned at the current tail. Each element
  /// published after this call goes to exactly one caller of its read functions.
  /// @throws std::bad_alloc if the cursor registry must grow and cannot.
  GroupCursor add_group_cursor() {
    State* st = join(true);
    return GroupCursor(this, st);
  }

  /// Moves every element of [first, last) into the ring. The batch is claimed at once (a piece of
  /// at most `capacity()` elements at a time when it is larger).
  /// - `FullPolicy::block`: waits (wait strategy) until there is room or the ring is closed.
  /// - `FullPolicy::fail`: publishes all of the batch or nothing (`full`; always `full` for a batch
  ///   larger than the capacity).
  /// - `FullPolicy::overtake`: never waits for readers; lagging cursors are pushed forward.
  /// With no cursor at all the elements are counted as published, left unmoved and dropped.
  /// A `closed` or `timeout` result after the first piece means the earlier pieces were published.
  /// Never throws: if memory for a block (or a larger block table) cannot be allocated once slots
  /// are claimed, the producer waits and tries again (memory returns as cursors read).
  template <std::random_access_iterator It>
  PublishStatus publish(It first, It last) {
    return publish_impl(first, last, detail::kNoDeadline);
  }

  /// Publishes one element (no read-modify-write in single-producer mode, and no system call
  /// unless a reader is parked).
  PublishStatus publish(T&& value) {
    T* p = std::addressof(value);
    return publish_impl(p, p + 1, detail::kNoDeadline);
  }

  /// As `publish`, but with `FullPolicy::block` waits for room only until `deadline`
  /// (`PublishStatus::timeout`, nothing of the waiting piece published).
  template <std::random_access_iterator It, class WaitClock, class Duration>
  PublishStatus publish_until(It first, It last, std::chrono::time_point<WaitClock, Duration> deadline) {
    return publish_impl(first, last, detail::to_wait_clock(deadline));
  }

  /// One element with a deadline.
  template <class WaitClock, class Duration>
  PublishStatus publish_until(T&& value, std::chrono::time_point<WaitClock, Duration> deadline) {
    T* p = std::addressof(value);
    return publish_impl(p, p + 1, detail::to_wait_clock(deadline));
  }

  /// Closes the ring and wakes every waiter. Producers then get `closed`; readers still drain what
  /// was published, then their waits return `WaitStatus::closed`. A publish running concurrently
  /// with `close()` may still succeed.
  void close() noexcept {
    closed_.store(true, std::memory_order_seq_cst);
    signal(data_signal_);
    signal(space_signal_);
  }

  /// True once `close()` was called.
  [[nodiscard]] bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }

  /// Independent cursors plus group cursors.
  [[nodiscard]] std::size_t cursor_count() const noexcept { return count_of(members_.load(std::memory_order_acquire)); }

  /// Sequence of the next element to be claimed (the number of elements claimed so far).
  [[nodiscard]] std::uint64_t tail() const noexcept { return claim_.load(std::memory_order_acquire); }

  /// Maximum backlog in elements (a power of two).
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

  /// Slots per block.
  [[nodiscard]] std::size_t block_size() const noexcept { return block_size_; }

  /// Blocks allocated now (in use plus kept for reuse).
  [[nodiscard]] std::size_t allocated_blocks() const noexcept {
    return allocated_blocks_.load(std::memory_order_relaxed);
  }

  /// Entries of the block table now (it follows the number of live blocks; for statistics).
  [[nodiscard]] std::size_t table_size() const noexcept { return table_entries_.load(std::memory_order_relaxed); }

  /// Cursors that have left but still owe their share of elements that were being written when
  /// they left (for statistics and tests). Each is released as soon as those elements are published.
  [[nodiscard]] std::size_t departed_cursors() const noexcept { return departed_.load(std::memory_order_acquire); }

  /// The options in effect (capacity rounded).
  [[nodiscard]] const RingOptions& options() const noexcept { return options_; }

  /// Every cursor skips what was claimed before this call; the skipped elements are destroyed as
  /// each cursor passes them (on its next read or wait). Safe concurrently with everything.
  void clear() noexcept {
    const std::uint64_t t = claim_.load(std::memory_order_acquire);
    std::uint64_t f = clear_floor_.load(std::memory_order_relaxed);
    while (f < t && !clear_floor_.compare_exchange_weak(f, t, std::memory_order_release, std::memory_order_relaxed)) {
    }
  }

 private:
  // ---------------------------------------------------------------------------------------------
  // Helpers

  static RingOptions checked(const RingOptions& options) {
    std::error_code ec;
    RingOptions normalized = normalize(options, ec);
    throw_if(ec, "BroadcastRing options");
    return normalized;
  }

  static constexpr std::uint64_t make_members(std::uint32_t epoch, std::uint32_t count) noexcept {
    return (static_cast<std::uint64_t>(epoch) << 32) | count;
  }
  static constexpr std::uint32_t epoch_of(std::uint64_t members) noexcept {
    return static_cast<std::uint32_t>(members >> 32);
  }
  static constexpr std::uint32_t count_of(std::uint64_t members) noexcept {
    return static_cast<std::uint32_t>(members);
  }
  /// Epochs compare modulo 2^32 (serial-number arithmetic).
  static constexpr bool tag_at_least(std::uint32_t tag, std::uint32_t epoch) noexcept {
    return static_cast<std::int32_t>(tag - epoch) >= 0;
  }
  /// Was `slot` counted for a cursor that joined at `join`? (Elements not counted are skipped.)
  static bool counted_for(const Slot& slot, std::uint32_t join) noexcept {
    if constexpr (kCounted) {
      return tag_at_least(slot.tag, join);
    } else {
      (void)slot;
      (void)join;
      return true;
    }
  }

  /// How far ahead of the element they deliver readers prefetch (see `detail::RingPrefetchable`).
  static constexpr std::uint64_t kPrefetchAhead = 8;

  /// A reader at `slot` (sequence `seq`, in a run of one block that ends before `run_end`) hints the
  /// element `kPrefetchAhead` slots on. Only an element that is published and counted for this
  /// reader is looked at: it stays alive until this reader gives up its share, and meanwhile other
  /// readers only copy it, so reading it races with nothing.
  static void prefetch_ahead(Slot* slot, std::uint64_t seq, std::uint64_t run_end, std::uint32_t join) noexcept {
    if constexpr (detail::RingPrefetchable<T>) {
      if (seq + kPrefetchAhead >= run_end) return;
      Slot& ahead = slot[kPrefetchAhead];
      // acquire: pairs with the producer's release store of `seq`, which publishes the element.
      if (ahead.seq.load(std::memory_order_acquire) != seq + kPrefetchAhead + 1 || !counted_for(ahead, join)) return;
      ring_prefetch(std::as_const(ahead.value()));
    } else {
      (void)slot;
      (void)seq;
      (void)run_end;
      (void)join;
    }
  }

  static void backoff(std::uint32_t attempt) noexcept {
    if (attempt < 64) {
      detail::cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }

  static void signal(std::atomic<std::uint32_t>& word) noexcept {
    word.fetch_add(1, std::memory_order_release);
    detail::wake_all(word);
  }

  /// After publishing: wake parked readers, if any; have departed cursors released if any wait
  /// (see `leave`). The (light) fence orders the slot stores before these checks; a parking reader
  /// (or a departing cursor) stores its side, issues the heavy fence, then looks at the slots
  /// again: one of the two sees the other.
  void after_publish() noexcept {
    detail::light_fence();
    if (data_waiters_.load(std::memory_order_relaxed) != 0) signal(data_signal_);
    if constexpr (kCounted) {
      if (departed_.load(std::memory_order_relaxed) != 0) request_maintenance();
    }
  }

  /// After a cursor moved: wake producers parked on a full ring, if any (same handshake).
  void notify_producers() noexcept {
    if (options_.full_policy != FullPolicy::block) return;
    detail::light_fence();
    if (space_waiters_.load(std::memory_order_relaxed) != 0) signal(space_signal_);
  }

  /// Runs the wait strategy until `check()` returns a value: spin, yield, then park on `word`
  /// (counted in `waiters`, so the other side knows to wake it). Returns an empty optional if the
  /// deadline passed first.
  template <class Check>
  auto await(std::atomic<std::uint32_t>& waiters, std::atomic<std::uint32_t>& word, Clock::time_point deadline,
             Check&& check) -> decltype(check()) {
    const WaitStrategy& ws = options_.wait;
    for (std::uint32_t i = 0; i < ws.spin_iterations; ++i) {
      if (auto r = check()) return r;
      detail::cpu_relax();
    }
    const bool timed = deadline != detail::kNoDeadline;
    for (std::uint32_t i = 0; i < ws.yield_iterations; ++i) {
      if (auto r = check()) return r;
      if (timed && Clock::now() >= deadline) return check();
      std::this_thread::yield();
    }
    for (;;) {
      waiters.fetch_add(1, std::memory_order_seq_cst);
      detail::heavy_fence();
      const std::uint32_t seen = word.load(std::memory_order_acquire);
      auto r = check();
      bool in_time = true;
      if (!r) in_time = detail::park_until(word, seen, deadline);
      waiters.fetch_sub(1, std::memory_order_relaxed);
      if (r) return r;
      if (!in_time) return check();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // The registry lock. Whoever releases it runs the maintenance other threads asked for while it
  // was held (`request_maintenance`), so a request is never lost and no data path waits for it.

  class RegistryLock {
   public:
    explicit RegistryLock(BroadcastRing& ring) : ring_(ring), owns_(true) { ring.registry_mutex_.lock(); }
    RegistryLock(BroadcastRing& ring, std::try_to_lock_t) noexcept
        : ring_(ring), owns_(ring.registry_mutex_.try_lock()) {}
    RegistryLock(const RegistryLock&) = delete;
    RegistryLock& operator=(const RegistryLock&) = delete;
    ~RegistryLock() {
      if (!owns_) return;
      Departed* finished = std::exchange(ring_.finished_records_, nullptr);
      ring_.registry_mutex_.unlock();
      ring_.deallocate_records(finished);
      ring_.run_requested_maintenance();
    }
    [[nodiscard]] bool owns_lock() const noexcept { return owns_; }

   private:
    BroadcastRing& ring_;
    bool owns_;
  };

  /// Asks for `maintain_locked` (release departed cursors, retire blocks, resize the table, free
  /// what waits to be freed): now if the registry is free, else by the thread that holds it.
  void request_maintenance() noexcept {
    maintenance_requested_.store(true, std::memory_order_seq_cst);
    run_requested_maintenance();
  }

  /// The requester stores its request, then tries the lock; a holder unlocks, then looks for
  /// requests. The fences make sure one of the two sees the other.
  void run_requested_maintenance() noexcept {
    for (;;) {
      detail::full_fence();
      if (!maintenance_requested_.load(std::memory_order_acquire)) return;
      if (!registry_mutex_.try_lock()) return;  // the holder runs it after unlocking
      maintenance_requested_.store(false, std::memory_order_relaxed);
      const bool drained = maintain_locked();
      Departed* finished = std::exchange(finished_records_, nullptr);
      registry_mutex_.unlock();
      deallocate_records(finished);
      if (drained) notify_producers();  // a departed cursor's frontier moved
    }
  }

  /// Blocks every cursor has passed may be retired. Never waits: another thread may hold the
  /// registry, and then retires them when it lets go.
  void try_retire() noexcept { request_maintenance(); }

  /// Registry scans by producers that do not hold the registry lock (rescans, overtaking): a chunk
  /// unlinked meanwhile is freed only once no scan is running.
  class ScanGuard {
   public:
    explicit ScanGuard(BroadcastRing& ring) noexcept : scanners_(ring.scanners_) {
      scanners_.fetch_add(1, std::memory_order_seq_cst);
    }
    ScanGuard(const ScanGuard&) = delete;
    ScanGuard& operator=(const ScanGuard&) = delete;
    ~ScanGuard() { scanners_.fetch_sub(1, std::memory_order_release); }

   private:
    std::atomic<std::uint32_t>& scanners_;
  };

  // ---------------------------------------------------------------------------------------------
  // Blocks

  Slot* allocate_block() noexcept {
    try {
      LineAlloc a(alloc_);
      detail::CacheLine* lines = LineTraits::allocate(a, lines_per_block_);
      auto* bytes = reinterpret_cast<std::byte*>(lines);
      // Default-initialised, not value-initialised: the header (`seq` 0: nothing published) is
      // set, the element storage is left alone (zeroing it doubled the writes of a fresh block).
      for (std::size_t i = 0; i < block_size_; ++i) ::new (static_cast<void*>(bytes + i * sizeof(Slot))) Slot;
      allocated_blocks_.fetch_add(1, std::memory_order_relaxed);
      return std::launder(reinterpret_cast<Slot*>(bytes));
    } catch (...) {
      return nullptr;  // the producer retries: a claimed batch cannot be given back
    }
  }

  void deallocate_block(Slot* block) noexcept {
    LineAlloc a(alloc_);
    LineTraits::deallocate(a, reinterpret_cast<detail::CacheLine*>(block), lines_per_block_);
    allocated_blocks_.fetch_sub(1, std::memory_order_relaxed);
  }

  /// A recycled block if one is kept, else a new one (null if allocation failed).
  Slot* take_block() noexcept {
    for (auto& s : spare_) {
      Slot* block = s.load(std::memory_order_acquire);
      if (block == nullptr) continue;
      if (single_) {
        // Only this producer takes spares, and retirement only fills empty places.
        s.store(nullptr, std::memory_order_relaxed);
        return block;
      }
      block = s.exchange(nullptr, std::memory_order_acq_rel);
      if (block != nullptr) return block;
    }
    return allocate_block();
  }

  /// Keeps a retired block for reuse, or frees it. Called with the registry lock held.
  void recycle_block(Slot* block) noexcept {
    for (auto& s : spare_) {
      if (s.load(std::memory_order_relaxed) == nullptr) {
        s.store(block, std::memory_order_release);
        return;
      }
    }
    deallocate_block(block);
  }

  // ---------------------------------------------------------------------------------------------
  // The block table
  //
  // Lookups never lock. Entries change in three ways: a producer installs a block into a free entry
  // (inside a table section, see `enter_table`), retirement empties one (registry lock), and a
  // resize replaces the whole table (registry lock, with no table section open). A replaced table
  // stays readable until every thread that may still look into it is done (`free_tables_locked`).

  static std::size_t table_lines(std::size_t entries) noexcept {
    const std::size_t bytes = Table::bytes_for(entries);
    return bytes == 0 ? 0 : (bytes + kCacheLineSize - 1) / kCacheLineSize;
  }

  /// A table of `entries` free entries; null if it cannot be allocated.
  Table* allocate_table(std::size_t entries) noexcept {
    const std::size_t lines = table_lines(entries);
    if (lines == 0) return nullptr;
    try {
      LineAlloc a(alloc_);
      detail::CacheLine* memory = LineTraits::allocate(a, lines);
      auto* table = ::new (static_cast<void*>(memory)) Table();
      table->size = entries;
      Entry* e = table->entries();
      for (std::size_t i = 0; i < entries; ++i) ::new (static_cast<void*>(e + i)) Entry();
      return table;
    } catch (...) {
      return nullptr;
    }
  }

  void deallocate_table(Table* table) noexcept {
    const std::size_t lines = table_lines(table->size);
    table->~Table();
    LineAlloc a(alloc_);
    LineTraits::deallocate(a, reinterpret_cast<detail::CacheLine*>(table), lines);
  }

  /// The installed block with number `b`, or null (not installed yet, or installed in a newer table
  /// this thread does not see yet: callers look again later). The caller guarantees the block is not
  /// retired under it (its position, or an announced claim, is at or below it) and that it looks only
  /// at claimed sequences (below a tail it has read), which keeps a replaced table alive for it.
  Slot* lookup_block(std::uint64_t b) const noexcept {
    const Table* t = table_.load(std::memory_order_seq_cst);
    const Entry& e = t->at(b);
    if (e.number.load(std::memory_order_acquire) != b) return nullptr;
    return e.slots.load(std::memory_order_acquire);
  }

  /// The slot of `seq` for a reader, through its cached block; null if that block is not installed
  /// (then nothing in it is published). Same guarantees as `lookup_block`.
  Slot* find_slot(std::uint64_t seq, std::uint64_t& block_number, Slot*& block) const noexcept {
    const std::uint64_t b = seq >> block_shift_;
    if (b != block_number) {
      Slot* p = lookup_block(b);
      if (p == nullptr) return nullptr;
      block_number = b;
      block = p;
    }
    return &block[seq & block_mask_];
  }

  bool published(std::uint64_t seq, std::uint64_t& block_number, Slot*& block) const noexcept {
    const Slot* slot = find_slot(seq, block_number, block);
    return slot != nullptr && slot->seq.load(std::memory_order_acquire) == seq + 1;
  }

  /// Opens a table section: no resize runs until `leave_table`. False (nothing opened) while a
  /// resize runs. Multi-producer rings open one only to install a block (a read-modify-write once
  /// per block); the single producer for every table access, with a store and a light fence that
  /// pair with the resizer's heavy fence.
  bool enter_table() noexcept {
    if (single_) {
      sp_in_table_.store(1, std::memory_order_relaxed);
      detail::light_fence();
      if (!resizing_.load(std::memory_order_relaxed)) return true;
      sp_in_table_.store(0, std::memory_order_release);
      return false;
    }
    installers_.fetch_add(1, std::memory_order_seq_cst);
    if (!resizing_.load(std::memory_order_seq_cst)) return true;
    installers_.fetch_sub(1, std::memory_order_release);
    return false;
  }

  void leave_table() noexcept {
    if (single_) {
      sp_in_table_.store(0, std::memory_order_release);
    } else {
      installers_.fetch_sub(1, std::memory_order_release);
    }
  }

  /// The block a producer writes block number `b` into: found, or installed into its free entry.
  /// When another block is in the entry, retires it if every cursor has passed it, or grows the
  /// table if it is still live. Allocation happens outside the table section; failures are retried.
  Slot* block_for_write(std::uint64_t b) noexcept {
    Slot* fresh = nullptr;
    for (std::uint32_t attempt = 0;; ++attempt) {
      if (!single_) {
        if (Slot* p = lookup_block(b)) {  // installed already (by another producer)
          if (fresh != nullptr) deallocate_block(fresh);
          return p;
        }
      }
      if (!enter_table()) {
        backoff(attempt);  // a resize runs
        continue;
      }
      Entry& e = table_.load(std::memory_order_seq_cst)->at(b);
      Slot* p = e.slots.load(std::memory_order_acquire);
      if (p != nullptr) {
        const std::uint64_t n = e.number.load(std::memory_order_acquire);
        leave_table();
        if (n == b) {
          if (fresh != nullptr) deallocate_block(fresh);
          return p;
        }
        if (n < retired_blocks_.load(std::memory_order_acquire)) {
          backoff(attempt);  // another producer is installing a block here (its number comes next)
        } else {
          resolve_collision(b, attempt);
        }
        continue;
      }
      if (fresh == nullptr) {
        leave_table();
        fresh = take_block();
        if (fresh == nullptr) backoff(attempt);  // no memory now; readers free blocks as they go
        continue;
      }
      if (single_) {
        e.slots.store(fresh, std::memory_order_relaxed);
        e.number.store(b, std::memory_order_release);
        leave_table();
        return fresh;
      }
      Slot* expected = nullptr;
      if (e.slots.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel, std::memory_order_acquire)) {
        e.number.store(b, std::memory_order_release);
        leave_table();
        return fresh;
      }
      leave_table();  // another producer installed one first: look again
    }
  }

  /// The entry of block `b` holds a block that was not retired. Retires what every cursor has
  /// passed; if a live block is still in the way, grows the table (up to the size at which the gate
  /// guarantees the block in the way has been passed).
  void resolve_collision(std::uint64_t b, std::uint32_t attempt) noexcept {
    bool at_largest = false;
    {
      RegistryLock lock(*this);
      maintain_locked();
      Table* t = table_.load(std::memory_order_relaxed);
      const Entry& e = t->at(b);
      const std::uint64_t n = e.number.load(std::memory_order_acquire);
      if (e.slots.load(std::memory_order_acquire) == nullptr || n == b) return;  // free now
      if (n >= retired_blocks_.load(std::memory_order_relaxed)) {
        if (t->size < max_table_size_) {
          if (grow_locked(b)) return;
        } else {
          at_largest = true;
        }
      }
    }
    // At the largest size the block in the way has been passed by every cursor (the gate says so)
    // and is retired as soon as its last reader lets go of the registry. Overtaking rings also push
    // a cursor that joined behind the gate (while earlier claims of a cursor-less ring were still
    // being written).
    if (at_largest && attempt > 64 && options_.full_policy == FullPolicy::overtake && b >= max_table_size_) {
      make_room(((b - max_table_size_ + 1) << block_shift_) + capacity_);
    }
    backoff(attempt);
  }

  /// Entries for `blocks` live blocks: a power of two, from the small size up to the largest.
  std::size_t table_size_for(std::uint64_t blocks) const noexcept {
    const std::size_t smallest = std::min(kSmallTable, max_table_size_);
    if (blocks >= max_table_size_) return max_table_size_;
    return std::max<std::size_t>(smallest, std::bit_ceil(blocks));
  }

  /// Highest sequence a producer may be writing now, plus one (claimed, or the single producer's
  /// batch in progress).
  std::uint64_t claimed_end() const noexcept {
    return single_ ? sp_next_.load(std::memory_order_acquire) : claim_.load(std::memory_order_seq_cst);
  }

  /// Registry lock held: a table large enough for every block from the oldest live one up to `b`
  /// (and whatever is claimed), at least twice the current one.
  bool grow_locked(std::uint64_t b) noexcept {
    const std::uint64_t retired = retired_blocks_.load(std::memory_order_relaxed);
    const std::uint64_t end = claimed_end();
    const std::uint64_t top = std::max(b, end == 0 ? 0 : (end - 1) >> block_shift_);
    const std::uint64_t live = top >= retired ? top - retired + 1 : 1;
    const std::size_t current = table_.load(std::memory_order_relaxed)->size;
    const std::size_t target = std::max(table_size_for(live), std::min(current * 2, max_table_size_));
    return resize_locked(target, /*wait=*/true);
  }

  /// Registry lock held: once the backlog has gone, a table at least four times larger than the
  /// live blocks need is replaced by one twice as large as they need (or the small one).
  void shrink_locked() noexcept {
    const std::size_t current = table_.load(std::memory_order_relaxed)->size;
    if (current <= std::min(kSmallTable, max_table_size_)) return;
    const std::uint64_t retired = retired_blocks_.load(std::memory_order_relaxed);
    const std::uint64_t end = claimed_end();
    const std::uint64_t top = end == 0 ? 0 : (end - 1) >> block_shift_;
    const std::uint64_t live = top >= retired ? top - retired + 1 : 1;
    if (live > current / 4) return;
    (void)resize_locked(table_size_for(live * 2), /*wait=*/false);
  }

  /// Registry lock held: replaces the table by one of `entries` entries holding the same blocks.
  /// With `wait`, waits for open table sections (they are short and never wait for the registry);
  /// without, gives up if one is open. False if it gave up, if the new table cannot be allocated, or
  /// if the live blocks would not fit in it (more were installed since the size was chosen: the
  /// caller looks again).
  bool resize_locked(std::size_t entries, bool wait) noexcept {
    Table* fresh = allocate_table(entries);
    if (fresh == nullptr) return false;
    resizing_.store(true, std::memory_order_seq_cst);
    if (single_) detail::heavy_fence();  // pairs with the single producer's light fence in enter_table
    for (std::uint32_t attempt = 0;
         single_ ? sp_in_table_.load(std::memory_order_acquire) != 0 : installers_.load(std::memory_order_seq_cst) != 0;
         ++attempt) {
      if (!wait) {
        resizing_.store(false, std::memory_order_release);
        deallocate_table(fresh);
        return false;
      }
      backoff(attempt);
    }
    Table* old = table_.load(std::memory_order_relaxed);
    bool fits = true;
    for (std::size_t i = 0; i < old->size && fits; ++i) {
      const Entry& from = old->entries()[i];
      Slot* block = from.slots.load(std::memory_order_acquire);
      if (block == nullptr) continue;
      const std::uint64_t n = from.number.load(std::memory_order_acquire);
      Entry& to = fresh->at(n);
      if (to.slots.load(std::memory_order_relaxed) != nullptr) {
        fits = false;
        break;
      }
      to.slots.store(block, std::memory_order_relaxed);
      to.number.store(n, std::memory_order_relaxed);
    }
    if (!fits) {
      resizing_.store(false, std::memory_order_release);
      deallocate_table(fresh);
      return false;
    }
    table_.store(fresh, std::memory_order_seq_cst);
    table_entries_.store(fresh->size, std::memory_order_relaxed);
    // Threads that still look into the old table look at sequences below the tail read now.
    old->retire_tail = claim_.load(std::memory_order_seq_cst);
    resizing_.store(false, std::memory_order_release);
    old->next_retired = retired_tables_;
    retired_tables_ = old;
    pending_table_tail_.store(std::min(pending_table_tail_.load(std::memory_order_relaxed), old->retire_tail),
                              std::memory_order_relaxed);
    return true;
  }

  /// Registry lock held: frees the replaced tables no thread can still look into. A thread looking
  /// into a table replaced when the tail was R looks at a sequence below R with its frontier at or
  /// below it (cursors, overtaking producers), or writes an unpublished slot below R (producers; the
  /// single producer only looks inside a table section, which the resize waited for). So once every
  /// frontier is at or past R, or with no cursor every slot below R is published, nobody can.
  void free_tables_locked() noexcept {
    if (retired_tables_ == nullptr) return;
    std::uint64_t floor = min_frontier_locked();
    if (floor == kNone) {
      std::uint64_t highest = 0;
      for (Table* t = retired_tables_; t != nullptr; t = t->next_retired) highest = std::max(highest, t->retire_tail);
      floor = retired_blocks_.load(std::memory_order_relaxed) << block_shift_;
      std::uint64_t block_number = kNone;
      Slot* block = nullptr;
      while (floor < highest && published(floor, block_number, block)) ++floor;
    }
    std::uint64_t pending = kNone;
    for (Table** link = &retired_tables_; *link != nullptr;) {
      Table* t = *link;
      if (t->retire_tail <= floor) {
        *link = t->next_retired;
        deallocate_table(t);
      } else {
        pending = std::min(pending, t->retire_tail);
        link = &t->next_retired;
      }
    }
    pending_table_tail_.store(pending, std::memory_order_relaxed);
  }

  // ---------------------------------------------------------------------------------------------
  // Registry: joins, leaves, departed cursors, frontiers, retirement

  /// The lowest sequence a cursor may still touch: its position, or an announced claim below it.
  static std::uint64_t frontier(const State& st) noexcept {
    std::uint64_t f = st.head.load(std::memory_order_seq_cst);
    if (st.shared.load(std::memory_order_relaxed)) {
      for (const auto& c : st.claims) f = std::min(f, c.load(std::memory_order_seq_cst));
    }
    return f;
  }

  /// Every registry entry. Without the registry lock, only inside a `ScanGuard`.
  template <class Fn>
  void for_each_state(Fn&& fn) const noexcept {
    for (Chunk* c = chunks_.load(std::memory_order_seq_cst); c != nullptr;
         c = c->next.load(std::memory_order_seq_cst)) {
      for (State& st : c->states) fn(st);
    }
  }

  /// Minimum frontier of every registered cursor and departed cursor, `kNone` if there is none.
  /// Entries first: a departing cursor's record gates before its entry stops gating.
  std::uint64_t min_frontier_locked() const noexcept {
    std::uint64_t m = kNone;
    for_each_state([&](const State& st) {
      if (st.phase.load(std::memory_order_seq_cst) != Phase::free) m = std::min(m, frontier(st));
    });
    return std::min(m, departed_floor_.load(std::memory_order_seq_cst));
  }

  /// The same without the registry lock (producers).
  std::uint64_t min_frontier() noexcept {
    ScanGuard guard(*this);
    return min_frontier_locked();
  }

  State* free_state_locked() {
    Chunk* last = nullptr;
    for (Chunk* c = chunks_.load(std::memory_order_relaxed); c != nullptr;
         c = c->next.load(std::memory_order_relaxed)) {
      for (State& st : c->states) {
        if (st.phase.load(std::memory_order_relaxed) == Phase::free) return &st;
      }
      last = c;
    }
    ChunkAlloc a(alloc_);
    Chunk* c = ChunkTraits::allocate(a, 1);
    ChunkTraits::construct(a, c);
    if (last != nullptr) {
      last->next.store(c, std::memory_order_release);
    } else {
      chunks_.store(c, std::memory_order_release);
    }
    return &c->states[0];
  }

  void deallocate_chunk(Chunk* c) noexcept {
    for (State& st : c->states) {
      if (st.record != nullptr) deallocate_record(std::exchange(st.record, nullptr));
    }
    ChunkAlloc a(alloc_);
    ChunkTraits::destroy(a, c);
    ChunkTraits::deallocate(a, c, 1);
  }

  /// Registry lock held (or the destructor): frees unlinked chunks once no scan can be inside one.
  /// A scan that started before a chunk was unlinked keeps `scanners_` above zero; one that started
  /// after cannot reach it.
  void free_unlinked_chunks_locked() noexcept {
    if (unlinked_chunks_ == nullptr || scanners_.load(std::memory_order_seq_cst) != 0) return;
    while (Chunk* c = unlinked_chunks_) {
      unlinked_chunks_ = c->unlinked_next;
      deallocate_chunk(c);
    }
  }

  /// Registry lock held: the entry is free again. If its whole chunk is free (and not the first
  /// one), the chunk is unlinked, to be freed once no producer scans the registry.
  void release_state_locked(State& st) noexcept {
    st.phase.store(Phase::free, std::memory_order_seq_cst);
    Chunk* previous = nullptr;
    Chunk* c = chunks_.load(std::memory_order_relaxed);
    while (c != nullptr && !c->holds(&st)) {
      previous = c;
      c = c->next.load(std::memory_order_relaxed);
    }
    if (c == nullptr || previous == nullptr) return;
    for (const State& other : c->states) {
      if (other.phase.load(std::memory_order_relaxed) != Phase::free) return;
    }
    previous->next.store(c->next.load(std::memory_order_relaxed), std::memory_order_seq_cst);
    c->unlinked_next = unlinked_chunks_;
    unlinked_chunks_ = c;
    free_unlinked_chunks_locked();
  }

  Departed* allocate_record() {
    DepartedAlloc a(alloc_);
    Departed* d = DepartedTraits::allocate(a, 1);
    DepartedTraits::construct(a, d);
    return d;
  }

  void deallocate_record(Departed* d) noexcept {
    DepartedAlloc a(alloc_);
    DepartedTraits::destroy(a, d);
    DepartedTraits::deallocate(a, d, 1);
  }

  /// Frees a list of records (finished ones are freed after the registry lock is released).
  void deallocate_records(Departed* d) noexcept {
    while (d != nullptr) deallocate_record(std::exchange(d, d->next));
  }

  /// Registers a cursor at the first unpublished sequence: everything before it was published
  /// before the cursor existed and was not counted for it.
  State* join(bool group) {
    RegistryLock lock(*this);
    State* st = free_state_locked();
    if constexpr (kCounted) {
      if (st->record == nullptr) st->record = allocate_record();  // so that leaving never allocates
    }
    // Everything below any frontier is published: start looking at the highest one.
    std::uint64_t start = retired_blocks_.load(std::memory_order_relaxed) << block_shift_;
    for_each_state([&](const State& other) {
      if (&other != st && other.phase.load(std::memory_order_seq_cst) != Phase::free) {
        start = std::max(start, frontier(other));
      }
    });
    std::uint64_t block_number = kNone;
    Slot* block = nullptr;
    while (published(start, block_number, block)) ++start;
    const std::uint64_t m = members_.load(std::memory_order_relaxed);
    const std::uint32_t epoch = epoch_of(m) + 1;
    st->head.store(start, std::memory_order_relaxed);
    st->lost.store(0, std::memory_order_relaxed);
    st->shared.store(group || options_.full_policy == FullPolicy::overtake, std::memory_order_relaxed);
    st->join_epoch = epoch;
    st->phase.store(Phase::active, std::memory_order_seq_cst);
    // Producers that read the new epoch count this cursor and tag their elements with it.
    members_.store(make_members(epoch, count_of(m) + 1), std::memory_order_seq_cst);
    return st;
  }

  /// Unregisters a cursor. Its entry is free (reusable) when this returns. What was counted for it
  /// is released now; if some of it is still being written, a small record keeps its share and
  /// releases it when the producer that writes it has published it.
  void leave(State* st) noexcept {
    std::uint32_t leave_epoch = 0;
    std::uint64_t drain_until = 0;
    {
      RegistryLock lock(*this);
      st->phase.store(Phase::leaving, std::memory_order_seq_cst);
      const std::uint64_t m = members_.load(std::memory_order_relaxed);
      leave_epoch = epoch_of(m) + 1;
      members_.store(make_members(leave_epoch, count_of(m) - 1), std::memory_order_seq_cst);
      // Multi-producer: a producer reads the membership after its claim, so an element counted for
      // this cursor was claimed below the tail read now.
      if (!single_) drain_until = claim_.load(std::memory_order_seq_cst);
    }
    if (st->shared.load(std::memory_order_relaxed)) {
      // Overtaking producers that announced a claim before seeing `leaving` finish first.
      for (auto& c : st->claims) {
        for (std::uint32_t attempt = 0; c.load(std::memory_order_acquire) != kNone; ++attempt) backoff(attempt);
      }
    }
    if constexpr (kCounted) {
      if (single_) {
        // The single producer stores the end of its batch (its next sequence) before it reads the
        // membership, and the tail once the batch is written. After the heavy fence, either its
        // membership read sees this cursor gone, or that end is visible here: a batch that may
        // have counted this cursor ends below the larger of the two (the tail when it is idle).
        detail::heavy_fence();
        const std::uint64_t tail = claim_.load(std::memory_order_acquire);
        drain_until = std::max(tail, sp_next_.load(std::memory_order_acquire));
      }
    }
    bool owes = false;
    {
      RegistryLock lock(*this);
      if constexpr (kCounted) owes = depart_locked(*st, leave_epoch, drain_until);
      release_state_locked(*st);
      free_tables_locked();
    }
    if (owes) {
      // The record is visible (departed_ != 0) before the slots are looked at again: either this
      // sees the batch published, or its producer sees the record after publishing (after_publish).
      detail::heavy_fence();
      RegistryLock lock(*this);
      (void)drain_departed_locked();
    }
    // If this was the slowest cursor, the blocks only it held back go now, not at the next crossing.
    request_maintenance();
    notify_producers();
  }

  /// Releases, for a departed cursor, the published elements that were counted for it, from its
  /// head on; stops at the first element still being written.
  void drain_record_locked(Departed& d) noexcept {
    std::uint64_t s = d.head;
    std::uint64_t block_number = kNone;
    Slot* block = nullptr;
    while (s < d.drain_until) {
      Slot* slot = find_slot(s, block_number, block);
      if (slot == nullptr || slot->seq.load(std::memory_order_acquire) != s + 1) break;
      if constexpr (kCounted) {
        if (!tag_at_least(slot->tag, d.leave_epoch) && tag_at_least(slot->tag, d.join_epoch)) release(*slot);
      }
      ++s;
    }
    d.head = s;
  }

  /// A leaving cursor's share: released now, or kept in its record (taken from its entry) until
  /// the elements still being written are published. True if a record was kept.
  bool depart_locked(State& st, std::uint32_t leave_epoch, std::uint64_t drain_until) noexcept {
    Departed d;
    d.head = st.head.load(std::memory_order_relaxed);
    d.drain_until = drain_until;
    d.join_epoch = st.join_epoch;
    d.leave_epoch = leave_epoch;
    drain_record_locked(d);
    if (d.head >= d.drain_until) return false;
    Departed* record = std::exchange(st.record, nullptr);  // taken at join: never null here
    *record = d;
    record->next = departed_list_;
    departed_list_ = record;
    // Gates before the entry stops gating (release_state_locked, after this).
    departed_floor_.store(std::min(departed_floor_.load(std::memory_order_relaxed), d.head), std::memory_order_seq_cst);
    departed_.store(departed_.load(std::memory_order_relaxed) + 1, std::memory_order_seq_cst);
    return true;
  }

  /// Drains every record; frees the finished ones. True if any frontier moved.
  ///
  /// Every record waits at or below the first slot still being written above the lowest head (a
  /// cursor's head never passes an unpublished slot). So one walk from the lowest head up to that
  /// slot serves them all. It goes by runs of equal tags (a batch is one run), and only the records
  /// whose epochs hold a run's tag release in it: cursors that came and went while a batch was being
  /// written cost one comparison each, not a walk over the batch each.
  bool drain_departed_locked() noexcept {
    if (departed_list_ == nullptr) return false;
    std::uint64_t lowest = kNone;
    std::uint64_t end = 0;
    for (const Departed* d = departed_list_; d != nullptr; d = d->next) {
      lowest = std::min(lowest, d->head);
      end = std::max(end, d->drain_until);
    }
    std::uint64_t s = lowest;
    std::uint64_t block_number = kNone;
    Slot* block = nullptr;
    while (s < end) {
      const Slot* first = find_slot(s, block_number, block);
      if (first == nullptr || first->seq.load(std::memory_order_acquire) != s + 1) break;
      const std::uint32_t tag = tag_of(*first);
      std::uint64_t run_end = s + 1;
      while (run_end < end) {
        const Slot* next = find_slot(run_end, block_number, block);
        if (next == nullptr || next->seq.load(std::memory_order_acquire) != run_end + 1 || tag_of(*next) != tag) break;
        ++run_end;
      }
      if constexpr (kCounted) {
        for (const Departed* d = departed_list_; d != nullptr; d = d->next) {
          if (tag_at_least(tag, d->leave_epoch) || !tag_at_least(tag, d->join_epoch)) continue;
          const std::uint64_t until = std::min(run_end, d->drain_until);
          for (std::uint64_t x = std::max(s, d->head); x < until; ++x) release(*find_slot(x, block_number, block));
        }
      }
      s = run_end;
    }
    // Everything below `s` that was counted for a record has been released.
    std::uint64_t floor = kNone;
    std::uint32_t count = 0;
    bool moved = false;
    for (Departed** link = &departed_list_; *link != nullptr;) {
      Departed* d = *link;
      const std::uint64_t head = std::max(d->head, std::min(s, d->drain_until));
      moved = moved || head != d->head;
      d->head = head;
      if (head >= d->drain_until) {
        *link = d->next;
        d->next = finished_records_;  // freed once the registry lock is released
        finished_records_ = d;
        continue;
      }
      floor = std::min(floor, head);
      ++count;
      link = &d->next;
    }
    departed_floor_.store(floor, std::memory_order_seq_cst);
    departed_.store(count, std::memory_order_release);
    return moved;
  }

  static std::uint32_t tag_of(const Slot& slot) noexcept {
    if constexpr (kCounted) {
      return slot.tag;
    } else {
      (void)slot;
      return 0;
    }
  }

  /// A cursor moved from `from` to `to`: if that took it out of a block, count it as passed, and
  /// when every cursor has passed that block, retire (cheap for all but the slowest cursor). A
  /// cursor that moves past the tail at which a table was replaced may let it be freed.
  void left_block(std::uint64_t from, std::uint64_t to) noexcept {
    if ((from >> block_shift_) != (to >> block_shift_)) {
      const std::uint64_t b = (to >> block_shift_) - 1;
      if (count_passed(b) >= count_of(members_.load(std::memory_order_relaxed))) {
        try_retire();
        return;
      }
    }
    const std::uint64_t pending = pending_table_tail_.load(std::memory_order_relaxed);
    if (from < pending && to >= pending) try_retire();
  }

  /// Counts a cursor out of block `b`; returns how many have left it. A counter taken over by a
  /// newer block (the cursors are more than `kPassedCounters` blocks apart) counts nothing: then
  /// the cursor leaving the oldest live block retires.
  std::uint32_t count_passed(std::uint64_t b) noexcept {
    auto& counter = passed_[b % detail::kPassedCounters];
    const auto tag = static_cast<std::uint32_t>(b);
    std::uint64_t w = counter.load(std::memory_order_acquire);
    for (;;) {
      const auto held = static_cast<std::uint32_t>(w >> 32);
      if (held == tag) return static_cast<std::uint32_t>(counter.fetch_add(1, std::memory_order_acq_rel) + 1);
      if (tag_at_least(held, tag)) {
        return b == retired_blocks_.load(std::memory_order_relaxed) ? ~std::uint32_t{0} : 0;
      }
      if (counter.compare_exchange_weak(w, (std::uint64_t{tag} << 32) | 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
        return 1;
      }
    }
  }

  /// Registry lock held: releases departed cursors' shares, retires the blocks every frontier has
  /// passed, shrinks the table once the backlog has gone, and frees what waits to be freed. True if
  /// a departed cursor's frontier moved.
  bool maintain_locked() noexcept {
    const bool drained = drain_departed_locked();
    const std::uint64_t floor = min_frontier_locked();
    const bool no_cursor = floor == kNone;
    const std::uint64_t limit = no_cursor ? claim_.load(std::memory_order_acquire) : floor;
    Table* t = table_.load(std::memory_order_relaxed);
    std::uint64_t x = retired_blocks_.load(std::memory_order_relaxed);
    while (((x + 1) << block_shift_) <= limit) {
      Entry& e = t->at(x);
      Slot* block = e.slots.load(std::memory_order_acquire);
      if (block == nullptr || e.number.load(std::memory_order_acquire) != x) break;
      if (no_cursor && !all_published(block, x)) break;  // with cursors, their frontiers vouch for it
      e.slots.store(nullptr, std::memory_order_release);
      recycle_block(block);
      ++x;
    }
    retired_blocks_.store(x, std::memory_order_release);
    shrink_locked();
    free_tables_locked();
    free_unlinked_chunks_locked();
    return drained;
  }

  bool all_published(const Slot* block, std::uint64_t number) const noexcept {
    const std::uint64_t first = number << block_shift_;
    for (std::size_t i = 0; i < block_size_; ++i) {
      if (block[i].seq.load(std::memory_order_acquire) != first + i + 1) return false;
    }
    return true;
  }

  // ---------------------------------------------------------------------------------------------
  // Producers

  template <class It>
  PublishStatus publish_impl(It first, It last, Clock::time_point deadline) {
    static_assert(std::is_same_v<std::iter_value_t<It>, T>, "publish takes a range of T");
    auto total = static_cast<std::uint64_t>(last - first);
    if (options_.full_policy == FullPolicy::fail && total > capacity_) return PublishStatus::full;
    if (total == 0) return closed_.load(std::memory_order_relaxed) ? PublishStatus::closed : PublishStatus::ok;
    while (total > 0) {
      const std::uint64_t n = std::min<std::uint64_t>(total, capacity_);
      const PublishStatus status = publish_piece(first, n, deadline);
      if (status != PublishStatus::ok) return status;
      first += static_cast<std::iter_difference_t<It>>(n);
      total -= n;
    }
    return PublishStatus::ok;
  }

  template <class It>
  PublishStatus publish_piece(It first, std::uint64_t n, Clock::time_point deadline) {
    std::uint64_t start = 0;
    const FullPolicy policy = options_.full_policy;
    if (single_) {
      if (closed_.load(std::memory_order_relaxed)) return PublishStatus::closed;
      start = sp_next_.load(std::memory_order_relaxed);
      const std::uint64_t end = start + n;
      if (policy == FullPolicy::overtake) {
        sp_next_.store(end, std::memory_order_relaxed);
        make_room(end);
      } else {
        if (!room_for(end)) {
          if (policy == FullPolicy::fail) return PublishStatus::full;
          const PublishStatus status = wait_for_room(end, deadline);
          if (status != PublishStatus::ok) return status;
        }
        sp_next_.store(end, std::memory_order_relaxed);
      }
    } else if (policy == FullPolicy::overtake) {
      if (closed_.load(std::memory_order_relaxed)) return PublishStatus::closed;
      start = claim_.fetch_add(n, std::memory_order_seq_cst);
      make_room(start + n);
    } else {
      // Reserve only when there is room, so a batch that must wait or fail never holds slots.
      std::uint64_t t = claim_.load(std::memory_order_relaxed);
      for (;;) {
        if (closed_.load(std::memory_order_relaxed)) return PublishStatus::closed;
        if (!room_for(t + n)) {
          if (policy == FullPolicy::fail) return PublishStatus::full;
          const PublishStatus status = wait_for_room(t + n, deadline);
          if (status != PublishStatus::ok) return status;
          t = claim_.load(std::memory_order_relaxed);
          continue;
        }
        if (claim_.compare_exchange_weak(t, t + n, std::memory_order_seq_cst, std::memory_order_relaxed)) break;
      }
      start = t;
    }
    const std::uint32_t readers = write_slots(first, start, n);
    // Single producer: the tail moves once the batch is written, so it is also the published tail
    // and readers read below it without waiting for slots. Multi: claimed slots may be in flight.
    if (single_) claim_.store(start + n, std::memory_order_release);
    // Nobody will pass the blocks of a cursor-less ring: give them back as they fill up.
    if (readers == 0 && (start >> block_shift_) != ((start + n) >> block_shift_)) try_retire();
    after_publish();
    return PublishStatus::ok;
  }

  /// Writes and publishes [start, start + n); returns the cursor count the elements were counted for.
  template <class It>
  std::uint32_t write_slots(It it, std::uint64_t start, std::uint64_t n) {
    if constexpr (kCounted) {
      // The single producer stored the batch's end (sp_next_) before this: a cursor leaving now
      // sees it, or is not counted (see leave()).
      if (single_) detail::light_fence();
    }
    // Read after the claim: see leave() for why the order matters.
    const std::uint64_t m = members_.load(std::memory_order_seq_cst);
    const std::uint32_t count = count_of(m);
    const std::uint32_t tag = epoch_of(m);
    std::uint64_t block_number = single_ ? sp_block_number_ : kNone;
    Slot* block = single_ ? sp_block_ : nullptr;
    for (std::uint64_t seq = start; seq < start + n; ++seq, ++it) {
      const std::uint64_t b = seq >> block_shift_;
      if (b != block_number) {
        block = block_for_write(b);
        block_number = b;
      }
      Slot& slot = block[seq & block_mask_];
      if constexpr (kCounted) {
        if (count != 0) ::new (static_cast<void*>(slot.storage)) T(std::move(*it));
        slot.remaining.store(count, std::memory_order_relaxed);
        slot.tag = tag;
      } else {
        ::new (static_cast<void*>(slot.storage)) T(std::move(*it));
      }
      slot.seq.store(seq + 1, std::memory_order_release);
    }
    if (single_) {
      sp_block_number_ = block_number;
      sp_block_ = block;
    }
    return count;
  }

  /// The cached minimum frontier (single mode: producer-private; multi: shared, relaxed).
  std::uint64_t gate() const noexcept { return single_ ? sp_gate_ : gate_cache_.load(std::memory_order_relaxed); }

  /// Recomputes the minimum frontier; with no cursor, the tail (rescanned a capacity later).
  std::uint64_t rescan() noexcept {
    if (departed_.load(std::memory_order_relaxed) != 0) try_retire();
    std::uint64_t f = min_frontier();
    if (f == kNone) f = single_ ? sp_next_.load(std::memory_order_relaxed) : claim_.load(std::memory_order_acquire);
    if (single_) {
      sp_gate_ = f;
    } else {
      gate_cache_.store(f, std::memory_order_relaxed);
    }
    return f;
  }

  /// May sequences below `end` be written? Checks the cached minimum, rescans only when it says no.
  bool room_for(std::uint64_t end) noexcept {
    if (end <= capacity_) return true;
    const std::uint64_t need = end - capacity_;
    return need <= gate() || need <= rescan();
  }

  PublishStatus wait_for_room(std::uint64_t end, Clock::time_point deadline) {
    auto r = await(space_waiters_, space_signal_, deadline, [&]() -> std::optional<PublishStatus> {
      if (closed_.load(std::memory_order_acquire)) return PublishStatus::closed;
      if (room_for(end)) return PublishStatus::ok;
      return std::nullopt;
    });
    return r ? *r : PublishStatus::timeout;
  }

  /// `FullPolicy::overtake`: pushes every cursor that is more than `capacity` behind `end` forward.
  void make_room(std::uint64_t end) noexcept {
    if (end <= capacity_) return;
    const std::uint64_t need = end - capacity_;
    if (need <= gate()) return;
    for (std::uint32_t attempt = 0;; ++attempt) {
      {
        ScanGuard guard(*this);
        for_each_state([&](State& st) {
          if (st.phase.load(std::memory_order_acquire) == Phase::active &&
              st.head.load(std::memory_order_acquire) < need) {
            overtake(st, need);
          }
        });
      }
      if (need <= rescan()) return;
      backoff(attempt);  // members finishing their reads, departed cursors draining, earlier batches publishing
    }
  }

  void overtake(State& st, std::uint64_t need) noexcept {
    // The single producer looks into the table only inside a table section. Below its own batch
    // every slot is published (by itself), so it never waits in there.
    if (single_) {
      for (std::uint32_t attempt = 0; !enter_table(); ++attempt) backoff(attempt);
    }
    const std::size_t slot_index = acquire_claim(st);
    auto& claim = st.claims[slot_index];
    for (;;) {
      std::uint64_t h = st.head.load(std::memory_order_seq_cst);
      if (h >= need) break;
      claim.store(h, std::memory_order_seq_cst);
      if (st.phase.load(std::memory_order_seq_cst) != Phase::active) break;
      if (st.head.load(std::memory_order_seq_cst) != h) continue;
      if (st.head.compare_exchange_strong(h, need, std::memory_order_seq_cst)) {
        std::uint64_t skipped = 0;
        std::uint64_t block_number = kNone;
        Slot* block = nullptr;
        for (std::uint64_t s = h; s < need; ++s) {
          Slot* slot = find_slot(s, block_number, block);
          if (slot == nullptr || slot->seq.load(std::memory_order_acquire) != s + 1) {
            // Still being written by an earlier producer, which may itself wait for this cursor's
            // frontier to pass its own gate: announce the progress so far, then wait.
            claim.store(s, std::memory_order_seq_cst);
            for (std::uint32_t attempt = 0;; ++attempt) {
              slot = find_slot(s, block_number, block);
              if (slot != nullptr && slot->seq.load(std::memory_order_acquire) == s + 1) break;
              backoff(attempt);
            }
          }
          if (counted_for(*slot, st.join_epoch)) {
            release(*slot);
            ++skipped;
          }
        }
        st.lost.fetch_add(skipped, std::memory_order_relaxed);
        break;
      }
    }
    claim.store(kNone, std::memory_order_release);
    if (single_) leave_table();
  }
  // ---------------------------------------------------------------------------------------------
  // Readers

  /// Gives up one reader's share of a counted element; the last share destroys it.
  static void release(Slot& slot) noexcept {
    if constexpr (kCounted) {
      if (slot.remaining.load(std::memory_order_acquire) == 1) {
        slot.value().~T();
        slot.remaining.store(0, std::memory_order_relaxed);
      } else if (slot.remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        slot.value().~T();
      }
    } else {
      (void)slot;
    }
  }

  /// Hands the element to `sink`: moved if this is the last reader, copied otherwise; then
  /// releases it. If `sink` throws, the element is not released.
  template <class Sink>
  static void deliver(Slot& slot, Sink& sink) {
    if constexpr (kCounted) {
      if (slot.remaining.load(std::memory_order_acquire) == 1) {
        sink(std::move(slot.value()));
        slot.value().~T();
        slot.remaining.store(0, std::memory_order_relaxed);
        return;
      }
      sink(std::as_const(slot.value()));
      if (slot.remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) slot.value().~T();
    } else {
      sink(std::as_const(slot.value()));
    }
  }

  /// Stores a single reader's new position (once per batch), retires blocks it left behind,
  /// wakes producers parked on a full ring.
  void finish_single(Reader& r, std::uint64_t pos) noexcept {
    if (pos == r.pos) return;
    const std::uint64_t from = r.pos;
    r.pos = pos;
    r.state->head.store(pos, std::memory_order_release);
    left_block(from, pos);
    notify_producers();
  }

  /// Moves a single reader past what `clear()` discarded (as far as it is published).
  void skip_cleared(Reader& r) noexcept {
    const std::uint64_t floor = clear_floor_.load(std::memory_order_relaxed);
    if (floor <= r.pos) return;
    // Lookups stay below a tail this reader has read (see free_tables_locked).
    if (r.tail_cache < floor) r.tail_cache = claim_.load(std::memory_order_seq_cst);
    const std::uint64_t limit = std::min(floor, r.tail_cache);
    std::uint64_t pos = r.pos;
    while (pos < limit) {
      Slot* slot = find_slot(pos, r.block_number, r.block);
      if (slot == nullptr || slot->seq.load(std::memory_order_acquire) != pos + 1) break;
      if (counted_for(*slot, r.join)) release(*slot);
      ++pos;
    }
    finish_single(r, pos);
  }

  /// Runs `on_element(slot)` (which delivers and releases) on up to `max` elements for one reader.
  /// If it throws, that element counts as consumed and the exception propagates.
  template <class OnElement>
  std::size_t read_single(Reader& r, std::size_t max, OnElement& on_element) {
    skip_cleared(r);
    std::uint64_t pos = r.pos;
    std::size_t delivered = 0;
    Slot* slot = nullptr;
    try {
      // One run per block: the block is looked up once; below the single producer's tail every
      // slot is published, so only multi-producer rings check each slot's sequence.
      while (delivered < max) {
        if (pos >= r.tail_cache) {
          r.tail_cache = claim_.load(std::memory_order_seq_cst);
          if (pos >= r.tail_cache) break;
        }
        slot = find_slot(pos, r.block_number, r.block);
        if (slot == nullptr) break;
        const std::uint64_t run_end = std::min(r.tail_cache, (pos | block_mask_) + 1);
        bool stalled = false;
        for (; pos < run_end && delivered < max; ++pos, ++slot) {
          if (!single_ && slot->seq.load(std::memory_order_acquire) != pos + 1) {
            stalled = true;  // still being written
            break;
          }
          if (counted_for(*slot, r.join)) {
            prefetch_ahead(slot, pos, run_end, r.join);
            on_element(*slot);
            ++delivered;
          }
        }
        if (stalled) break;
      }
    } catch (...) {
      release(*slot);
      finish_single(r, pos + 1);
      throw;
    }
    finish_single(r, pos);
    return delivered;
  }

  /// Is anything claimed at or beyond the reader's position? Reloads the cached tail only when the
  /// cache says no, so an idle reader polls the tail's line, not the slots being written.
  bool tail_ahead(Reader& r) const noexcept {
    if (r.pos < r.tail_cache) return true;
    r.tail_cache = claim_.load(std::memory_order_seq_cst);
    return r.pos < r.tail_cache;
  }

  /// True if a deliverable element is at the reader's position (skipping what it must skip).
  bool single_ready(Reader& r) noexcept {
    skip_cleared(r);
    if (!tail_ahead(r)) return false;
    std::uint64_t pos = r.pos;
    bool ready = false;
    while (pos < r.tail_cache) {
      Slot* slot = find_slot(pos, r.block_number, r.block);
      if (slot == nullptr || slot->seq.load(std::memory_order_acquire) != pos + 1) break;
      if (counted_for(*slot, r.join)) {
        ready = true;
        break;
      }
      ++pos;
    }
    finish_single(r, pos);
    return ready;
  }

  /// Takes a free claim announcement of a shared cursor (waiting if all are in use).
  static std::size_t acquire_claim(State& st) noexcept {
    const std::size_t hint = detail::thread_hint();
    for (std::uint32_t attempt = 0;; ++attempt) {
      for (std::size_t i = 0; i < detail::kClaimSlots; ++i) {
        const std::size_t index = (hint + i) % detail::kClaimSlots;
        auto& c = st.claims[index];
        if (c.load(std::memory_order_relaxed) != kNone) continue;
        std::uint64_t expected = kNone;
        if (c.compare_exchange_strong(expected, st.head.load(std::memory_order_seq_cst), std::memory_order_seq_cst)) {
          return index;
        }
      }
      backoff(attempt);
    }
  }

  /// Frees a claim announcement on every exit path. Freeing it may raise the cursor's frontier,
  /// so a producer parked on a full ring is told.
  class ClaimGuard {
   public:
    ClaimGuard(BroadcastRing& ring, State& st, std::size_t index) noexcept : ring_(ring), claim_(&st.claims[index]) {}
    ClaimGuard(const ClaimGuard&) = delete;
    ClaimGuard& operator=(const ClaimGuard&) = delete;
    ~ClaimGuard() { release(); }

    void announce(std::uint64_t seq) noexcept { claim_->store(seq, std::memory_order_seq_cst); }
    void release() noexcept {
      if (claim_ == nullptr) return;
      std::exchange(claim_, nullptr)->store(kNone, std::memory_order_release);
      ring_.notify_producers();
    }

   private:
    BroadcastRing& ring_;
    std::atomic<std::uint64_t>* claim_;
  };

  void after_shared_advance(std::uint64_t from, std::uint64_t to, ClaimGuard& guard) noexcept {
    guard.release();
    left_block(from, to);
  }

  /// Claims a published range of a shared cursor and runs `on_element` on its deliverable elements.
  /// A claimant announces the lowest sequence it may touch before it looks at slots, and checks the
  /// head did not move meanwhile; producers and retirement respect announcements.
  template <class OnElement>
  std::size_t read_shared(State& st, std::uint32_t join, std::size_t max, OnElement& on_element) {
    // Lookups stay below this tail (see free_tables_locked).
    const std::uint64_t tail = claim_.load(std::memory_order_seq_cst);
    if (st.head.load(std::memory_order_acquire) >= tail) return 0;
    ClaimGuard guard(*this, st, acquire_claim(st));
    std::uint64_t block_number = kNone;
    Slot* block = nullptr;
    std::uint64_t h = 0;
    std::uint64_t end = 0;
    for (;;) {
      h = st.head.load(std::memory_order_seq_cst);
      guard.announce(h);
      if (st.head.load(std::memory_order_seq_cst) != h) continue;
      const std::uint64_t floor = clear_floor_.load(std::memory_order_relaxed);
      end = h;
      if (floor > h) {  // discard what clear() dropped, as far as it is published
        while (end < floor && end < tail && published(end, block_number, block)) ++end;
        if (end == h) return 0;
        if (!st.head.compare_exchange_strong(h, end, std::memory_order_seq_cst)) continue;
        for (std::uint64_t s = h; s < end; ++s) {
          Slot* slot = find_slot(s, block_number, block);
          if (counted_for(*slot, join)) release(*slot);
        }
        left_block(h, end);
        continue;
      }
      std::size_t eligible = 0;
      while (eligible < max && end < tail) {
        Slot* slot = find_slot(end, block_number, block);
        if (slot == nullptr || slot->seq.load(std::memory_order_acquire) != end + 1) break;
        if (counted_for(*slot, join)) ++eligible;
        ++end;
      }
      if (end == h) return 0;
      if (st.head.compare_exchange_strong(h, end, std::memory_order_seq_cst)) break;
    }
    // [h, end) belongs to this caller.
    std::size_t delivered = 0;
    std::uint64_t s = h;
    try {
      for (; s < end; ++s) {
        Slot* slot = find_slot(s, block_number, block);
        if (!counted_for(*slot, join)) continue;
        prefetch_ahead(slot, s, std::min(end, (s | block_mask_) + 1), join);
        on_element(*slot);
        ++delivered;
      }
    } catch (...) {
      // The element that threw counts as consumed; the rest of the claim cannot be handed back to
      // the group, so it is released and counted as lost.
      release(*find_slot(s, block_number, block));
      std::uint64_t dropped = 0;
      for (++s; s < end; ++s) {
        Slot* slot = find_slot(s, block_number, block);
        if (counted_for(*slot, join)) {
          release(*slot);
          ++dropped;
        }
      }
      st.lost.fetch_add(dropped, std::memory_order_relaxed);
      after_shared_advance(h, end, guard);
      throw;
    }
    after_shared_advance(h, end, guard);
    return delivered;
  }

  /// Wait condition of a shared cursor: the element at its head is published (it may not be for
  /// this cursor, or another member may take it: a read then returns 0 and the caller waits again).
  /// The slot is looked at under a claim announcement, so its block cannot be retired meanwhile.
  std::optional<WaitStatus> shared_status(State& st) noexcept {
    // Lookups stay below this tail (see free_tables_locked).
    const std::uint64_t tail = claim_.load(std::memory_order_seq_cst);
    if (st.head.load(std::memory_order_acquire) >= tail) {
      if (closed_.load(std::memory_order_acquire)) return WaitStatus::closed;
      return std::nullopt;
    }
    ClaimGuard guard(*this, st, acquire_claim(st));
    std::uint64_t h = 0;
    do {
      h = st.head.load(std::memory_order_seq_cst);
      guard.announce(h);
    } while (st.head.load(std::memory_order_seq_cst) != h);
    std::uint64_t block_number = kNone;
    Slot* block = nullptr;
    if (h < tail && published(h, block_number, block)) return WaitStatus::ready;
    if (closed_.load(std::memory_order_acquire) && h >= claim_.load(std::memory_order_acquire)) {
      return WaitStatus::closed;
    }
    return std::nullopt;
  }

  std::optional<WaitStatus> single_status(Reader& r) noexcept {
    if (single_ready(r)) return WaitStatus::ready;
    if (closed_.load(std::memory_order_acquire) && r.pos >= claim_.load(std::memory_order_acquire)) {
      return WaitStatus::closed;
    }
    return std::nullopt;
  }

  WaitStatus wait_reader(Reader& r, Clock::time_point deadline) {
    auto result = await(data_waiters_, data_signal_, deadline, [&]() -> std::optional<WaitStatus> {
      return r.shared ? shared_status(*r.state) : single_status(r);
    });
    return result ? *result : WaitStatus::timeout;
  }

  WaitStatus wait_group(State& st, Clock::time_point deadline) {
    auto result = await(data_waiters_, data_signal_, deadline, [&]() { return shared_status(st); });
    return result ? *result : WaitStatus::timeout;
  }

  // ---------------------------------------------------------------------------------------------
  // Data. Read-mostly first; every line that some thread writes often sits on its own pair of lines.

  Allocator alloc_;
  RingOptions options_;
  std::uint64_t capacity_ = 0;
  std::uint64_t block_size_ = 0;
  std::uint64_t block_mask_ = 0;
  std::uint32_t block_shift_ = 0;
  bool single_ = false;
  std::size_t max_table_size_ = 0;  // bit_ceil(capacity / block_size + 1): no live block is ever in the way
  std::size_t lines_per_block_ = 0;
  std::atomic<Table*> table_{nullptr};         // replaced under the registry lock
  std::atomic<std::size_t> table_entries_{0};  // its size, for statistics
  std::atomic<Chunk*> chunks_{nullptr};
  std::atomic<Slot*> spare_[kSpareBlocks];
  std::atomic<std::size_t> allocated_blocks_{0};

  // Joins, leaves, retirement, resizes (all rare: once per block at most).
  alignas(kFalseSharingRange) std::mutex registry_mutex_;
  std::atomic<std::uint64_t> retired_blocks_{0};  // written under the lock: blocks below it are retired
  std::atomic<bool> maintenance_requested_{false};
  std::atomic<std::uint32_t> scanners_{0};  // registry scans running without the lock
  Departed* departed_list_ = nullptr;       // guarded by registry_mutex_
  Departed* finished_records_ = nullptr;    // guarded: freed when the lock is released
  Table* retired_tables_ = nullptr;         // guarded: replaced tables waiting to be freed
  Chunk* unlinked_chunks_ = nullptr;        // guarded: free chunks waiting for scans to end

  // Resizing the table against installing blocks (once per block).
  alignas(kFalseSharingRange) std::atomic<bool> resizing_{false};
  std::atomic<std::uint32_t> installers_{0};  // multi-producer table sections open

  // Read by every batch on both sides, written only by joins, leaves, clear(), close() and the
  // (rare) resizes and departures.
  alignas(kFalseSharingRange) std::atomic<std::uint64_t> members_{make_members(1, 0)};  // epoch << 32 | count
  std::atomic<std::uint64_t> clear_floor_{0};
  std::atomic<bool> closed_{false};
  std::atomic<std::uint64_t> pending_table_tail_{kNone};  // lowest tail of a replaced table not yet freed
  std::atomic<std::uint32_t> departed_{0};                // departed cursors that still owe a share
  std::atomic<std::uint64_t> departed_floor_{kNone};      // their lowest head

  // The tail: claimed by producers, polled by readers that have caught up.
  alignas(kFalseSharingRange) std::atomic<std::uint64_t> claim_{0};

  // Producer side only: the cached gate (multi: shared by producers), the single producer's state
  // (its next sequence and its table-section flag are read by departing cursors and resizes).
  alignas(kFalseSharingRange) std::atomic<std::uint64_t> gate_cache_{0};
  std::atomic<std::uint64_t> sp_next_{0};
  std::uint64_t sp_gate_ = 0;
  std::uint64_t sp_block_number_ = kNone;
  Slot* sp_block_ = nullptr;
  std::atomic<std::uint32_t> sp_in_table_{0};  // a table section is open

  // Cursors that have left each recent block (readers' read-modify-writes, once per block).
  alignas(kFalseSharingRange) std::atomic<std::uint64_t> passed_[detail::kPassedCounters];

  // Parked readers (written when a reader parks; read by producers after each publish).
  alignas(kFalseSharingRange) std::atomic<std::uint32_t> data_waiters_{0};
  std::atomic<std::uint32_t> data_signal_{0};

  // Parked producers (written when a producer parks; read by readers after each batch).
  alignas(kFalseSharingRange) std::atomic<std::uint32_t> space_waiters_{0};
  std::atomic<std::uint32_t> space_signal_{0};
};

/// One reader's cursor. Move-only; not thread-safe (one thread at a time); unregisters in its
/// destructor. Sees every element published after it was created, in order of sequence (so each
/// producer's elements in the order it published them).
template <class T, class Allocator>
class BroadcastRing<T, Allocator>::Cursor {
 public:
  /// An invalid cursor (`valid()` is false), for containers and out-parameters.
  Cursor() noexcept = default;
  Cursor(Cursor&& other) noexcept : ring_(std::exchange(other.ring_, nullptr)), reader_(other.reader_) {}
  Cursor& operator=(Cursor&& other) noexcept {
    if (this != &other) {
      reset();
      ring_ = std::exchange(other.ring_, nullptr);
      reader_ = other.reader_;
    }
    return *this;
  }
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;
  ~Cursor() { reset(); }

  /// Unregisters now: what this cursor was holding back is released. Leaves it invalid.
  void reset() noexcept {
    if (ring_ != nullptr) std::exchange(ring_, nullptr)->leave(reader_.state);
  }

  /// Moves (last reader) or copies the next element into `out`; false if none is available.
  [[nodiscard]] bool try_read(T& out) {
    auto sink = [&](auto&& v) { out = std::forward<decltype(v)>(v); };
    return read(1, sink) == 1;
  }

  /// Writes up to `max` available elements to `out` (`*out++ = element`); returns how many.
  /// The cursor's position is stored once for the whole batch.
  template <class OutIt>
  std::size_t read_batch(OutIt out, std::size_t max) {
    auto sink = [&](auto&& v) {
      *out = std::forward<decltype(v)>(v);
      ++out;
    };
    return read(max, sink);
  }

  /// Hands up to `max` available elements to `fn` in place: `fn(T&&)` when this cursor is the
  /// element's last reader (`fn` may move from it), `fn(const T&)` otherwise; the ring destroys the
  /// element afterwards, as `read_batch` does. One move from the slot to wherever `fn` puts it,
  /// without an intermediate buffer. Returns how many; advances once. If `fn` throws, the element
  /// it threw on counts as read (it is not released: see `read_batch`).
  template <class Fn>
  std::size_t consume(std::size_t max, Fn&& fn) {
    return read(max, fn);
  }

  /// Calls `fn(const T&)` on up to `max` available elements in place, without copying them, and
  /// advances once. If `fn` throws, the element it threw on counts as read.
  template <class Fn>
  std::size_t poll(std::size_t max, Fn&& fn) {
    auto on_element = [&](Slot& slot) {
      fn(std::as_const(slot.value()));
      release(slot);
    };
    return reader_.shared ? ring_->read_shared(*reader_.state, reader_.join, max, on_element)
                          : ring_->read_single(reader_, max, on_element);
  }

  /// Blocks (wait strategy) until an element is available (`ready`) or the ring is closed and this
  /// cursor has read everything (`closed`).
  WaitStatus wait() { return ring_->wait_reader(reader_, detail::kNoDeadline); }

  /// As `wait`, giving up at `deadline` (`timeout`).
  template <class WaitClock, class Duration>
  WaitStatus wait_until(std::chrono::time_point<WaitClock, Duration> deadline) {
    return ring_->wait_reader(reader_, detail::to_wait_clock(deadline));
  }

  /// As `wait`, giving up after `timeout`.
  template <class Rep, class Period>
  WaitStatus wait_for(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(detail::WaitClock::now() + timeout);
  }

  /// Elements this cursor skipped because producers overtook it (cumulative).
  [[nodiscard]] std::uint64_t lost() const noexcept { return reader_.state->lost.load(std::memory_order_relaxed); }

  /// Sequence of the next element this cursor will look at.
  [[nodiscard]] std::uint64_t position() const noexcept {
    return reader_.shared ? reader_.state->head.load(std::memory_order_acquire) : reader_.pos;
  }

  /// Elements claimed but not yet read by this cursor (approximate: for statistics). Safe to call
  /// from any thread: it reads the published head, not the reader's private position.
  [[nodiscard]] std::size_t lag() const noexcept {
    const std::uint64_t t = ring_->tail();
    const std::uint64_t p = reader_.state->head.load(std::memory_order_acquire);
    return t > p ? static_cast<std::size_t>(t - p) : 0;
  }

  /// False for a default-constructed or moved-from cursor.
  [[nodiscard]] bool valid() const noexcept { return ring_ != nullptr; }

 private:
  friend class BroadcastRing;

  Cursor(BroadcastRing* ring, State* st) noexcept : ring_(ring) {
    reader_.state = st;
    reader_.pos = st->head.load(std::memory_order_relaxed);
    reader_.join = st->join_epoch;
    reader_.shared = st->shared.load(std::memory_order_relaxed);
  }

  template <class Sink>
  std::size_t read(std::size_t max, Sink& sink) {
    if (max == 0) return 0;
    auto on_element = [&](Slot& slot) { BroadcastRing::deliver(slot, sink); };
    return reader_.shared ? ring_->read_shared(*reader_.state, reader_.join, max, on_element)
                          : ring_->read_single(reader_, max, on_element);
  }

  BroadcastRing* ring_ = nullptr;
  Reader reader_{};
};

/// A cursor shared by the readers of a group: every member may call the read functions
/// concurrently; each element goes to exactly one caller. Each call claims a range of published
/// elements with one compare-exchange. Move-only (moving is not thread-safe); unregisters in its
/// destructor, which must not run while members still use it.
template <class T, class Allocator>
class BroadcastRing<T, Allocator>::GroupCursor {
 public:
  /// An invalid cursor.
  GroupCursor() noexcept = default;
  GroupCursor(GroupCursor&& other) noexcept
      : ring_(std::exchange(other.ring_, nullptr)), state_(other.state_), join_(other.join_) {}
  GroupCursor& operator=(GroupCursor&& other) noexcept {
    if (this != &other) {
      reset();
      ring_ = std::exchange(other.ring_, nullptr);
      state_ = other.state_;
      join_ = other.join_;
    }
    return *this;
  }
  GroupCursor(const GroupCursor&) = delete;
  GroupCursor& operator=(const GroupCursor&) = delete;
  ~GroupCursor() { reset(); }

  /// Unregisters now (no member may be inside a call). Leaves it invalid.
  void reset() noexcept {
    if (ring_ != nullptr) std::exchange(ring_, nullptr)->leave(state_);
  }

  /// Takes the next element of the group into `out`; false if none is available.
  [[nodiscard]] bool try_read(T& out) {
    auto sink = [&](auto&& v) { out = std::forward<decltype(v)>(v); };
    return read(1, sink) == 1;
  }

  /// Takes up to `max` elements of the group (`*out++ = element`); returns how many. If writing to
  /// `out` throws, that element counts as read and the rest of the claimed range is dropped and
  /// counted in `lost()`.
  template <class OutIt>
  std::size_t read_batch(OutIt out, std::size_t max) {
    auto sink = [&](auto&& v) {
      *out = std::forward<decltype(v)>(v);
      ++out;
    };
    return read(max, sink);
  }

  /// As `Cursor::consume`: `fn(T&&)` for the group's last share of an element, `fn(const T&)`
  /// otherwise, on up to `max` claimed elements. If `fn` throws, as `read_batch`.
  template <class Fn>
  std::size_t consume(std::size_t max, Fn&& fn) {
    return read(max, fn);
  }

  /// Claims up to `max` elements and calls `fn(const T&)` on each in place. If `fn` throws, that
  /// element counts as read and the rest of the claim is dropped and counted in `lost()`.
  template <class Fn>
  std::size_t poll(std::size_t max, Fn&& fn) {
    if (max == 0) return 0;
    auto on_element = [&](Slot& slot) {
      fn(std::as_const(slot.value()));
      release(slot);
    };
    return ring_->read_shared(*state_, join_, max, on_element);
  }

  /// Blocks until something may be available (another member may take it first) or the ring is
  /// closed and the group has read everything.
  WaitStatus wait() { return ring_->wait_group(*state_, detail::kNoDeadline); }

  template <class WaitClock, class Duration>
  WaitStatus wait_until(std::chrono::time_point<WaitClock, Duration> deadline) {
    return ring_->wait_group(*state_, detail::to_wait_clock(deadline));
  }

  template <class Rep, class Period>
  WaitStatus wait_for(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(detail::WaitClock::now() + timeout);
  }

  /// Elements the group skipped (overtaken, or dropped after a throwing delivery); cumulative.
  [[nodiscard]] std::uint64_t lost() const noexcept { return state_->lost.load(std::memory_order_relaxed); }

  /// Next sequence the group will hand out.
  [[nodiscard]] std::uint64_t position() const noexcept { return state_->head.load(std::memory_order_acquire); }

  /// Elements claimed by producers but not yet taken by the group (approximate).
  [[nodiscard]] std::size_t lag() const noexcept {
    const std::uint64_t t = ring_->tail();
    const std::uint64_t p = position();
    return t > p ? static_cast<std::size_t>(t - p) : 0;
  }

  [[nodiscard]] bool valid() const noexcept { return ring_ != nullptr; }

 private:
  friend class BroadcastRing;

  GroupCursor(BroadcastRing* ring, State* st) noexcept : ring_(ring), state_(st), join_(st->join_epoch) {}

  template <class Sink>
  std::size_t read(std::size_t max, Sink& sink) {
    if (max == 0) return 0;
    auto on_element = [&](Slot& slot) { BroadcastRing::deliver(slot, sink); };
    return ring_->read_shared(*state_, join_, max, on_element);
  }

  BroadcastRing* ring_ = nullptr;
  State* state_ = nullptr;
  std::uint32_t join_ = 0;
};

}  // namespace kincir::memory
