/// @file
/// `kincir::FmtLogger`: a `kincir::Logger` that writes one line per record to a `FILE*` (stderr by
/// default) through {fmt}. Available when {fmt} is on the include path (`KINCIR_HAS_FMT`); link
/// `fmt::fmt`.
#pragma once

#include <kincir/config.hpp>
#include <kincir/log.hpp>

#if KINCIR_HAS_FMT

#include <fmt/format.h>  // fmt::memory_buffer, fmt::format_to

#include <chrono>       // timestamps
#include <cstdio>       // FILE*, stderr, std::fwrite
#include <iterator>     // std::back_inserter
#include <mutex>        // one line at a time
#include <span>         // fields
#include <string_view>  // messages
#include <variant>      // std::visit

namespace kincir {

/// Writes `2026-12-03T10:00:00.123Z warn  retrying handler=orders attempt=2` lines. String values
/// containing a space, `=` or `"` are quoted. Records below `min_level` are skipped. Each line is
/// written with one `fwrite` under a mutex, so lines of concurrent handlers never interleave.
class FmtLogger final : public Logger {
 public:
  explicit FmtLogger(LogLevel min_level = LogLevel::info, std::FILE* out = stderr) noexcept
      : min_level_(min_level), out_(out) {}

  [[nodiscard]] bool enabled(LogLevel level) const noexcept override {
    return level != LogLevel::off && level >= min_level_;
  }

  void write(LogLevel level, std::string_view message, std::span<const LogField> fields) noexcept override {
    try {
      fmt::memory_buffer line;
      auto it = std::back_inserter(line);
      const auto now = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
      const auto ms = now.time_since_epoch().count() % 1000;
      const auto secs = std::chrono::time_point_cast<std::chrono::seconds>(now);
      const std::chrono::year_month_day day{std::chrono::floor<std::chrono::days>(secs)};
      const std::chrono::hh_mm_ss tod{secs - std::chrono::floor<std::chrono::days>(secs)};
      fmt::format_to(it, "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {:<5} {}", static_cast<int>(day.year()),
                     static_cast<unsigned>(day.month()), static_cast<unsigned>(day.day()), tod.hours().count(),
                     tod.minutes().count(), tod.seconds().count(), ms, to_string(level), message);
      for (const auto& field : fields) {
        fmt::format_to(it, " {}=", field.key);
        std::visit([&](const auto& v) { append(line, v); }, field.value);
      }
      line.push_back('\n');
      const std::lock_guard lock(mutex_);
      std::fwrite(line.data(), 1, line.size(), out_);
      std::fflush(out_);
    } catch (...) {  // NOLINT(bugprone-empty-catch): a logger never throws; a lost line is all that happens
    }
  }

 private:
  static void append(fmt::memory_buffer& line, std::string_view v) {
    if (v.find_first_of(" =\"") == std::string_view::npos && !v.empty()) {
      line.append(v);
      return;
    }
    line.push_back('"');
    for (const char c : v) {
      if (c == '"' || c == '\\') line.push_back('\\');
      line.push_back(c);
    }
    line.push_back('"');
  }
  static void append(fmt::memory_buffer& line, bool v) { line.append(v ? std::string_view("true") : "false"); }
  template <class T>
  static void append(fmt::memory_buffer& line, T v) {
    fmt::format_to(std::back_inserter(line), "{}", v);
  }

  LogLevel min_level_;
  std::FILE* out_;
  std::mutex mutex_;
};

}  // namespace kincir

#endif  // KINCIR_HAS_FMT
