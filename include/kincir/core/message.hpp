/// @file
/// `kincir::Message`: the unit that publishers send and subscribers receive.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/bytes.hpp>
#include <kincir/core/metadata.hpp>
#include <kincir/core/uuid.hpp>

#include <cstdint>      // std::uint8_t
#include <iosfwd>       // operator<< is a template: <ostream> is included by whoever streams
#include <string>       // payload conveniences and describe()
#include <string_view>  // metadata keys
#include <utility>      // std::move
#include <vector>       // payload convenience

namespace kincir {

/// A message: a unique id, a shared immutable payload and string metadata.
///
/// Copying a message shares its payload (one atomic increment) and copies its metadata; moving
/// it is cheap. What the performance guide calls `EfficientMessage` is simply `Message` here.
struct Message {
  Uuid uuid;          ///< Random v4 id, given at construction; nil for a default-constructed message.
  Bytes payload;      ///< The body; shared, never copied, on fan-out.
  Metadata metadata;  ///< String headers (mapped to AMQP headers by the RabbitMQ adapter).

  /// An empty message with the nil id, for out-parameters and containers. Costs nothing.
  Message() noexcept = default;

  /// A message with a fresh random id.
  explicit Message(Bytes body) noexcept : uuid(Uuid::new_v4()), payload(std::move(body)) {}
  explicit Message(std::vector<std::uint8_t>&& body) : Message(Bytes(std::move(body))) {}
  explicit Message(std::string&& body) : Message(Bytes(std::move(body))) {}

  /// Sets a metadata entry and returns this message, so calls chain:
  /// `Message(std::move(body)).with_metadata("id", "42").with_metadata("kind", "test")`.
  Message& with_metadata(std::string_view key, std::string_view value) & {
    metadata.set(key, value);
    return *this;
  }
  [[nodiscard]] Message with_metadata(std::string_view key, std::string_view value) && {
    metadata.set(key, value);
    return std::move(*this);
  }

  friend bool operator==(const Message&, const Message&) = default;
};

// Message lives in broker ring slots; one cache line per message keeps slots dense.
static_assert(sizeof(Message) <= kCacheLineSize, "a Message must fit one cache line (ring slot density)");

namespace detail {

/// `Message{uuid, N bytes, {k: v, ...}}`: what logs show of a message (payload size, not bytes).
inline std::string describe(const Message& m) {
  std::string out = "Message{";
  out += m.uuid.to_string();
  out += ", ";
  out += std::to_string(m.payload.size());
  out += " bytes, {";
  bool first = true;
  for (const auto& [k, v] : m.metadata) {
    if (!first) out += ", ";
    first = false;
    out += k;
    out += ": ";
    out += v;
  }
  out += "}}";
  return out;
}

}  // namespace detail

template <class Traits>
std::basic_ostream<char, Traits>& operator<<(std::basic_ostream<char, Traits>& os, const Message& m) {
  return os << detail::describe(m);
}

}  // namespace kincir
