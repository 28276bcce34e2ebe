/// @file
/// `kincir::Bytes`: an immutable, reference-counted byte buffer shared without copying.
#pragma once

#include <kincir/config.hpp>

#include <algorithm>    // std::equal
#include <atomic>       // std::atomic for the reference count
#include <cstdint>      // std::uint8_t
#include <cstring>      // std::memcpy
#include <limits>       // the largest payload InlineBytes can hold
#include <new>          // ::operator new for the single-allocation copy, std::bad_alloc
#include <span>         // std::span views
#include <string>       // std::string adoption
#include <string_view>  // std::string_view views
#include <type_traits>  // std::is_lvalue_reference_v, std::remove_cvref_t
#include <utility>      // std::exchange, std::move, std::forward, std::pair
#include <vector>       // std::vector adoption

namespace kincir {

namespace detail {

/// The shared owner of a buffer. Its concrete kinds (adopted vector, adopted string, inline copy)
/// differ only in what `destroy` frees.
struct BytesControl {
  std::atomic<std::size_t> refs{1};
  void (*destroy)(BytesControl*) noexcept;
};

/// A slab of one-line cells for the shared owners of adopted containers. A thread carves cells
/// from its current slab in order; each owner's release, on any thread, counts one down, and the
/// last one frees the slab. One allocation and one `free()` per `kCells` adopted payloads instead
/// of one per payload, and an owner per cache line (owners of different payloads never share one).
/// The cost: a slab lives as long as the longest-lived payload carved from it.
struct alignas(kCacheLineSize) ControlSlab {
  static constexpr std::uint32_t kCells = 31;
  struct alignas(kCacheLineSize) Cell {
    std::byte bytes[kCacheLineSize];
  };

  std::atomic<std::uint32_t> live{kCells};  ///< Cells not yet released (carved or not).
  Cell cells[kCells];

  /// Releases `n` cells; the last release frees the slab. acq_rel: every owner's use of its cell
  /// happens before the free.
  void release(std::uint32_t n) noexcept {
    if (live.fetch_sub(n, std::memory_order_acq_rel) == n) delete this;
  }
};

/// A thread's carving state (see `ControlCarver`): trivially destructible and `constinit`, so it
/// stays usable while the thread's other `thread_local` objects are destroyed.
struct CarverState {
  ControlSlab* slab = nullptr;
  std::uint32_t next = 0;
  bool exited = false;  ///< The thread's guard is gone: it is ending.
};
inline constinit thread_local CarverState carver_state{};

/// A thread's current slab. Its cells not yet carved are released at thread exit (by a guard). A
/// payload adopted after that — by a `thread_local` destructor, or a static object's destructor at
/// exit — gets a slab of its own whose other cells are given back at once.
class ControlCarver {
 public:
  /// A cell for an owner, and its slab. @throws std::bad_alloc if a new slab cannot be allocated.
  static std::pair<void*, ControlSlab*> take() {
    CarverState& s = carver_state;
    if (s.exited) [[unlikely]] {  // the thread is ending: one cell, nothing kept
      auto* slab = new ControlSlab;
      slab->release(ControlSlab::kCells - 1);
      return {slab->cells[0].bytes, slab};
    }
    if (s.slab == nullptr || s.next == ControlSlab::kCells) {
      s.slab = new ControlSlab;  // a full one is left to its owners, who free it
      s.next = 0;
      thread_local Guard guard;  // constructed once per thread, on its first slab
      (void)guard;
    }
    return {s.slab->cells[s.next++].bytes, s.slab};
  }

 private:
  /// Releases the cells of the thread's slab not yet carved when the thread ends (a slab whose
  /// cells are all carved belongs to their owners alone, and may be gone already).
  struct Guard {
    Guard() noexcept = default;
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    ~Guard() {
      CarverState& s = carver_state;
      if (s.slab != nullptr && s.next != ControlSlab::kCells) s.slab->release(ControlSlab::kCells - s.next);
      s.slab = nullptr;
      s.exited = true;
    }
  };
};

template <class Container>
struct AdoptedBytes final : BytesControl {
  Container storage;
  ControlSlab* slab;

  static AdoptedBytes* create(Container&& c) {
    static_assert(sizeof(AdoptedBytes) <= sizeof(ControlSlab::Cell), "an owner fits one cell");
    const auto [cell, owner] = ControlCarver::take();
    return ::new (cell) AdoptedBytes(std::move(c), owner);
  }

 private:
  AdoptedBytes(Container&& c, ControlSlab* owner) noexcept : storage(std::move(c)), slab(owner) {
    destroy = [](BytesControl* self) noexcept {
      auto* adopted = static_cast<AdoptedBytes*>(self);
      ControlSlab* s = adopted->slab;
      adopted->~AdoptedBytes();
      s->release(1);
    };
  }
};

/// Header and bytes in one allocation, for `Bytes::copy_from`.
struct InlineBytes final : BytesControl {
  /// Room for `size` bytes, uninitialised.
  static InlineBytes* create(std::size_t size) {
    if (size > std::numeric_limits<std::size_t>::max() - sizeof(InlineBytes)) throw std::bad_alloc();
    void* memory = ::operator new(sizeof(InlineBytes) + size);
    return ::new (memory) InlineBytes;
  }
  static InlineBytes* create(const std::uint8_t* data, std::size_t size) {
    auto* self = create(size);
    if (size != 0) std::memcpy(self->bytes(), data, size);
    return self;
  }

  std::uint8_t* bytes() noexcept { return reinterpret_cast<std::uint8_t*>(this + 1); }

 private:
  InlineBytes() noexcept {
    destroy = [](BytesControl* self) noexcept {
      static_cast<InlineBytes*>(self)->~InlineBytes();
      ::operator delete(self);
    };
  }
};

}  // namespace detail

/// An immutable byte buffer. Copies share the buffer (one atomic increment), moves are free,
/// `slice` is a zero-copy view that keeps the buffer alive.
///
/// Thread safety: distinct `Bytes` objects may be used concurrently even when they share a
/// buffer; one `Bytes` object is like any value (no concurrent writes).
class Bytes {
 public:
  using value_type = std::uint8_t;
  using const_iterator = const std::uint8_t*;

  /// An empty buffer; no allocation.
  Bytes() noexcept = default;

  /// Payloads of at most this many bytes are copied rather than adopted: one allocation holding
  /// the count and the bytes costs less than keeping the container's block and a second one for
  /// the count, and leaves one `free()`, not two, to whoever drops the last copy.
  static constexpr std::size_t kCopyAtMost = 256;

  /// Adopts the vector's storage: no copy, one small allocation for the shared owner (at most
  /// `kCopyAtMost` bytes are copied into one allocation instead).
  Bytes(std::vector<std::uint8_t>&& v) : Bytes(adopt(std::move(v))) {}  // NOLINT(google-explicit-constructor)

  /// Adopts the string's storage: no copy of a heap-allocated string (at most `kCopyAtMost`
  /// bytes are copied into one allocation instead).
  Bytes(std::string&& s) : Bytes(adopt(std::move(s))) {}  // NOLINT(google-explicit-constructor)

  /// `size` bytes of `value` in one allocation (the guide's `vec![0u8; size]`).
  static Bytes filled(std::size_t size, std::uint8_t value) {
    if (size == 0) return {};
    auto* control = detail::InlineBytes::create(size);
    std::memset(control->bytes(), value, size);
    return Bytes(control->bytes(), size, control);
  }

  /// `size` bytes in one allocation, written by `fill(std::span<std::uint8_t>)` before the buffer
  /// becomes immutable: a payload serialised in place, without an intermediate container.
  template <class Fill>
  static Bytes build(std::size_t size, Fill&& fill) {
    if (size == 0) return {};
    auto* control = detail::InlineBytes::create(size);
    Bytes out(control->bytes(), size, control);  // owns the buffer should fill throw
    std::forward<Fill>(fill)(std::span<std::uint8_t>(control->bytes(), size));
    return out;
  }

  /// Wraps bytes that outlive every copy (string literals, static tables): no allocation, no
  /// reference counting.
  static Bytes from_static(std::span<const std::uint8_t> data) noexcept {
    return Bytes(data.data(), data.size(), nullptr);
  }
  static Bytes from_static(std::string_view data) noexcept {
    return Bytes(reinterpret_cast<const std::uint8_t*>(data.data()), data.size(), nullptr);
  }

  /// Copies the bytes into a new buffer (one allocation holds both the count and the bytes).
  static Bytes copy_from(std::span<const std::uint8_t> data) {
    if (data.empty()) return {};
    auto* control = detail::InlineBytes::create(data.data(), data.size());
    return Bytes(control->bytes(), data.size(), control);
  }
  static Bytes copy_from(std::string_view data) {
    return copy_from(std::span(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()));
  }

  Bytes(const Bytes& other) noexcept : data_(other.data_), size_(other.size_), control_(other.control_) {
    if (control_ != nullptr) control_->refs.fetch_add(1, std::memory_order_relaxed);
  }

  Bytes(Bytes&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        control_(std::exchange(other.control_, nullptr)) {}

  Bytes& operator=(const Bytes& other) noexcept {
    Bytes(other).swap(*this);
    return *this;
  }

  Bytes& operator=(Bytes&& other) noexcept {
    Bytes(std::move(other)).swap(*this);
    return *this;
  }

  ~Bytes() { release(); }

  void swap(Bytes& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(control_, other.control_);
  }

  [[nodiscard]] const std::uint8_t* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] const_iterator begin() const noexcept { return data_; }
  [[nodiscard]] const_iterator end() const noexcept { return data_ + size_; }
  [[nodiscard]] std::uint8_t operator[](std::size_t i) const noexcept { return data_[i]; }

  [[nodiscard]] std::span<const std::uint8_t> span() const noexcept { return {data_, size_}; }
  [[nodiscard]] std::string_view view() const noexcept { return {reinterpret_cast<const char*>(data_), size_}; }

  /// A view of `[offset, offset + count)` sharing this buffer. Both are clamped to `size()`.
  [[nodiscard]] Bytes slice(std::size_t offset, std::size_t count = static_cast<std::size_t>(-1)) const noexcept {
    offset = offset < size_ ? offset : size_;
    count = count < size_ - offset ? count : size_ - offset;
    if (control_ != nullptr) control_->refs.fetch_add(1, std::memory_order_relaxed);
    return Bytes(data_ + offset, count, control_);
  }

  /// Number of `Bytes` sharing this buffer; 0 for static or empty data. For tests and
  /// diagnostics only: another thread may change it at any time.
  [[nodiscard]] std::size_t use_count() const noexcept {
    return control_ != nullptr ? control_->refs.load(std::memory_order_relaxed) : 0;
  }

  /// A hint for code about to drop (or read) many payloads in a row, such as a queue handing out
  /// messages: brings the shared owner's count, and the front of the buffer where allocators keep
  /// their header, into the cache, so the release a few messages later does not wait for memory.
  /// Changes nothing; costs two prefetch instructions, or nothing for static and empty data.
  void prefetch() const noexcept {
    if (control_ == nullptr) return;
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(control_, 1);  // the count is written by the release
    // The allocator's header of an adopted buffer sits just before it (integer arithmetic: the
    // address may lie outside the buffer, and a prefetch never faults).
    // NOLINTNEXTLINE(performance-no-int-to-ptr): an address for a hint, never dereferenced
    __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(data_) - 16), 1);
#endif
  }

  friend bool operator==(const Bytes& a, const Bytes& b) noexcept {
    return a.size_ == b.size_ && (a.data_ == b.data_ || std::equal(a.begin(), a.end(), b.begin()));
  }

 private:
  Bytes(const std::uint8_t* data, std::size_t size, detail::BytesControl* control) noexcept
      : data_(data), size_(size), control_(control) {}

  /// Takes an rvalue `c` by reference and moves from it only when it holds something. (Taking it
  /// by value made GCC 12 report -Wfree-nonheap-object at -O2/-O3 on the empty branch, a false
  /// positive.)
  template <class Container>
  requires(!std::is_lvalue_reference_v<Container>) static Bytes adopt(Container&& c) {
    if (c.empty()) return {};
    if (c.size() <= kCopyAtMost) {
      auto* copy = detail::InlineBytes::create(reinterpret_cast<const std::uint8_t*>(c.data()), c.size());
      const Container consumed(std::forward<Container>(c));  // left empty, as adoption leaves it
      return Bytes(copy->bytes(), consumed.size(), copy);
    }
    auto* control = detail::AdoptedBytes<std::remove_cvref_t<Container>>::create(std::forward<Container>(c));
    return Bytes(reinterpret_cast<const std::uint8_t*>(control->storage.data()), control->storage.size(), control);
  }

  void release() noexcept {
    if (control_ == nullptr) return;
    // A sole owner frees without a read-modify-write: holding the only reference, nobody else can
    // take or drop one meanwhile. The acquire load pairs with the release half of the other
    // owners' fetch_sub, so their reads of the buffer happen before the free.
    // Otherwise acq_rel: the last owner must see every other owner's reads finished before it frees.
    if (control_->refs.load(std::memory_order_acquire) == 1 ||
        control_->refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
      control_->destroy(control_);
  }

  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  detail::BytesControl* control_ = nullptr;
};

inline void swap(Bytes& a, Bytes& b) noexcept { a.swap(b); }

}  // namespace kincir
