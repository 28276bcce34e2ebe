/// @file
/// `ByteBuffer`: the growable byte buffer every encoder of the codec appends to.
#pragma once

#include <kincir/config.hpp>

#include <cstdint>  // std::uint8_t
#include <cstring>  // std::memcpy
#include <memory>   // std::unique_ptr storage
#include <span>     // std::span views
#include <utility>  // std::exchange, std::move

namespace kincir::rabbitmq::amqp {

/// A growable byte buffer without the zero-filling of `std::vector<std::uint8_t>::resize`:
/// encoders reserve bytes with `extend` and write them in place.
class ByteBuffer {
 public:
  ByteBuffer() = default;
  ByteBuffer(ByteBuffer&& other) noexcept
      : data_(std::move(other.data_)),
        size_(std::exchange(other.size_, 0)),
        capacity_(std::exchange(other.capacity_, 0)) {}
  ByteBuffer& operator=(ByteBuffer&& other) noexcept {
    data_ = std::move(other.data_);
    size_ = std::exchange(other.size_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
    return *this;
  }
  ByteBuffer(const ByteBuffer& other) : ByteBuffer() { append(other.data(), other.size()); }
  ByteBuffer& operator=(const ByteBuffer& other) {
    if (this != &other) {
      size_ = 0;
      append(other.data(), other.size());
    }
    return *this;
  }
  ~ByteBuffer() = default;

  /// Appends `n` uninitialised bytes and returns where they start.
  std::uint8_t* extend(std::size_t n) {
    if (capacity_ - size_ < n) grow(n);
    std::uint8_t* p = data_.get() + size_;
    size_ += n;
    return p;
  }

  void append(const void* bytes, std::size_t n) {
    if (n != 0) std::memcpy(extend(n), bytes, n);
  }

  void reserve(std::size_t n) {
    if (n > capacity_) grow(n - size_);
  }

  void clear() noexcept { size_ = 0; }
  void resize_down(std::size_t n) noexcept { size_ = n < size_ ? n : size_; }

  [[nodiscard]] std::uint8_t* data() noexcept { return data_.get(); }
  [[nodiscard]] const std::uint8_t* data() const noexcept { return data_.get(); }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] std::span<const std::uint8_t> span() const noexcept { return {data_.get(), size_}; }

 private:
  void grow(std::size_t extra) {
    std::size_t capacity = capacity_ < 256 ? 256 : capacity_ * 2;
    while (capacity - size_ < extra) capacity *= 2;
    std::unique_ptr<std::uint8_t[]> data(new std::uint8_t[capacity]);
    if (size_ != 0) std::memcpy(data.get(), data_.get(), size_);
    data_ = std::move(data);
    capacity_ = capacity;
  }

  std::unique_ptr<std::uint8_t[]> data_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

}  // namespace kincir::rabbitmq::amqp
