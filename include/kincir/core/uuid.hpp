/// @file
/// `kincir::Uuid`: a 16-byte identifier with fast random (version 4) generation.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>

#include <array>         // std::array storage
#include <compare>       // operator<=>
#include <cstddef>       // std::size_t
#include <cstdint>       // std::uint8_t, std::uint64_t
#include <cstring>       // std::memcpy
#include <functional>    // std::hash
#include <iosfwd>        // operator<< is a template: <ostream> is included by whoever streams
#include <string>        // std::string
#include <string_view>   // parse input
#include <system_error>  // std::error_code

// Seeding: the kernel's generator on Linux (no <random>, which costs every includer a third of a
// second to parse), std::random_device elsewhere.
#if defined(__linux__)
#include <fcntl.h>       // open /dev/urandom (kernels before getrandom)
#include <sys/random.h>  // getrandom
#include <unistd.h>      // read, close
#include <cerrno>        // EINTR
#include <chrono>        // the last-resort seed
#else
#include <random>  // std::random_device
#endif

namespace kincir {

namespace detail {

#if defined(__linux__)
/// Fills `out` from `getrandom`, or from /dev/urandom on a kernel without it; false if neither
/// gave every byte.
inline bool system_random(unsigned char* out, std::size_t size) noexcept {
  std::size_t got = 0;
  while (got < size) {
    const ssize_t n = ::getrandom(out + got, size - got, 0);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      break;
    }
  }
  if (got == size) return true;
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-vararg): open is the POSIX interface
  const int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  got = 0;
  while (got < size) {
    const ssize_t n = ::read(fd, out + got, size - got);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(fd);
  return got == size;
}
#endif

/// xoshiro256** (Blackman & Vigna, 2018): a small, fast generator with 256 bits of state.
/// One per thread, seeded once from the system's generator, so ids cost no system call.
class Xoshiro256 {
 public:
  Xoshiro256() noexcept {
#if defined(__linux__)
    std::array<unsigned char, sizeof state_> seed{};
    if (system_random(seed.data(), seed.size())) {
      std::memcpy(state_, seed.data(), sizeof state_);
    } else {
      // No kernel generator at all (a sandbox without getrandom or /dev/urandom): a seed that
      // still differs between threads and runs, mixed with splitmix64.
      std::uint64_t x = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
                        static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) ^
                        // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): an address as seed bits
                        reinterpret_cast<std::uintptr_t>(this);
      for (auto& word : state_) {
        x += 0x9e3779b97f4a7c15ULL;
        std::uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        word = z ^ (z >> 31);
      }
    }
#else
    std::random_device rd;
    for (auto& word : state_) word = (std::uint64_t{rd()} << 32) ^ rd();
#endif
    if ((state_[0] | state_[1] | state_[2] | state_[3]) == 0) state_[0] = 1;  // all-zero is a fixed point
  }

  std::uint64_t operator()() noexcept {
    const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

 private:
  static constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }

  std::uint64_t state_[4];
};

inline Xoshiro256& thread_generator() {
  thread_local Xoshiro256 generator;
  return generator;
}

/// A character's value as a hex digit, -1 if it is none: one load per digit (a RabbitMQ consumer
/// parses the message id of every delivery).
inline constexpr std::array<std::int8_t, 256> kHexValues = [] {
  std::array<std::int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (std::size_t i = 0; i < 10; ++i) t['0' + i] = static_cast<std::int8_t>(i);
  for (std::size_t i = 0; i < 6; ++i) {
    t['a' + i] = static_cast<std::int8_t>(10 + i);
    t['A' + i] = static_cast<std::int8_t>(10 + i);
  }
  return t;
}();

constexpr int hex_value(char c) noexcept { return kHexValues[static_cast<unsigned char>(c)]; }

}  // namespace detail

/// A UUID (RFC 4122 layout). Default-constructed it is the nil UUID (all zero).
class Uuid {
 public:
  static constexpr std::size_t kStringLength = 36;

  constexpr Uuid() noexcept = default;
  constexpr explicit Uuid(const std::array<std::uint8_t, 16>& bytes) noexcept : bytes_(bytes) {}

  /// A random version-4 UUID from a per-thread generator (no system call, no lock).
  [[nodiscard]] static Uuid new_v4() noexcept {
    auto& gen = detail::thread_generator();
    const std::uint64_t hi = gen();
    const std::uint64_t lo = gen();
    Uuid id;
    std::memcpy(id.bytes_.data(), &hi, 8);
    std::memcpy(id.bytes_.data() + 8, &lo, 8);
    id.bytes_[6] = static_cast<std::uint8_t>((id.bytes_[6] & 0x0F) | 0x40);  // version 4
    id.bytes_[8] = static_cast<std::uint8_t>((id.bytes_[8] & 0x3F) | 0x80);  // variant 10xx
    return id;
  }

  /// Parses the canonical form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case).
  /// Sets `ec` to `errc::invalid_uuid` and returns the nil UUID on bad input.
  [[nodiscard]] static Uuid parse(std::string_view text, std::error_code& ec) noexcept {
    ec.clear();
    Uuid id;
    if (text.size() != kStringLength) {
      ec = errc::invalid_uuid;
      return {};
    }
    if (text[8] != '-' || text[13] != '-' || text[18] != '-' || text[23] != '-') {
      ec = errc::invalid_uuid;
      return {};
    }
    // Where each byte's two digits start in "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
    constexpr std::array<std::uint8_t, 16> kAt{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};
    int bad = 0;  // negative once any digit was not one
    for (std::size_t i = 0; i < 16; ++i) {
      const int hi = detail::hex_value(text[kAt[i]]);
      const int lo = detail::hex_value(text[kAt[i] + 1U]);
      bad |= hi | lo;
      id.bytes_[i] = static_cast<std::uint8_t>((hi & 0xF) << 4 | (lo & 0xF));
    }
    if (bad < 0) {
      ec = errc::invalid_uuid;
      return {};
    }
    return id;
  }

  /// Parses the canonical form; throws `kincir::Error` (`errc::invalid_uuid`) on bad input.
  [[nodiscard]] static Uuid parse(std::string_view text) {
    std::error_code ec;
    Uuid id = parse(text, ec);
    throw_if(ec, "Uuid::parse");
    return id;
  }

  /// Writes the 36 lowercase characters of the canonical form to `out`.
  void format_to(char* out) const noexcept {
    constexpr char kHex[] = "0123456789abcdef";
    for (std::size_t i = 0; i < 16; ++i) {
      if (i == 4 || i == 6 || i == 8 || i == 10) *out++ = '-';
      *out++ = kHex[bytes_[i] >> 4];
      *out++ = kHex[bytes_[i] & 0x0F];
    }
  }

  /// The canonical 36-character lowercase form.
  [[nodiscard]] std::string to_string() const {
    std::string s(kStringLength, '\0');
    format_to(s.data());
    return s;
  }

  [[nodiscard]] constexpr const std::array<std::uint8_t, 16>& bytes() const noexcept { return bytes_; }
  [[nodiscard]] constexpr bool is_nil() const noexcept { return *this == Uuid{}; }
  /// The version nibble (4 for `new_v4()`).
  [[nodiscard]] constexpr int version() const noexcept { return bytes_[6] >> 4; }

  friend constexpr bool operator==(const Uuid&, const Uuid&) noexcept = default;
  friend constexpr auto operator<=>(const Uuid&, const Uuid&) noexcept = default;

  template <class Traits>
  friend std::basic_ostream<char, Traits>& operator<<(std::basic_ostream<char, Traits>& os, const Uuid& id) {
    char buf[kStringLength];
    id.format_to(buf);
    return os.write(buf, kStringLength);
  }

 private:
  std::array<std::uint8_t, 16> bytes_{};
};

}  // namespace kincir

template <>
struct std::hash<kincir::Uuid> {
  std::size_t operator()(const kincir::Uuid& id) const noexcept {
    // Random UUIDs are uniformly distributed already: fold the two halves.
    std::uint64_t hi = 0;
    std::uint64_t lo = 0;
    std::memcpy(&hi, id.bytes().data(), 8);
    std::memcpy(&lo, id.bytes().data() + 8, 8);
    return static_cast<std::size_t>(hi ^ (lo * 0x9E3779B97F4A7C15ULL));
  }
};
