/// @file
/// `kincir::Logger`: the small logging interface the router and its middleware report through —
/// a level, a message and structured fields. The default, `null_logger()`, discards everything;
/// `kincir/log/fmt_logger.hpp` writes lines to stderr through {fmt}.
#pragma once

#include <kincir/config.hpp>

#include <cstdint>           // integer field values
#include <initializer_list>  // log(level, message, {fields...})
#include <span>              // the fields of one record
#include <string_view>       // messages, keys, string values
#include <type_traits>       // field value conversions
#include <variant>           // LogValue

namespace kincir {

/// Severity of a log record, lowest first. `off` as a threshold disables a logger.
enum class LogLevel { trace, debug, info, warn, error, off };

/// The lowercase name of a level ("trace" ... "error", "off").
constexpr std::string_view to_string(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::trace: return "trace";
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
    case LogLevel::off: return "off";
  }
  return "?";
}

/// The value of a structured field. String values are views: a logger that keeps a record beyond
/// the `log` call copies them.
using LogValue = std::variant<std::string_view, std::int64_t, std::uint64_t, double, bool>;

/// One structured field of a log record: `{"handler", name}`, `{"attempt", 3}`.
struct LogField {
  std::string_view key;
  LogValue value;

  LogField(std::string_view k, std::string_view v) noexcept : key(k), value(v) {}
  LogField(std::string_view k, const char* v) noexcept : key(k), value(std::string_view(v)) {}
  LogField(std::string_view k, bool v) noexcept : key(k), value(v) {}
  LogField(std::string_view k, double v) noexcept : key(k), value(v) {}
  template <class I>
  requires std::is_integral_v<I> &&(!std::is_same_v<I, bool>)LogField(std::string_view k, I v) noexcept
      : key(k), value(convert(v)) {}

 private:
  template <class I>
  static LogValue convert(I v) noexcept {
    if constexpr (std::is_signed_v<I>) {
      return static_cast<std::int64_t>(v);
    } else {
      return static_cast<std::uint64_t>(v);
    }
  }
};

/// Where the router, its middleware and adapters report. Implementations must be safe to call
/// from any thread (handlers run concurrently) and must not throw.
class Logger {
 public:
  Logger() = default;
  Logger(const Logger&) = delete;
  Logger& operator=(const Logger&) = delete;
  virtual ~Logger() = default;

  /// Whether records of `level` are written. Callers skip building fields when it is false.
  [[nodiscard]] virtual bool enabled(LogLevel level) const noexcept = 0;
  /// Writes one record. `fields` and the views in them are valid during the call only.
  virtual void write(LogLevel level, std::string_view message, std::span<const LogField> fields) noexcept = 0;

  /// Writes a record if `level` is enabled: `logger.log(LogLevel::warn, "retrying", {{"attempt", 2}})`.
  void log(LogLevel level, std::string_view message, std::initializer_list<LogField> fields = {}) noexcept {
    if (enabled(level)) write(level, message, std::span<const LogField>(fields.begin(), fields.size()));
  }
};

/// A logger that discards everything (the default everywhere a logger is optional).
class NullLogger final : public Logger {
 public:
  [[nodiscard]] bool enabled(LogLevel /*level*/) const noexcept override { return false; }
  void write(LogLevel /*level*/, std::string_view /*message*/, std::span<const LogField> /*fields*/) noexcept override {
  }
};

/// The process-wide `NullLogger`.
inline Logger& null_logger() noexcept {
  static NullLogger instance;
  return instance;
}

}  // namespace kincir
