/// @file
/// AMQP field tables and arrays with RabbitMQ's type tags, and their encoding and decoding.
///
/// RabbitMQ (and every client that talks to it) uses the tags of its 0-9-1 errata, which differ
/// from the printed spec: `s` is a signed 16-bit integer (not a short string), `l` a signed
/// 64-bit integer, and there is no `U`/`L`. See docs/amqp.md for the table.
#pragma once

#include <kincir/config.hpp>

#include <kincir/rabbitmq/amqp/detail/wire.hpp>  // WireReader, WireWriter, ByteBuffer
#include <kincir/rabbitmq/amqp/error.hpp>        // errc, kincir::throw_if

#include <cstdint>           // fixed-width integers
#include <cstring>           // std::memcpy for float bits
#include <initializer_list>  // FieldTable{{"k", v}, ...}
#include <span>              // std::span input
#include <string>            // std::string names and long strings
#include <string_view>       // std::string_view lookups
#include <system_error>      // std::error_code
#include <type_traits>       // std::remove_cvref_t, std::is_same_v
#include <utility>           // std::move, std::forward
#include <variant>           // std::variant for FieldValue
#include <vector>            // std::vector storage

namespace kincir::rabbitmq::amqp {

/// `D`: a decimal number, `value / 10^scale`.
struct Decimal {
  std::uint8_t scale = 0;
  std::uint32_t value = 0;
  friend bool operator==(const Decimal&, const Decimal&) = default;
};

/// `T`: a POSIX timestamp in seconds.
struct Timestamp {
  std::uint64_t seconds = 0;
  friend bool operator==(const Timestamp&, const Timestamp&) = default;
};

/// `V`: no value.
struct Void {
  friend bool operator==(const Void&, const Void&) = default;
};

/// `x`: an uninterpreted byte array.
using ByteArray = std::vector<std::uint8_t>;

class FieldValue;
struct FieldEntry;

/// `F`: an ordered list of named values. Names are short strings (at most 255 bytes); `set`
/// replaces an existing name, so a table built through `set` has unique names.
class FieldTable {
 public:
  FieldTable() = default;
  FieldTable(std::initializer_list<FieldEntry> entries);
  // Defined once FieldEntry is complete.
  FieldTable(const FieldTable& other);
  FieldTable(FieldTable&& other) noexcept;
  FieldTable& operator=(const FieldTable& other);
  FieldTable& operator=(FieldTable&& other) noexcept;
  ~FieldTable();

  /// Sets `name` to `value`, replacing an existing entry of that name; returns `*this`.
  FieldTable& set(std::string_view name, FieldValue value);
  /// The value named `name`, or nullptr.
  [[nodiscard]] const FieldValue* find(std::string_view name) const noexcept;

  [[nodiscard]] std::size_t size() const noexcept;
  [[nodiscard]] bool empty() const noexcept;
  [[nodiscard]] const std::vector<FieldEntry>& entries() const noexcept { return entries_; }
  [[nodiscard]] std::vector<FieldEntry>& entries() noexcept { return entries_; }
  [[nodiscard]] std::vector<FieldEntry>::const_iterator begin() const noexcept;
  [[nodiscard]] std::vector<FieldEntry>::const_iterator end() const noexcept;

  friend bool operator==(const FieldTable& a, const FieldTable& b);

 private:
  std::vector<FieldEntry> entries_;
};

/// `A`: a list of values, each with its own type tag.
class FieldArray {
 public:
  FieldArray() = default;
  FieldArray(std::initializer_list<FieldValue> values);

  void push_back(FieldValue value);
  [[nodiscard]] std::size_t size() const noexcept;
  [[nodiscard]] bool empty() const noexcept;
  [[nodiscard]] const FieldValue& operator[](std::size_t i) const noexcept;
  [[nodiscard]] const std::vector<FieldValue>& values() const noexcept { return values_; }
  [[nodiscard]] std::vector<FieldValue>& values() noexcept { return values_; }
  [[nodiscard]] std::vector<FieldValue>::const_iterator begin() const noexcept;
  [[nodiscard]] std::vector<FieldValue>::const_iterator end() const noexcept;

  friend bool operator==(const FieldArray& a, const FieldArray& b);

 private:
  std::vector<FieldValue> values_;
};

/// The alternatives a `FieldValue` can hold, in tag order (see `FieldValue::kTags`).
using FieldVariant =
    std::variant<Void, bool, std::int8_t, std::uint8_t, std::int16_t, std::uint16_t, std::int32_t, std::uint32_t,
                 std::int64_t, float, double, Decimal, std::string, ByteArray, Timestamp, FieldTable, FieldArray>;

namespace detail {
template <class T, class V>
inline constexpr bool is_variant_alternative = false;
template <class T, class... Ts>
inline constexpr bool is_variant_alternative<T, std::variant<Ts...>> = (std::is_same_v<T, Ts> || ...);
}  // namespace detail

/// A type `FieldValue` holds directly (after removing references and const).
template <class T>
concept FieldAlternative = detail::is_variant_alternative<std::remove_cvref_t<T>, FieldVariant>;

/// One value of a field table or array. Holds exactly one of the types below; the type picks
/// the tag on the wire (RabbitMQ's tags):
///
/// | type | tag | | type | tag |
/// |---|---|---|---|---|
/// | Void | V | | std::int64_t | l |
/// | bool | t | | float | f |
/// | std::int8_t | b | | double | d |
/// | std::uint8_t | B | | Decimal | D |
/// | std::int16_t | s | | std::string | S |
/// | std::uint16_t | u | | ByteArray | x |
/// | std::int32_t | I | | Timestamp | T |
/// | std::uint32_t | i | | FieldTable | F |
/// |  |  | | FieldArray | A |
class FieldValue {
 public:
  using Variant = FieldVariant;

  /// A `V` (void) value.
  FieldValue() = default;

  /// A value of one of the alternatives, by its exact type (no implicit conversions: write
  /// `std::int64_t{5}` for an `l`).
  /// (The constraint excludes FieldValue itself, so copies and moves are not hidden.)
  template <FieldAlternative T>
  FieldValue(T&& value)  // NOLINT(google-explicit-constructor,bugprone-forwarding-reference-overload)
      : value_(std::forward<T>(value)) {}

  /// A long string (`S`).
  FieldValue(const char* s) : value_(std::string(s)) {}       // NOLINT(google-explicit-constructor)
  FieldValue(std::string_view s) : value_(std::string(s)) {}  // NOLINT(google-explicit-constructor)

  template <class T>
  [[nodiscard]] bool is() const noexcept {
    return std::holds_alternative<T>(value_);
  }
  template <class T>
  [[nodiscard]] const T* get_if() const noexcept {
    return std::get_if<T>(&value_);
  }
  template <class T>
  [[nodiscard]] T* get_if() noexcept {
    return std::get_if<T>(&value_);
  }

  /// The RabbitMQ type tag this value is encoded with.
  [[nodiscard]] char tag() const noexcept { return kTags[value_.index()]; }

  [[nodiscard]] const Variant& variant() const noexcept { return value_; }
  [[nodiscard]] Variant& variant() noexcept { return value_; }

  friend bool operator==(const FieldValue& a, const FieldValue& b) { return a.value_ == b.value_; }

  /// Tags in the order of `Variant`'s alternatives.
  static constexpr char kTags[] = {'V', 't', 'b', 'B', 's', 'u', 'I', 'i', 'l', 'f', 'd', 'D', 'S', 'x', 'T', 'F', 'A'};

 private:
  Variant value_;
};

/// A named value of a field table.
struct FieldEntry {
  std::string name;
  FieldValue value;
  friend bool operator==(const FieldEntry&, const FieldEntry&) = default;
};

KINCIR_DECL FieldTable::FieldTable(std::initializer_list<FieldEntry> entries) : entries_(entries) {}
KINCIR_DECL FieldTable::FieldTable(const FieldTable& other) = default;
KINCIR_DECL FieldTable::FieldTable(FieldTable&& other) noexcept = default;
KINCIR_DECL FieldTable& FieldTable::operator=(const FieldTable& other) = default;
KINCIR_DECL FieldTable& FieldTable::operator=(FieldTable&& other) noexcept = default;
KINCIR_DECL FieldTable::~FieldTable() = default;

KINCIR_DECL FieldTable& FieldTable::set(std::string_view name, FieldValue value) {
  for (auto& entry : entries_) {
    if (entry.name == name) {
      entry.value = std::move(value);
      return *this;
    }
  }
  entries_.push_back(FieldEntry{std::string(name), std::move(value)});
  return *this;
}

KINCIR_DECL const FieldValue* FieldTable::find(std::string_view name) const noexcept {
  for (const auto& entry : entries_)
    if (entry.name == name) return &entry.value;
  return nullptr;
}

KINCIR_DECL bool operator==(const FieldTable& a, const FieldTable& b) { return a.entries_ == b.entries_; }
KINCIR_DECL std::size_t FieldTable::size() const noexcept { return entries_.size(); }
KINCIR_DECL bool FieldTable::empty() const noexcept { return entries_.empty(); }
KINCIR_DECL std::vector<FieldEntry>::const_iterator FieldTable::begin() const noexcept { return entries_.begin(); }
KINCIR_DECL std::vector<FieldEntry>::const_iterator FieldTable::end() const noexcept { return entries_.end(); }

KINCIR_DECL FieldArray::FieldArray(std::initializer_list<FieldValue> values) : values_(values) {}

KINCIR_DECL void FieldArray::push_back(FieldValue value) { values_.push_back(std::move(value)); }

KINCIR_DECL bool operator==(const FieldArray& a, const FieldArray& b) { return a.values_ == b.values_; }
KINCIR_DECL std::size_t FieldArray::size() const noexcept { return values_.size(); }
KINCIR_DECL bool FieldArray::empty() const noexcept { return values_.empty(); }
KINCIR_DECL const FieldValue& FieldArray::operator[](std::size_t i) const noexcept { return values_[i]; }
KINCIR_DECL std::vector<FieldValue>::const_iterator FieldArray::begin() const noexcept { return values_.begin(); }
KINCIR_DECL std::vector<FieldValue>::const_iterator FieldArray::end() const noexcept { return values_.end(); }

/// Bounds on what the decoder accepts, so that hostile input costs bounded stack and memory.
/// Sizes are bounded by the frame they arrive in (`frame_max`).
struct FieldLimits {
  /// Tables and arrays nested deeper than this are `errc::field_table_too_deep`.
  std::size_t max_depth = 16;
  /// More values (entries and array items, at every level together) than this is
  /// `errc::field_table_too_large`.
  std::size_t max_values = 16384;
};

namespace detail {

KINCIR_DECL void encode_value(WireWriter& w, const FieldValue& value);

/// Table: u32 byte length, then entries `shortstr name, u8 tag, value`.
KINCIR_DECL void encode_table(WireWriter& w, const FieldTable& table) {
  std::size_t start = w.begin_length();
  for (const auto& entry : table) {
    w.shortstr(entry.name);
    encode_value(w, entry.value);
  }
  w.end_length(start);
}

/// Array: u32 byte length, then tagged values.
KINCIR_DECL void encode_array(WireWriter& w, const FieldArray& array) {
  std::size_t start = w.begin_length();
  for (const auto& value : array) encode_value(w, value);
  w.end_length(start);
}

KINCIR_DECL void encode_value(WireWriter& w, const FieldValue& value) {
  w.u8(static_cast<std::uint8_t>(value.tag()));
  std::visit(
      [&w](const auto& v) {
        using T = std::remove_cvref_t<decltype(v)>;
        if constexpr (std::is_same_v<T, Void>) {
        } else if constexpr (std::is_same_v<T, bool>) {
          w.u8(v ? 1 : 0);
        } else if constexpr (std::is_same_v<T, std::int8_t> || std::is_same_v<T, std::uint8_t>) {
          w.u8(static_cast<std::uint8_t>(v));
        } else if constexpr (std::is_same_v<T, std::int16_t> || std::is_same_v<T, std::uint16_t>) {
          w.u16(static_cast<std::uint16_t>(v));
        } else if constexpr (std::is_same_v<T, std::int32_t> || std::is_same_v<T, std::uint32_t>) {
          w.u32(static_cast<std::uint32_t>(v));
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          w.u64(static_cast<std::uint64_t>(v));
        } else if constexpr (std::is_same_v<T, float>) {
          std::uint32_t bits = 0;
          std::memcpy(&bits, &v, sizeof bits);
          w.u32(bits);
        } else if constexpr (std::is_same_v<T, double>) {
          std::uint64_t bits = 0;
          std::memcpy(&bits, &v, sizeof bits);
          w.u64(bits);
        } else if constexpr (std::is_same_v<T, Decimal>) {
          w.u8(v.scale);
          w.u32(v.value);
        } else if constexpr (std::is_same_v<T, std::string>) {
          w.longstr(v);
        } else if constexpr (std::is_same_v<T, ByteArray>) {
          w.u32(static_cast<std::uint32_t>(v.size()));
          w.raw(v.data(), v.size());
        } else if constexpr (std::is_same_v<T, Timestamp>) {
          w.u64(v.seconds);
        } else if constexpr (std::is_same_v<T, FieldTable>) {
          encode_table(w, v);
        } else {
          static_assert(std::is_same_v<T, FieldArray>, "every alternative has an encoding");
          encode_array(w, v);
        }
      },
      value.variant());
}

/// Decoding context: the limits and how many values were decoded so far.
struct FieldDecoder {
  FieldLimits limits;
  std::size_t values = 0;

  void table(WireReader& r, FieldTable& out, std::size_t depth) {
    std::uint32_t length = r.u32();
    if (!enter(r, length, depth)) return;
    const std::uint8_t* end = r.position() + length;
    while (r.ok() && r.position() < end) {
      if (!count(r)) return;
      FieldEntry entry;
      entry.name.assign(r.shortstr());
      value(r, entry.value, depth);
      out.entries().push_back(std::move(entry));
    }
    if (r.position() != end) r.fail(errc::malformed_field_table);
  }

  void array(WireReader& r, FieldArray& out, std::size_t depth) {
    std::uint32_t length = r.u32();
    if (!enter(r, length, depth)) return;
    const std::uint8_t* end = r.position() + length;
    while (r.ok() && r.position() < end) {
      if (!count(r)) return;
      value(r, out.values().emplace_back(), depth);
    }
    if (r.position() != end) r.fail(errc::malformed_field_table);
  }

  void value(WireReader& r, FieldValue& out, std::size_t depth) {
    auto& v = out.variant();
    switch (r.u8()) {
      case 'V': v.emplace<Void>(); break;
      case 't': v.emplace<bool>(r.u8() != 0); break;
      case 'b': v.emplace<std::int8_t>(static_cast<std::int8_t>(r.u8())); break;
      case 'B': v.emplace<std::uint8_t>(r.u8()); break;
      case 's': v.emplace<std::int16_t>(static_cast<std::int16_t>(r.u16())); break;
      case 'u': v.emplace<std::uint16_t>(r.u16()); break;
      case 'I': v.emplace<std::int32_t>(static_cast<std::int32_t>(r.u32())); break;
      case 'i': v.emplace<std::uint32_t>(r.u32()); break;
      case 'l': v.emplace<std::int64_t>(static_cast<std::int64_t>(r.u64())); break;
      case 'f': {
        std::uint32_t bits = r.u32();
        float f = 0;
        std::memcpy(&f, &bits, sizeof f);
        v.emplace<float>(f);
        break;
      }
      case 'd': {
        std::uint64_t bits = r.u64();
        double d = 0;
        std::memcpy(&d, &bits, sizeof d);
        v.emplace<double>(d);
        break;
      }
      case 'D': {
        Decimal d;
        d.scale = r.u8();
        d.value = r.u32();
        v.emplace<Decimal>(d);
        break;
      }
      case 'S': v.emplace<std::string>(r.longstr()); break;
      case 'x': {
        auto bytes = r.bytes(r.u32());
        v.emplace<ByteArray>(bytes.begin(), bytes.end());
        break;
      }
      case 'T': v.emplace<Timestamp>(Timestamp{r.u64()}); break;
      case 'F': table(r, v.emplace<FieldTable>(), depth + 1); break;
      case 'A': array(r, v.emplace<FieldArray>(), depth + 1); break;
      default: r.fail(errc::malformed_field_table); break;
    }
  }

 private:
  bool enter(WireReader& r, std::uint32_t length, std::size_t depth) {
    if (!r.ok()) return false;
    if (depth >= limits.max_depth) {
      r.fail(errc::field_table_too_deep);
      return false;
    }
    if (length > r.remaining()) {
      r.fail(errc::malformed_field_table);
      return false;
    }
    return true;
  }

  bool count(WireReader& r) {
    if (++values > limits.max_values) {
      r.fail(errc::field_table_too_large);
      return false;
    }
    return true;
  }
};

/// Decodes a table (u32 length first) at the reader's position; errors go to the reader.
KINCIR_DECL void decode_table(WireReader& r, FieldTable& out, const FieldLimits& limits = {}) {
  FieldDecoder decoder{limits};
  decoder.table(r, out, 0);
}

}  // namespace detail

/// Appends the encoding of `table` (u32 byte length, then the entries) to `out`.
/// A name longer than 255 bytes is `errc::string_too_long`; `out` is then left as it was.
KINCIR_DECL void encode_field_table(const FieldTable& table, ByteBuffer& out, std::error_code& ec) {
  std::size_t size = out.size();
  detail::WireWriter w(out);
  detail::encode_table(w, table);
  ec = w.error();
  if (ec) out.resize_down(size);
}

/// Decodes a table (u32 byte length, then entries) from the start of `in`; `consumed` gets the
/// number of bytes read. Malformed input, too deep or too large gives an error, never a crash.
KINCIR_DECL FieldTable decode_field_table(std::span<const std::uint8_t> in, std::error_code& ec,
                                          std::size_t* consumed = nullptr, const FieldLimits& limits = {}) {
  detail::WireReader r(in, errc::malformed_field_table);
  FieldTable table;
  detail::decode_table(r, table, limits);
  ec = r.error();
  if (consumed != nullptr) *consumed = ec ? 0 : static_cast<std::size_t>(r.position() - in.data());
  if (ec) table = FieldTable();
  return table;
}

/// Throwing overload of `decode_field_table`.
/// @throws kincir::Error on malformed input.
KINCIR_DECL FieldTable decode_field_table(std::span<const std::uint8_t> in, const FieldLimits& limits = {}) {
  std::error_code ec;
  FieldTable table = decode_field_table(in, ec, nullptr, limits);
  throw_if(ec, "decode_field_table");
  return table;
}

}  // namespace kincir::rabbitmq::amqp
