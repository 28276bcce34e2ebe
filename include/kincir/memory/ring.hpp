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
  std::size_t capacity = std::size_t{1} << 16;  ///< Max backlog in elements; rounded up to a power of two.
  std::size_t block_size = 256;                 ///< Slots per block; a power of two, at most `capacity`.
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
///   cursor has passed them: an idle ring costs its block table and at most a few blocks.
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
  using Entry = detail::BlockEntry<Slot>;
  using State = detail::CursorState;
  using Chunk = detail::CursorChunk;
  using Phase = detail::CursorPhase;
  using Clock = detail::WaitClock;
  using Traits = std::allocator_traits<Allocator>;
  using LineAlloc = typename Traits::template rebind_alloc<detail::CacheLine>;
  using LineTraits = std::allocator_traits<LineAlloc>;
  using EntryAlloc = typename Traits::template rebind_alloc<Entry>;
  using EntryTraits = std::allocator_traits<EntryAlloc>;
  using ChunkAlloc = typename Traits::template rebind_alloc<Chunk>;
  using ChunkTraits = std::allocator_traits<ChunkAlloc>;

  static_assert(alignof(Slot) <= kCacheLineSize, "blocks are arrays of cache lines; a slot may not need more");
  static_assert(std::is_trivially_destructible_v<Slot>, "blocks are freed without running slot destructors");
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "sequences must be lock-free atomics");
  static_assert(std::is_pointer_v<typename LineTraits::pointer>, "blocks are addressed through raw pointers");

  static constexpr std::uint64_t kNone = detail::kNoSequence;
  static constexpr std::size_t kSpareBlocks =
      2;  // recycled blocks kept for the producer: steady traffic allocates nothing

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

  /// Checks `options` and returns them with the capacity rounded up to a power of two. Sets `ec`
  /// to `errc::invalid_argument` (and returns `options` unchanged) if they cannot be used:
  /// capacity 0 or above 2^62, block size 0 or not a power of two, capacity below block size.
  static RingOptions normalize(RingOptions options, std::error_code& ec) noexcept {
    ec.clear();
    constexpr std::size_t kMaxCapacity = std::size_t{1} << 62;
    if (options.capacity == 0 || options.capacity > kMaxCapacity || options.block_size == 0 ||
        !std::has_single_bit(options.block_size) || std::bit_ceil(options.capacity) < options.block_size) {
      ec = make_error_code(errc::invalid_argument);
      return options;
    }
    options.capacity = std::bit_ceil(options.capacity);
    return options;
  }

  /// Creates an empty ring; allocates only its block table (blocks come with the first publish).
  /// @throws kincir::Error (`errc::invalid_argument`) if `normalize` rejects `options`.
  explicit BroadcastRing(RingOptions options = {}, const Allocator& alloc = Allocator())
      : alloc_(alloc), options_(checked(options)) {
    capacity_ = options_.capacity;
    block_size_ = options_.block_size;
    block_shift_ = static_cast<std::uint32_t>(std::countr_zero(block_size_));
    block_mask_ = block_size_ - 1;
    // A producer may write block b once every cursor has passed sequence b * block_size - capacity,
    // so block b - (capacity / block_size + 1) is always passed: that many entries never collide.
    table_size_ = capacity_ / block_size_ + 1;
    lines_per_block_ = (block_size_ * sizeof(Slot) + kCacheLineSize - 1) / kCacheLineSize;
    single_ = options_.producer_mode == ProducerMode::single;
    EntryAlloc a(alloc_);
    table_ = EntryTraits::allocate(a, table_size_);
    for (std::size_t i = 0; i < table_size_; ++i) EntryTraits::construct(a, table_ + i);
    for (auto& s : spare_) s.store(nullptr, std::memory_order_relaxed);
  }

  /// Destroys the elements still held and frees every block. No cursor may exist any more and no
  /// other call may be running.
  ~BroadcastRing() {
    for (std::size_t i = 0; i < table_size_; ++i) {
      Slot* block = table_[i].slots.load(std::memory_order_acquire);
      if (block == nullptr) continue;
      if constexpr (kCounted) {
        for (std::size_t j = 0; j < block_size_; ++j) {
          if (block[j].remaining.load(std::memory_order_acquire) != 0) block[j].value().~T();
        }
      }
      deallocate_block(block);
    }
    for (auto& s : spare_) {
      if (Slot* block = s.load(std::memory_order_acquire)) deallocate_block(block);
    }
    ChunkAlloc ca(alloc_);
    for (Chunk* c = chunks_.load(std::memory_order_acquire); c != nullptr;) {
      Chunk* next = c->next.load(std::memory_order_relaxed);
      ChunkTraits::destroy(ca, c);
      ChunkTraits::deallocate(ca, c, 1);
      c = next;
    }
    EntryAlloc ea(alloc_);
    for (std::size_t i = 0; i < table_size_; ++i) EntryTraits::destroy(ea, table_ + i);
    EntryTraits::deallocate(ea, table_, table_size_);
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

  /// After publishing: wake parked readers, if any. The (light) fence orders the slot stores
  /// before the waiter check; a parking reader increments the count, issues the heavy fence, then
  /// checks the slots again: one of the two sees the other.
  void notify_readers() noexcept {
    detail::light_fence();
    if (data_waiters_.load(std::memory_order_relaxed) != 0) signal(data_signal_);
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
  // Blocks

  Slot* allocate_block() noexcept {
    try {
      LineAlloc a(alloc_);
      detail::CacheLine* lines = LineTraits::allocate(a, lines_per_block_);
      auto* bytes = reinterpret_cast<std::byte*>(lines);
      for (std::size_t i = 0; i < block_size_; ++i) ::new (static_cast<void*>(bytes + i * sizeof(Slot))) Slot();
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

  /// The slot of `seq` for a reader, through its cached block; null if that block is not installed
  /// (then nothing in it is published). The caller guarantees the block is not retired under it
  /// (its position, or an announced claim, is at or below `seq`).
  Slot* find_slot(std::uint64_t seq, std::uint64_t& block_number, Slot*& block) const noexcept {
    const std::uint64_t b = seq >> block_shift_;
    if (b != block_number) {
      const Entry& e = table_[b % table_size_];
      if (e.number.load(std::memory_order_acquire) != b) return nullptr;
      Slot* p = e.slots.load(std::memory_order_acquire);
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

  /// The block a producer writes sequence block `b` into: installs one when the entry is free,
  /// retires the block before it when every cursor has passed that one.
  Slot* block_for_write(std::uint64_t b) noexcept {
    Entry& e = table_[b % table_size_];
    for (std::uint32_t attempt = 0;; ++attempt) {
      Slot* p = e.slots.load(std::memory_order_acquire);
      if (p != nullptr) {
        if (e.number.load(std::memory_order_acquire) == b) return p;
        // An older block is still installed: cursors passed it (the gate says so), retire it.
        // Overtaking rings also push a cursor that joined behind the gate (while earlier claims
        // of a cursor-less ring were still being written).
        if (!try_retire() || attempt > 64) {
          if (options_.full_policy == FullPolicy::overtake && b >= table_size_) {
            make_room(((b - table_size_ + 1) << block_shift_) + capacity_);
          }
        }
      } else if (Slot* fresh = take_block(); fresh != nullptr) {
        if (single_) {
          e.slots.store(fresh, std::memory_order_relaxed);
          e.passed.store(0, std::memory_order_relaxed);
          e.number.store(b, std::memory_order_release);
          return fresh;
        }
        Slot* expected = nullptr;
        if (e.slots.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel, std::memory_order_acquire)) {
          e.passed.store(0, std::memory_order_relaxed);
          e.number.store(b, std::memory_order_release);
          return fresh;
        }
        deallocate_block(fresh);  // another producer installed it first
        continue;
      }
      backoff(attempt);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Registry: joins, leaves, frontiers, retirement

  /// The lowest sequence a cursor may still touch: its position, or an announced claim below it.
  static std::uint64_t frontier(const State& st) noexcept {
    std::uint64_t f = st.head.load(std::memory_order_seq_cst);
    if (st.shared.load(std::memory_order_relaxed)) {
      for (const auto& c : st.claims) f = std::min(f, c.load(std::memory_order_seq_cst));
    }
    return f;
  }

  template <class Fn>
  void for_each_state(Fn&& fn) const noexcept {
    for (Chunk* c = chunks_.load(std::memory_order_acquire); c != nullptr;
         c = c->next.load(std::memory_order_acquire)) {
      for (State& st : c->states) fn(st);
    }
  }

  /// Minimum frontier of every registered cursor (zombies included), `kNone` if there is none.
  std::uint64_t min_frontier() const noexcept {
    std::uint64_t m = kNone;
    for_each_state([&](const State& st) {
      if (st.phase.load(std::memory_order_seq_cst) != Phase::free) m = std::min(m, frontier(st));
    });
    return m;
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

  /// Registers a cursor at the first unpublished sequence: everything before it was published
  /// before the cursor existed and was not counted for it.
  State* join(bool group) {
    std::lock_guard<std::mutex> lock(registry_mutex_);
    if (zombies_.load(std::memory_order_relaxed) != 0) {
      drain_zombies_locked();
      notify_producers();
    }
    State* st = free_state_locked();
    // Everything below any frontier is published: start looking at the highest one.
    std::uint64_t start = retired_blocks_ << block_shift_;
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

  /// Unregisters a cursor; what was counted for it is released now or, for elements still being
  /// written, as soon as they are published (the entry stays a gating zombie until then).
  void leave(State* st) noexcept {
    {
      std::lock_guard<std::mutex> lock(registry_mutex_);
      st->phase.store(Phase::leaving, std::memory_order_seq_cst);
      const std::uint64_t m = members_.load(std::memory_order_relaxed);
      const std::uint32_t epoch = epoch_of(m) + 1;
      members_.store(make_members(epoch, count_of(m) - 1), std::memory_order_seq_cst);
      st->leave_epoch = epoch;
      // Multi-producer: a producer reads the membership after its claim, so an element counted for
      // this cursor was claimed below the tail read now. Single producer: its tags only grow, so
      // the first element tagged with the new epoch ends the drain.
      st->drain_by_tag = single_;
      st->drain_until = single_ ? kNone : claim_.load(std::memory_order_seq_cst);
    }
    if (st->shared.load(std::memory_order_relaxed)) {
      // Overtaking producers that announced a claim before seeing `leaving` finish first.
      for (auto& c : st->claims) {
        for (std::uint32_t attempt = 0; c.load(std::memory_order_acquire) != kNone; ++attempt) backoff(attempt);
      }
    }
    {
      std::lock_guard<std::mutex> lock(registry_mutex_);
      if constexpr (kCounted) {
        st->phase.store(Phase::zombie, std::memory_order_release);
        zombies_.fetch_add(1, std::memory_order_relaxed);
        drain_zombie_locked(*st);
      } else {
        st->phase.store(Phase::free, std::memory_order_release);
      }
    }
    notify_producers();
  }

  void drain_zombies_locked() noexcept {
    for_each_state([&](State& st) {
      if (st.phase.load(std::memory_order_relaxed) == Phase::zombie) drain_zombie_locked(st);
    });
  }

  /// Releases, for a removed cursor, the published elements that were counted for it.
  void drain_zombie_locked(State& st) noexcept {
    std::uint64_t s = st.head.load(std::memory_order_relaxed);
    std::uint64_t block_number = kNone;
    Slot* block = nullptr;
    bool done = false;
    if constexpr (kCounted) {
      while (s < st.drain_until) {
        Slot* slot = find_slot(s, block_number, block);
        if (slot == nullptr || slot->seq.load(std::memory_order_acquire) != s + 1) break;
        if (tag_at_least(slot->tag, st.leave_epoch)) {
          if (st.drain_by_tag) {
            done = true;
            break;
          }
        } else if (tag_at_least(slot->tag, st.join_epoch)) {
          release(*slot);
        }
        ++s;
      }
    }
    st.head.store(s, std::memory_order_release);
    if (done || s >= st.drain_until) {
      st.phase.store(Phase::free, std::memory_order_release);
      zombies_.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  /// A cursor moved from `from` to `to`: if that took it out of a block, count it as passed, and
  /// when every cursor has passed that block try to retire (cheap for all but the slowest cursor).
  void left_block(std::uint64_t from, std::uint64_t to) noexcept {
    if ((from >> block_shift_) == (to >> block_shift_)) return;
    const std::uint64_t b = (to >> block_shift_) - 1;
    Entry& e = table_[b % table_size_];
    if (e.number.load(std::memory_order_acquire) != b) return;
    const std::uint32_t passed = e.passed.fetch_add(1, std::memory_order_acq_rel) + 1;
    if (passed >= count_of(members_.load(std::memory_order_relaxed))) try_retire();
  }

  /// Retires the blocks every cursor has passed, unless another thread holds the registry.
  bool try_retire() noexcept {
    std::unique_lock<std::mutex> lock(registry_mutex_, std::try_to_lock);
    if (!lock.owns_lock()) return false;
    if (zombies_.load(std::memory_order_relaxed) != 0) {
      drain_zombies_locked();
      notify_producers();  // a zombie's frontier may have moved
    }
    const std::uint64_t floor = min_frontier();
    const bool no_cursor = floor == kNone;
    const std::uint64_t limit = no_cursor ? claim_.load(std::memory_order_acquire) : floor;
    while (((retired_blocks_ + 1) << block_shift_) <= limit) {
      const std::uint64_t x = retired_blocks_;
      Entry& e = table_[x % table_size_];
      Slot* block = e.slots.load(std::memory_order_acquire);
      if (block == nullptr || e.number.load(std::memory_order_acquire) != x) break;
      if (no_cursor && !all_published(block, x)) break;  // with cursors, their frontiers vouch for it
      e.slots.store(nullptr, std::memory_order_release);
      recycle_block(block);
      retired_blocks_ = x + 1;
    }
    return true;
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
      start = sp_next_;
      const std::uint64_t end = start + n;
      if (policy == FullPolicy::overtake) {
        make_room(end);
      } else if (!room_for(end)) {
        if (policy == FullPolicy::fail) return PublishStatus::full;
        const PublishStatus status = wait_for_room(end, deadline);
        if (status != PublishStatus::ok) return status;
      }
      sp_next_ = end;
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
    notify_readers();
    return PublishStatus::ok;
  }

  /// Writes and publishes [start, start + n); returns the cursor count the elements were counted for.
  template <class It>
  std::uint32_t write_slots(It it, std::uint64_t start, std::uint64_t n) {
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
    if (zombies_.load(std::memory_order_relaxed) != 0) try_retire();
    std::uint64_t f = min_frontier();
    if (f == kNone) f = single_ ? sp_next_ : claim_.load(std::memory_order_acquire);
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
      for_each_state([&](State& st) {
        if (st.phase.load(std::memory_order_acquire) == Phase::active &&
            st.head.load(std::memory_order_acquire) < need) {
          overtake(st, need);
        }
      });
      if (need <= rescan()) return;
      backoff(attempt);  // members finishing their reads, zombies draining, earlier batches publishing
    }
  }

  void overtake(State& st, std::uint64_t need) noexcept {
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
    std::uint64_t pos = r.pos;
    while (pos < floor) {
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
          r.tail_cache = claim_.load(std::memory_order_acquire);
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
    r.tail_cache = claim_.load(std::memory_order_acquire);
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
    if (st.head.load(std::memory_order_acquire) >= claim_.load(std::memory_order_acquire)) return 0;
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
        while (end < floor && published(end, block_number, block)) ++end;
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
      while (eligible < max) {
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
    if (st.head.load(std::memory_order_acquire) >= claim_.load(std::memory_order_acquire)) {
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
    if (published(h, block_number, block)) return WaitStatus::ready;
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
  std::size_t table_size_ = 0;  // capacity / block_size + 1 entries, indexed by block number modulo
  std::size_t lines_per_block_ = 0;
  Entry* table_ = nullptr;
  std::atomic<Chunk*> chunks_{nullptr};
  std::atomic<Slot*> spare_[kSpareBlocks];
  std::atomic<std::size_t> allocated_blocks_{0};

  // Joins, leaves and retirement (all rare: once per block at most).
  alignas(kFalseSharingRange) std::mutex registry_mutex_;
  std::uint64_t retired_blocks_ = 0;  // guarded by registry_mutex_: blocks below it are retired
  std::atomic<std::size_t> zombies_{0};

  // Read by every batch on both sides, written only by joins, leaves, clear() and close().
  alignas(kFalseSharingRange) std::atomic<std::uint64_t> members_{make_members(1, 0)};  // epoch << 32 | count
  std::atomic<std::uint64_t> clear_floor_{0};
  std::atomic<bool> closed_{false};

  // The tail: claimed by producers, polled by readers that have caught up.
  alignas(kFalseSharingRange) std::atomic<std::uint64_t> claim_{0};

  // Producer side only: the cached gate (multi: shared by producers), the single producer's state.
  alignas(kFalseSharingRange) std::atomic<std::uint64_t> gate_cache_{0};
  std::uint64_t sp_next_ = 0;
  std::uint64_t sp_gate_ = 0;
  std::uint64_t sp_block_number_ = kNone;
  Slot* sp_block_ = nullptr;

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
