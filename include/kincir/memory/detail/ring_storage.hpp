/// @file
/// Internal: the pieces `BroadcastRing` is made of: slots, the block table, the cursor registry and
/// the records of departed cursors.
#pragma once

#include <kincir/config.hpp>

#include <atomic>   // slot sequences, table entries, cursor positions
#include <cstddef>  // std::byte, std::size_t
#include <cstdint>  // std::uint32_t, std::uint64_t
#include <limits>   // kNoSequence
#include <new>      // std::launder

namespace kincir::memory::detail {

/// "No sequence": a free claim announcement, or "no cursor at all" as a minimum.
inline constexpr std::uint64_t kNoSequence = std::numeric_limits<std::uint64_t>::max();

/// An element type may declare `void ring_prefetch(const T&) noexcept`, found by argument-dependent
/// lookup: readers call it on the element a few slots ahead of the one they deliver, so what the
/// element's destruction (or copy) will touch — a payload's reference count, its allocator header —
/// is already in the cache when they get there. A hint only; nothing depends on it.
template <class T>
concept RingPrefetchable = requires(const T& t) {
  { ring_prefetch(t) }
  noexcept;
};

/// One element. The producer constructs the element, then release-stores `seq = s + 1`: sequence
/// `s` is published in this slot. Used when `T` is trivially copyable and destructible: nothing
/// has to be destroyed, so readers just copy.
template <class T, bool Counted>
struct RingSlot {
  std::atomic<std::uint64_t> seq{0};
  alignas(T) std::byte storage[sizeof(T)];

  T& value() noexcept { return *std::launder(reinterpret_cast<T*>(storage)); }
};

/// A slot whose element must be destroyed once read: `remaining` counts the cursors that still
/// have to read it (the last one moves it out); `tag` is the membership epoch the producer saw, so
/// a cursor that joined later knows the element was not counted for it and skips it.
template <class T>
struct RingSlot<T, true> {
  std::atomic<std::uint64_t> seq{0};
  std::atomic<std::uint32_t> remaining{0};
  std::uint32_t tag = 0;
  alignas(T) std::byte storage[sizeof(T)];

  T& value() noexcept { return *std::launder(reinterpret_cast<T*>(storage)); }
};

/// Blocks are allocated as arrays of cache lines, so every block starts on a line.
struct alignas(kCacheLineSize) CacheLine {
  std::byte bytes[kCacheLineSize];
};

/// One entry of the block table: which block number it holds, and where. `slots` is stored before
/// `number` (release), so a reader that finds its block number also finds the pointer.
template <class Slot>
struct BlockEntry {
  std::atomic<std::uint64_t> number{kNoSequence};
  std::atomic<Slot*> slots{nullptr};
};

/// The block table: a power-of-two number of entries, indexed by block number modulo the size,
/// stored right after this header. It is sized to the blocks that are live, not to the capacity:
/// it is replaced by a larger one when a live block is in the way of a new one, and by a smaller one
/// when the backlog has gone. A replaced table is kept (`retire_tail`, `next_retired`) until no
/// thread can still be looking into it.
template <class Slot>
struct BlockTable {
  using Entry = BlockEntry<Slot>;

  std::size_t size = 0;                ///< Entries; a power of two.
  std::uint64_t retire_tail = 0;       ///< Once replaced: the tail when it was replaced.
  BlockTable* next_retired = nullptr;  ///< Once replaced: the next table waiting to be freed.

  static constexpr std::size_t entries_offset() noexcept {
    return (sizeof(BlockTable) + alignof(Entry) - 1) / alignof(Entry) * alignof(Entry);
  }
  /// Bytes of a table of `n` entries (header included), or 0 if that does not fit in a `size_t`.
  static constexpr std::size_t bytes_for(std::size_t n) noexcept {
    if (n > (std::numeric_limits<std::size_t>::max() - entries_offset() - kCacheLineSize) / sizeof(Entry)) return 0;
    return entries_offset() + n * sizeof(Entry);
  }
  Entry* entries() noexcept {
    return std::launder(reinterpret_cast<Entry*>(reinterpret_cast<std::byte*>(this) + entries_offset()));
  }
  const Entry* entries() const noexcept {
    return std::launder(reinterpret_cast<const Entry*>(reinterpret_cast<const std::byte*>(this) + entries_offset()));
  }
  Entry& at(std::uint64_t block) noexcept { return entries()[block & (size - 1)]; }
  const Entry& at(std::uint64_t block) const noexcept { return entries()[block & (size - 1)]; }
};

/// Life of a cursor's registry entry.
enum class CursorPhase : std::uint32_t {
  free,     ///< Unused; may be handed to the next cursor.
  active,   ///< A cursor reads through it.
  leaving,  ///< Its cursor is going; overtaking producers may still hold claims on it.
};

/// What a departed cursor still owes: its share of the elements that were counted for it but were
/// still being written when it left (`join_epoch <= tag < leave_epoch`, below `drain_until`). It
/// gates producers at `head` until it is done. Guarded by the registry mutex.
struct DepartedCursor {
  std::uint64_t head = 0;         ///< Next sequence to look at.
  std::uint64_t drain_until = 0;  ///< Done once `head` reaches it.
  std::uint32_t join_epoch = 0;
  std::uint32_t leave_epoch = 0;
  DepartedCursor* next = nullptr;
};

/// Claim announcements per shared cursor: at most this many members (and overtaking producers) are
/// inside a read at once; more wait for a free one.
inline constexpr std::size_t kClaimSlots = 16;

/// The registry entry of one cursor. Its position lives on its own lines: the reader writes it
/// once per batch and producers read it only when their cached minimum says the ring is full.
struct alignas(kFalseSharingRange) CursorState {
  /// Next sequence to read (single reader) or to claim (shared cursor). Every sequence below it is
  /// published.
  std::atomic<std::uint64_t> head{0};
  /// Shared cursors: the lowest sequence each claimant in progress may still touch.
  alignas(kFalseSharingRange) std::atomic<std::uint64_t> claims[kClaimSlots];
  /// Elements skipped because producers overtook this cursor.
  alignas(kFalseSharingRange) std::atomic<std::uint64_t> lost{0};
  std::atomic<CursorPhase> phase{CursorPhase::free};
  std::atomic<bool> shared{false};  ///< Group cursor, or any cursor of an overtaking ring.
  std::uint32_t join_epoch = 0;     ///< Membership epoch it joined at (counted elements carry >= this).
  /// Counted elements: the record this cursor will need if it leaves while elements counted for it
  /// are still being written. Taken when it joins, so leaving never allocates.
  DepartedCursor* record = nullptr;

  CursorState() noexcept {
    for (auto& c : claims) c.store(kNoSequence, std::memory_order_relaxed);
  }
};

/// Registry entries come in chunks. A chunk whose entries are all free is unlinked (the first one
/// stays) and freed once no producer is scanning the registry without the lock.
inline constexpr std::size_t kCursorsPerChunk = 8;

struct CursorChunk {
  CursorState states[kCursorsPerChunk];
  std::atomic<CursorChunk*> next{nullptr};
  CursorChunk* unlinked_next = nullptr;  ///< Unlinked, waiting to be freed (registry mutex).

  bool holds(const CursorState* st) const noexcept {
    const auto p = reinterpret_cast<std::uintptr_t>(st);
    const auto first = reinterpret_cast<std::uintptr_t>(&states[0]);
    return p >= first && p < first + sizeof(states);
  }
};

/// Per-block "cursors that have left it" counters, indexed by block number modulo this. Each packs
/// the low 32 bits of a block number with a count; a newer block takes the counter over.
inline constexpr std::size_t kPassedCounters = 64;

/// A small per-thread number, so concurrent group members start looking for a free claim slot at
/// different places.
inline std::size_t thread_hint() noexcept {
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t hint = next.fetch_add(1, std::memory_order_relaxed);
  return hint;
}

}  // namespace kincir::memory::detail
