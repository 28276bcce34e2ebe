/// @file
/// Internal: the pieces `BroadcastRing` is made of: slots, the block table, the cursor registry.
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
  /// Cursors that have left the block: when it reaches the cursor count, the last one tries to
  /// retire it (a hint; retirement itself checks every cursor).
  std::atomic<std::uint32_t> passed{0};
};

/// Life of a cursor's registry entry.
enum class CursorPhase : std::uint32_t {
  free,     ///< Unused; may be handed to the next cursor.
  active,   ///< A cursor reads through it.
  leaving,  ///< Its cursor is gone; overtaking producers may still hold claims on it.
  zombie,   ///< Its cursor is gone; what was counted for it is being released (it still gates).
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
  std::uint32_t leave_epoch = 0;    ///< Zombie: epoch of its removal (elements tagged >= this never counted it).
  std::uint64_t drain_until = 0;    ///< Zombie: release counted elements below this, then it is free.
  bool drain_by_tag = false;  ///< Zombie of a single-producer ring: done at the first element tagged >= leave_epoch.

  CursorState() noexcept {
    for (auto& c : claims) c.store(kNoSequence, std::memory_order_relaxed);
  }
};

/// Registry entries come in chunks that are never freed before the ring: producers scan them
/// without a lock.
inline constexpr std::size_t kCursorsPerChunk = 8;

struct CursorChunk {
  CursorState states[kCursorsPerChunk];
  std::atomic<CursorChunk*> next{nullptr};
};

/// A small per-thread number, so concurrent group members start looking for a free claim slot at
/// different places.
inline std::size_t thread_hint() noexcept {
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t hint = next.fetch_add(1, std::memory_order_relaxed);
  return hint;
}

}  // namespace kincir::memory::detail
