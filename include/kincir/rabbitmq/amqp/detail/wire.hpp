/// @file
/// Big-endian primitives of the AMQP wire format: a writer that appends to a `ByteBuffer` and a
/// bounds-checked reader over a span. Private to the codec.
#pragma once

#include <kincir/config.hpp>

#include <kincir/rabbitmq/amqp/byte_buffer.hpp>  // ByteBuffer, the writer's output
#include <kincir/rabbitmq/amqp/error.hpp>        // errc for the reader's and writer's sticky errors

#include <cstdint>       // std::uint8_t ... std::uint64_t
#include <cstring>       // std::memcpy
#include <span>          // std::span input and views
#include <string_view>   // std::string_view strings
#include <system_error>  // std::error_code

namespace kincir::rabbitmq::amqp::detail {

inline void store_u16(std::uint8_t* p, std::uint16_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}

inline void store_u32(std::uint8_t* p, std::uint32_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

inline void store_u64(std::uint8_t* p, std::uint64_t v) noexcept {
  store_u32(p, static_cast<std::uint32_t>(v >> 32));
  store_u32(p + 4, static_cast<std::uint32_t>(v));
}

inline std::uint16_t load_u16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>((static_cast<unsigned>(p[0]) << 8) | p[1]);
}

inline std::uint32_t load_u32(const std::uint8_t* p) noexcept {
  return (static_cast<std::uint32_t>(p[0]) << 24) | (static_cast<std::uint32_t>(p[1]) << 16) |
         (static_cast<std::uint32_t>(p[2]) << 8) | static_cast<std::uint32_t>(p[3]);
}

inline std::uint64_t load_u64(const std::uint8_t* p) noexcept {
  return (static_cast<std::uint64_t>(load_u32(p)) << 32) | load_u32(p + 4);
}

/// Appends big-endian values to a `ByteBuffer`. The first encoding error (a short string over
/// 255 bytes, a table name too long) is kept; later writes still happen but the output must be
/// discarded when `error()` is set.
class WireWriter {
 public:
  explicit WireWriter(ByteBuffer& out) noexcept : out_(&out) {}

  void u8(std::uint8_t v) { *out_->extend(1) = v; }
  void u16(std::uint16_t v) { store_u16(out_->extend(2), v); }
  void u32(std::uint32_t v) { store_u32(out_->extend(4), v); }
  void u64(std::uint64_t v) { store_u64(out_->extend(8), v); }
  void raw(const void* bytes, std::size_t n) { out_->append(bytes, n); }

  /// u8 length then the bytes; longer than 255 bytes is `errc::string_too_long`.
  void shortstr(std::string_view s) {
    if (s.size() > 255) {
      fail(errc::string_too_long);
      return;
    }
    std::uint8_t* p = out_->extend(1 + s.size());
    *p = static_cast<std::uint8_t>(s.size());
    if (!s.empty()) std::memcpy(p + 1, s.data(), s.size());
  }

  /// u32 length then the bytes.
  void longstr(std::string_view s) {
    std::uint8_t* p = out_->extend(4 + s.size());
    store_u32(p, static_cast<std::uint32_t>(s.size()));
    if (!s.empty()) std::memcpy(p + 4, s.data(), s.size());
  }

  /// Reserves a u32 length to be patched by `end_length` once what it measures is written.
  [[nodiscard]] std::size_t begin_length() {
    out_->extend(4);
    return out_->size();
  }
  void end_length(std::size_t start) noexcept {
    store_u32(out_->data() + start - 4, static_cast<std::uint32_t>(out_->size() - start));
  }

  void fail(errc e) noexcept {
    if (!ec_) ec_ = e;
  }
  [[nodiscard]] std::error_code error() const noexcept { return ec_; }
  [[nodiscard]] ByteBuffer& buffer() noexcept { return *out_; }

 private:
  ByteBuffer* out_;
  std::error_code ec_;
};

/// Reads big-endian values from a span. Reading past the end, or any `fail`, sets a sticky
/// error, moves to the end and makes every later read return zero or empty: callers decode a
/// whole structure and check `error()` once.
class WireReader {
 public:
  /// `truncated` is the error reported when a read runs past the end.
  explicit WireReader(std::span<const std::uint8_t> in, errc truncated = errc::malformed_frame) noexcept
      : p_(in.data()), end_(in.data() + in.size()), truncated_(truncated) {}

  std::uint8_t u8() noexcept { return need(1) ? *p_++ : 0; }
  std::uint16_t u16() noexcept { return need(2) ? advance(load_u16(p_), 2) : 0; }
  std::uint32_t u32() noexcept { return need(4) ? advance(load_u32(p_), 4) : 0; }
  std::uint64_t u64() noexcept { return need(8) ? advance(load_u64(p_), 8) : 0; }

  /// `n` bytes as a view into the input.
  std::span<const std::uint8_t> bytes(std::size_t n) noexcept {
    if (!need(n)) return {};
    std::span<const std::uint8_t> s(p_, n);
    p_ += n;
    return s;
  }

  std::string_view shortstr() noexcept {
    std::size_t n = u8();
    auto b = bytes(n);
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }

  std::string_view longstr() noexcept {
    std::size_t n = u32();
    auto b = bytes(n);
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }

  [[nodiscard]] std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - p_); }
  [[nodiscard]] bool at_end() const noexcept { return p_ == end_; }
  [[nodiscard]] const std::uint8_t* position() const noexcept { return p_; }

  void fail(errc e) noexcept {
    if (!ec_) ec_ = e;
    p_ = end_;
  }
  [[nodiscard]] std::error_code error() const noexcept { return ec_; }
  [[nodiscard]] bool ok() const noexcept { return !ec_; }

 private:
  bool need(std::size_t n) noexcept {
    if (static_cast<std::size_t>(end_ - p_) >= n) [[likely]]
      return true;
    fail(truncated_);
    return false;
  }

  template <class T>
  T advance(T value, std::size_t n) noexcept {
    p_ += n;
    return value;
  }

  const std::uint8_t* p_;
  const std::uint8_t* end_;
  errc truncated_;
  std::error_code ec_;
};

}  // namespace kincir::rabbitmq::amqp::detail
