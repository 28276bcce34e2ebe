/// @file
/// `OutputBuffer`: what the codec hands to a socket, as scatter-gather buffers: bytes the codec
/// encoded (frame headers, methods, properties) interleaved with borrowed views of message
/// bodies. Small bodies are copied in while the buffer is small (one scatter entry, and a share
/// of a system call, cost more than copying them); larger ones are never copied.
#pragma once

#include <kincir/config.hpp>

#include <kincir/rabbitmq/amqp/byte_buffer.hpp>  // ByteBuffer for the encoded bytes

#include <cstdint>  // std::uint8_t
#include <cstring>  // std::memcpy for flatten
#include <span>     // std::span buffers
#include <vector>   // std::vector of borrowed views and of buffers

namespace kincir::rabbitmq::amqp {

/// Encoded bytes plus borrowed body views, in wire order. The borrowed bytes must stay alive and
/// unchanged until the buffer has been written (the I/O layer keeps the message's `Bytes`).
/// `buffers` produces plain `std::span<const std::uint8_t>` lists for a gathering write.
class OutputBuffer {
 public:
  /// The encoded bytes; encoders append to it directly.
  [[nodiscard]] ByteBuffer& bytes() noexcept { return bytes_; }
  [[nodiscard]] const ByteBuffer& bytes() const noexcept { return bytes_; }

  /// Bodies up to this size are copied into the encoded bytes...
  static constexpr std::size_t kCopyBodiesUpTo = 2048;
  /// ...while the encoded bytes stay within this (a buffer's memory stays small when it is
  /// reused; a burst of publishes beyond it borrows the rest).
  static constexpr std::size_t kCopyBudget = std::size_t{64} * 1024;

  /// Whether a body of `size` bytes is copied (`bytes().append`) rather than borrowed.
  [[nodiscard]] bool copies_body(std::size_t size) const noexcept {
    return size <= kCopyBodiesUpTo && bytes_.size() + size <= kCopyBudget;
  }

  /// Appends a view of bytes owned elsewhere (a body), after everything encoded so far. The
  /// bytes must stay alive and unchanged until written.
  void append_borrowed(std::span<const std::uint8_t> data) {
    if (data.empty()) return;
    borrowed_.push_back(Borrowed{bytes_.size(), data});
    borrowed_size_ += data.size();
  }

  /// Total bytes to write.
  [[nodiscard]] std::size_t size() const noexcept { return bytes_.size() + borrowed_size_; }
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }

  void clear() noexcept {
    bytes_.clear();
    borrowed_.clear();
    borrowed_size_ = 0;
  }

  /// Calls `fn(std::span<const std::uint8_t>)` for each buffer in wire order.
  template <class F>
  void for_each_buffer(F&& fn) const {
    std::size_t owned = 0;
    for (const auto& b : borrowed_) {
      if (b.at > owned) fn(std::span<const std::uint8_t>(bytes_.data() + owned, b.at - owned));
      owned = b.at;
      fn(b.data);
    }
    if (bytes_.size() > owned) fn(std::span<const std::uint8_t>(bytes_.data() + owned, bytes_.size() - owned));
  }

  /// Replaces `out` with the buffers in wire order (reusing its capacity).
  void buffers(std::vector<std::span<const std::uint8_t>>& out) const {
    out.clear();
    for_each_buffer([&out](std::span<const std::uint8_t> s) { out.push_back(s); });
  }

  /// A contiguous copy of everything (for tests and small writes).
  [[nodiscard]] std::vector<std::uint8_t> flatten() const {
    std::vector<std::uint8_t> out;
    out.reserve(size());
    for_each_buffer([&out](std::span<const std::uint8_t> s) { out.insert(out.end(), s.begin(), s.end()); });
    return out;
  }

 private:
  struct Borrowed {
    std::size_t at;  // offset in bytes_ before which the view goes
    std::span<const std::uint8_t> data;
  };

  ByteBuffer bytes_;
  std::vector<Borrowed> borrowed_;
  std::size_t borrowed_size_ = 0;
};

}  // namespace kincir::rabbitmq::amqp
