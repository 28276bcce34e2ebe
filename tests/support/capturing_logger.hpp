// A logger for tests: keeps every record it is given (level, message, fields as "key=value").
#pragma once

#include <kincir/log.hpp>

#include <cstdint>      // integer field values
#include <mutex>        // records from any thread
#include <span>         // fields
#include <string>       // records
#include <string_view>  // messages
#include <variant>      // LogValue
#include <vector>       // records

namespace kincir::test {

/// Keeps every record (level, message, fields rendered as "k=v").
class CapturingLogger final : public Logger {
 public:
  struct Record {
    LogLevel level;
    std::string message;
    std::vector<std::string> fields;

    /// Whether a field reads "key=value" (`has("topic=orders")`).
    [[nodiscard]] bool has(std::string_view key_value) const {
      for (const auto& f : fields) {
        if (f == key_value) return true;
      }
      return false;
    }
  };

  [[nodiscard]] bool enabled(LogLevel level) const noexcept override { return level >= LogLevel::debug; }
  void write(LogLevel level, std::string_view message, std::span<const LogField> fields) noexcept override {
    Record r{level, std::string(message), {}};
    for (const auto& f : fields) {
      std::string v;
      if (const auto* s = std::get_if<std::string_view>(&f.value)) {
        v = std::string(*s);
      } else if (const auto* i = std::get_if<std::int64_t>(&f.value)) {
        v = std::to_string(*i);
      } else if (const auto* u = std::get_if<std::uint64_t>(&f.value)) {
        v = std::to_string(*u);
      } else if (const auto* d = std::get_if<double>(&f.value)) {
        v = std::to_string(*d);
      } else {
        v = std::get<bool>(f.value) ? "true" : "false";
      }
      r.fields.push_back(std::string(f.key) + "=" + v);
    }
    const std::lock_guard lock(mutex_);
    records_.push_back(std::move(r));
  }

  [[nodiscard]] std::vector<Record> records() const {
    const std::lock_guard lock(mutex_);
    return records_;
  }
  /// The records whose message contains `text`.
  [[nodiscard]] std::vector<Record> matching(std::string_view text) const {
    const std::lock_guard lock(mutex_);
    std::vector<Record> out;
    for (const auto& r : records_) {
      if (r.message.find(text) != std::string::npos) out.push_back(r);
    }
    return out;
  }
  /// Whether some record's message contains `text`.
  [[nodiscard]] bool saw(std::string_view text) const {
    const std::lock_guard lock(mutex_);
    for (const auto& r : records_) {
      if (r.message.find(text) != std::string::npos) return true;
    }
    return false;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<Record> records_;
};

}  // namespace kincir::test
