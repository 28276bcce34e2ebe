/// @file
/// `kincir::Metadata`: a small flat string→string map carried by every message.
#pragma once

#include <kincir/config.hpp>

#include <cstddef>           // std::size_t, std::ptrdiff_t
#include <cstdint>           // std::uint8_t, std::uint32_t
#include <cstring>           // std::memcpy, std::memmove, std::memcmp
#include <functional>        // std::less for pointer comparison
#include <initializer_list>  // the list constructor
#include <iterator>          // std::forward_iterator_tag
#include <new>               // ::operator new for the out-of-line buffer
#include <optional>          // get's result
#include <stdexcept>         // std::length_error
#include <string_view>       // keys and values
#include <utility>           // std::pair

namespace kincir {

/// A map from string keys to string values, kept sorted by key in one packed buffer: each entry is
/// its key length, key, value length and value (lengths as base-128 varints). Up to
/// `kInlineCapacity` packed bytes — one or two short entries such as `id: 12345` — live inside the
/// object, so a typical message's metadata costs no allocation and no `free()`; more go to one heap
/// buffer.
///
/// Iteration visits entries in key order as `std::pair<std::string_view, std::string_view>`
/// (`for (const auto& [key, value] : metadata)`); views into the map are valid until it is
/// changed or destroyed.
class Metadata {
 public:
  using value_type = std::pair<std::string_view, std::string_view>;

  /// Packed bytes stored without allocating.
  static constexpr std::size_t kInlineCapacity = 23;

  /// Forward iterator over the entries; dereferencing yields a pair of views by value.
  class const_iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = Metadata::value_type;
    using difference_type = std::ptrdiff_t;
    using reference = value_type;
    using pointer = void;

    const_iterator() noexcept = default;

    value_type operator*() const noexcept { return decode(p_).entry; }
    const_iterator& operator++() noexcept {
      p_ = decode(p_).next;
      return *this;
    }
    const_iterator operator++(int) noexcept {
      const_iterator old = *this;
      ++*this;
      return old;
    }
    friend bool operator==(const const_iterator& a, const const_iterator& b) noexcept { return a.p_ == b.p_; }

   private:
    friend class Metadata;
    explicit const_iterator(const char* p) noexcept : p_(p) {}
    const char* p_ = nullptr;
  };

  Metadata() noexcept = default;
  Metadata(std::initializer_list<value_type> entries) : Metadata() {
    for (const auto& [k, v] : entries) set(k, v);
  }

  Metadata(const Metadata& other) : Metadata() { assign(other.bytes(), other.used()); }
  Metadata(Metadata&& other) noexcept : Metadata() { steal(other); }
  Metadata& operator=(const Metadata& other) {
    if (this != &other) assign(other.bytes(), other.used());
    return *this;
  }
  Metadata& operator=(Metadata&& other) noexcept {
    if (this != &other) {
      release();
      steal(other);
    }
    return *this;
  }
  ~Metadata() { release(); }

  /// The value for `key`, if present. The view is valid until the map is changed or destroyed.
  [[nodiscard]] std::optional<std::string_view> get(std::string_view key) const noexcept {
    const Found f = find(key);
    if (!f.match) return std::nullopt;
    return decode(f.at).entry.second;
  }

  /// Inserts `key` or replaces its value.
  void set(std::string_view key, std::string_view value) {
    const Found f = find(key);
    const std::size_t entry = packed_size(key.size(), value.size());
    const std::size_t at = static_cast<std::size_t>(f.at - bytes());
    const std::size_t old = f.match ? static_cast<std::size_t>(decode(f.at).next - f.at) : 0;
    const std::size_t used_now = used();
    const std::size_t used_after = used_now - old + entry;
    if (used_after > kMaxBytes) throw std::length_error("kincir::Metadata: too large");
    // Both views may point into this map (set(get(a), ...)): copy them out before moving bytes.
    if (overlaps(key) || overlaps(value)) {
      const Metadata copy(*this);
      set_at(at, old, used_now, used_after, rebase(key, copy), rebase(value, copy));
      return;
    }
    set_at(at, old, used_now, used_after, key, value);
  }

  [[nodiscard]] bool contains(std::string_view key) const noexcept { return find(key).match; }

  /// Removes `key`; returns whether it was present.
  bool erase(std::string_view key) noexcept {
    const Found f = find(key);
    if (!f.match) return false;
    char* at = bytes() + (f.at - bytes());
    const char* next = decode(f.at).next;
    const std::size_t tail = static_cast<std::size_t>(bytes() + used() - next);
    std::memmove(at, next, tail);
    set_used(used() - static_cast<std::size_t>(next - at));
    return true;
  }

  /// Removes every entry, keeping a heap buffer for reuse.
  void clear() noexcept { set_used(0); }
  /// Makes room for `n` packed bytes (entries of short strings take their lengths plus two).
  void reserve(std::size_t n) {
    if (n > capacity()) grow(n, used());
  }

  /// Number of entries (counts them: a map has a handful).
  [[nodiscard]] std::size_t size() const noexcept {
    std::size_t n = 0;
    for (auto it = begin(); it != end(); ++it) ++n;
    return n;
  }
  [[nodiscard]] bool empty() const noexcept { return used() == 0; }
  [[nodiscard]] const_iterator begin() const noexcept { return const_iterator(bytes()); }
  [[nodiscard]] const_iterator end() const noexcept { return const_iterator(bytes() + used()); }

  /// Whether the entries live on the heap (for tests and diagnostics).
  [[nodiscard]] bool on_heap() const noexcept { return tag() == kHeapTag; }

  friend bool operator==(const Metadata& a, const Metadata& b) noexcept {
    // The packing is canonical (sorted, unique keys, minimal varints): equal maps, equal bytes.
    return a.used() == b.used() && (a.used() == 0 || std::memcmp(a.bytes(), b.bytes(), a.used()) == 0);
  }

 private:
  static constexpr std::uint8_t kHeapTag = 0xff;
  static constexpr std::size_t kMaxBytes = 0xffff'ffffU;

  struct Decoded {
    value_type entry;
    const char* next;
  };

  static std::size_t varint_size(std::size_t n) noexcept {
    std::size_t bytes = 1;
    while (n >= 0x80) {
      n >>= 7;
      ++bytes;
    }
    return bytes;
  }
  static std::size_t packed_size(std::size_t key, std::size_t value) noexcept {
    return varint_size(key) + key + varint_size(value) + value;
  }
  static char* put_varint(char* p, std::size_t n) noexcept {
    while (n >= 0x80) {
      *p++ = static_cast<char>(static_cast<std::uint8_t>(n) | 0x80U);
      n >>= 7;
    }
    *p++ = static_cast<char>(n);
    return p;
  }
  static const char* get_varint(const char* p, std::size_t& n) noexcept {
    n = 0;
    unsigned shift = 0;
    for (;;) {
      const auto byte = static_cast<std::uint8_t>(*p++);
      n |= static_cast<std::size_t>(byte & 0x7fU) << shift;
      if ((byte & 0x80U) == 0) return p;
      shift += 7;
    }
  }
  static Decoded decode(const char* p) noexcept {
    std::size_t k = 0;
    std::size_t v = 0;
    p = get_varint(p, k);
    const std::string_view key(p, k);
    p = get_varint(p + k, v);
    const std::string_view value(p, v);
    return {{key, value}, p + v};
  }

  struct Found {
    const char* at;  // the entry with the key, or where it would go
    bool match;
  };
  [[nodiscard]] Found find(std::string_view key) const noexcept {
    const char* p = bytes();
    const char* const last = p + used();
    while (p != last) {
      const Decoded d = decode(p);
      if (d.entry.first == key) return {p, true};
      if (key < d.entry.first) break;
      p = d.next;
    }
    return {p, false};
  }

  /// Where the entries are when they are on the heap; kept in `data_` (read and written by copy).
  struct Heap {
    char* data;
    std::uint32_t used;
    std::uint32_t capacity;
  };
  static_assert(sizeof(Heap) <= kInlineCapacity, "the heap description lives in the inline bytes");
  [[nodiscard]] Heap heap() const noexcept {
    Heap h{};
    std::memcpy(&h, data_, sizeof h);
    return h;
  }
  void set_heap(const Heap& h) noexcept {
    std::memcpy(data_, &h, sizeof h);
    set_tag(kHeapTag);
  }

  [[nodiscard]] std::size_t used() const noexcept { return on_heap() ? heap().used : tag(); }
  [[nodiscard]] std::size_t capacity() const noexcept { return on_heap() ? heap().capacity : kInlineCapacity; }
  void set_used(std::size_t n) noexcept {
    if (on_heap()) {
      Heap h = heap();
      h.used = static_cast<std::uint32_t>(n);
      set_heap(h);
    } else {
      set_tag(static_cast<std::uint8_t>(n));
    }
  }
  [[nodiscard]] const char* bytes() const noexcept { return on_heap() ? heap().data : data_; }
  [[nodiscard]] char* bytes() noexcept { return on_heap() ? heap().data : data_; }

  [[nodiscard]] bool overlaps(std::string_view s) const noexcept {
    const char* first = bytes();
    return !s.empty() && std::less_equal<>()(first, s.data()) && std::less<>()(s.data(), first + used());
  }
  [[nodiscard]] std::string_view rebase(std::string_view s, const Metadata& copy) const noexcept {
    if (!overlaps(s)) return s;
    return {copy.bytes() + (s.data() - bytes()), s.size()};
  }

  /// Replaces the `old` bytes at `at` with the entry (`used_now` -> `used_after` bytes in all).
  void set_at(std::size_t at, std::size_t old, std::size_t used_now, std::size_t used_after, std::string_view key,
              std::string_view value) {
    if (used_after > capacity()) grow(used_after, used_now);
    char* const p = bytes();
    std::memmove(p + at + (used_after - used_now + old), p + at + old, used_now - at - old);
    char* w = put_varint(p + at, key.size());
    if (!key.empty()) std::memcpy(w, key.data(), key.size());
    w = put_varint(w + key.size(), value.size());
    if (!value.empty()) std::memcpy(w, value.data(), value.size());
    set_used(used_after);
  }

  /// Moves the first `keep` bytes into a heap buffer of at least `n` bytes.
  void grow(std::size_t n, std::size_t keep) {
    std::size_t capacity = this->capacity() * 2;
    if (capacity < n) capacity = n;
    if (capacity > kMaxBytes) capacity = kMaxBytes;
    auto* fresh = static_cast<char*>(::operator new(capacity));
    if (keep != 0) std::memcpy(fresh, bytes(), keep);
    release();
    set_heap({fresh, static_cast<std::uint32_t>(keep), static_cast<std::uint32_t>(capacity)});
  }

  void assign(const char* from, std::size_t n) {
    if (n > capacity()) grow(n, 0);
    if (n != 0) std::memcpy(bytes(), from, n);
    set_used(n);
  }

  void steal(Metadata& other) noexcept {
    std::memcpy(data_, other.data_, sizeof data_);  // 24 bytes: three word moves
    other.set_tag(0);
  }

  void release() noexcept {
    if (on_heap()) {
      ::operator delete(heap().data);
      set_tag(0);
    }
  }

  // Inline: the first kInlineCapacity bytes of `data_` hold the packed entries and the last byte
  // (the tag) their length. On the heap: `data_` starts with a `Heap` and the tag is kHeapTag.
  [[nodiscard]] std::uint8_t tag() const noexcept { return static_cast<std::uint8_t>(data_[kInlineCapacity]); }
  void set_tag(std::uint8_t t) noexcept { data_[kInlineCapacity] = static_cast<char>(t); }

  alignas(Heap) char data_[kInlineCapacity + 1] = {};
};

static_assert(sizeof(Metadata) == 24, "Metadata keeps Message within one cache line");

}  // namespace kincir
