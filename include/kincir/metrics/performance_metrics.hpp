/// @file
/// `kincir::PerformanceMetrics`: a snapshot of a `MetricsCollector`, with the fields and methods
/// of the Rust kincir crate's performance guide (`publish_throughput`, `receive_throughput`,
/// `overall_throughput`, `error_rate`, `print_summary`), latency percentiles, named metrics and
/// observed broker statistics. Formats through {fmt}.
#pragma once

#include <kincir/config.hpp>
#include <kincir/metrics/histogram.hpp>

#include <chrono>       // durations and the steady clock
#include <cstdint>      // std::uint64_t
#include <cstdio>       // std::FILE, stdout
#include <iterator>     // std::back_inserter
#include <string>       // names and the summary text
#include <string_view>  // formatter base
#include <vector>       // named metrics

#include <fmt/format.h>  // the summary text and fmt::formatter

namespace kincir {

/// What a statistics source (such as a broker's `stats()`) reports to a collector when polled:
/// cumulative counts plus the current backlog. See `MetricsCollector::observe`.
struct BrokerStatsSample {
  std::uint64_t published = 0;    ///< Messages accepted by the broker.
  std::uint64_t delivered = 0;    ///< Deliveries handed to subscribers (one per subscriber).
  std::uint64_t dropped = 0;      ///< Messages discarded (no subscriber, overflow policy).
  std::uint64_t expired = 0;      ///< Messages skipped because their TTL passed.
  std::uint64_t queue_depth = 0;  ///< Messages currently waiting (a gauge, not a count).

  friend bool operator==(const BrokerStatsSample&, const BrokerStatsSample&) = default;
};

/// A point-in-time copy of a collector's metrics. A plain value: copy it, compare it, keep it.
///
/// The throughput and error-rate formulas are the guide's, including its zero cases (no time
/// measured or no operation gives 0.0). One difference: `overall_throughput` divides by the
/// time from `start_time` to `snapshot_time`, the moment the snapshot was taken, rather than to
/// "now", so a snapshot's numbers do not drift while it is kept.
///
/// `fmt::format("{}", metrics)` gives the multi-line text of `print_summary`.
struct PerformanceMetrics {
  using clock = std::chrono::steady_clock;

  struct Counter {
    std::string name;
    std::string help;
    std::uint64_t value = 0;
  };
  struct Histogram {
    std::string name;
    std::string help;
    LatencySummary latency;
  };
  struct Source {
    std::string name;
    BrokerStatsSample stats;
  };

  // The guide's fields.
  std::uint64_t messages_published = 0;
  std::uint64_t messages_received = 0;
  /// Time spent in publish calls (estimated from the timed calls when timing is sampled).
  std::chrono::nanoseconds total_publish_time{};
  /// Time spent in receive calls (estimated from the timed calls when timing is sampled).
  std::chrono::nanoseconds total_receive_time{};
  std::uint64_t error_count = 0;
  clock::time_point start_time = clock::now();

  // kincir's additions.
  clock::time_point snapshot_time = start_time;  ///< When the snapshot was taken.
  LatencySummary publish_latency;                ///< Per publish call (a batch is one call).
  LatencySummary receive_latency;                ///< Per receive call.
  std::uint64_t publish_calls = 0;               ///< Publish calls, timed or not.
  std::uint64_t receive_calls = 0;               ///< Receive calls, timed or not.
  std::uint64_t messages_acked = 0;
  std::uint64_t messages_nacked = 0;
  std::vector<Counter> counters;      ///< Named counters, in registration order.
  std::vector<Histogram> histograms;  ///< Named latency histograms, in registration order.
  std::vector<Source> sources;        ///< Observed statistics sources, polled for this snapshot.

  /// `snapshot_time - start_time`.
  [[nodiscard]] std::chrono::nanoseconds elapsed() const noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(snapshot_time - start_time);
  }

  /// Messages published per second of publish time; 0.0 when no publish time was measured.
  [[nodiscard]] double publish_throughput() const noexcept { return rate(messages_published, total_publish_time); }

  /// Messages received per second of receive time; 0.0 when no receive time was measured.
  [[nodiscard]] double receive_throughput() const noexcept { return rate(messages_received, total_receive_time); }

  /// Messages published and received per second since `start_time`; 0.0 when no time elapsed.
  [[nodiscard]] double overall_throughput() const noexcept {
    return rate(messages_published + messages_received, elapsed());
  }

  /// Errors per operation (published + received messages); 0.0 when there was none.
  [[nodiscard]] double error_rate() const noexcept {
    const std::uint64_t operations = messages_published + messages_received;
    return operations == 0 ? 0.0 : static_cast<double>(error_count) / static_cast<double>(operations);
  }

  /// Prints the guide's summary plus latency percentiles to `out`, as `fmt::format("{}", m)` does.
  void print_summary(std::FILE* out = stdout) const;

 private:
  static double rate(std::uint64_t n, std::chrono::nanoseconds time) noexcept {
    if (time.count() <= 0) return 0.0;
    return static_cast<double>(n) / std::chrono::duration<double>(time).count();
  }
};

namespace detail::metrics {

/// A duration for people: "850ns", "12.35µs", "4.20ms", "1.503s".
inline std::string human_duration(std::chrono::nanoseconds d) {
  const auto ns = static_cast<double>(d.count());
  if (d.count() < 1'000) return fmt::format("{}ns", d.count());
  if (d.count() < 1'000'000) return fmt::format("{:.2f}µs", ns / 1e3);
  if (d.count() < 1'000'000'000) return fmt::format("{:.2f}ms", ns / 1e6);
  return fmt::format("{:.3f}s", ns / 1e9);
}

inline void format_latency(std::string& out, std::string_view label, const LatencySummary& s) {
  if (s.count == 0) {
    fmt::format_to(std::back_inserter(out), "{}: no samples\n", label);
    return;
  }
  fmt::format_to(std::back_inserter(out), "{}: p50 {}, p90 {}, p99 {}, p99.9 {}, max {}, mean {} ({} samples)\n", label,
                 human_duration(s.p50), human_duration(s.p90), human_duration(s.p99), human_duration(s.p999),
                 human_duration(s.max), human_duration(s.mean), s.count);
}

/// The text of `print_summary`: the guide's lines, then percentiles and named metrics.
inline std::string summary_text(const PerformanceMetrics& m) {
  std::string out;
  auto it = std::back_inserter(out);
  fmt::format_to(it, "=== Performance Summary ===\n");
  fmt::format_to(it, "Messages Published: {}\n", m.messages_published);
  fmt::format_to(it, "Messages Received: {}\n", m.messages_received);
  fmt::format_to(it, "Publish Throughput: {:.2f} msg/s\n", m.publish_throughput());
  fmt::format_to(it, "Receive Throughput: {:.2f} msg/s\n", m.receive_throughput());
  fmt::format_to(it, "Overall Throughput: {:.2f} msg/s\n", m.overall_throughput());
  fmt::format_to(it, "Error Rate: {:.4f}%\n", m.error_rate() * 100.0);
  fmt::format_to(it, "Total Runtime: {}\n", human_duration(m.elapsed()));
  format_latency(out, "Publish Latency", m.publish_latency);
  format_latency(out, "Receive Latency", m.receive_latency);
  for (const auto& c : m.counters) fmt::format_to(std::back_inserter(out), "{}: {}\n", c.name, c.value);
  for (const auto& h : m.histograms) format_latency(out, h.name, h.latency);
  for (const auto& s : m.sources) {
    fmt::format_to(std::back_inserter(out),
                   "Source {}: published {}, delivered {}, dropped {}, expired {}, queue depth {}\n", s.name,
                   s.stats.published, s.stats.delivered, s.stats.dropped, s.stats.expired, s.stats.queue_depth);
  }
  return out;
}

}  // namespace detail::metrics

KINCIR_DECL void PerformanceMetrics::print_summary(std::FILE* out) const {
  const std::string text = detail::metrics::summary_text(*this);
  std::fwrite(text.data(), 1, text.size(), out);
  std::fflush(out);
}

}  // namespace kincir

/// @cond
// `fmt::format("{}", metrics)` gives the multi-line text of `print_summary` (documented with
// PerformanceMetrics: Doxygen cannot place a specialisation of {fmt}'s template).
template <>
struct fmt::formatter<kincir::PerformanceMetrics> : fmt::formatter<fmt::string_view> {
  template <class FormatContext>
  auto format(const kincir::PerformanceMetrics& m, FormatContext& ctx) const {
    const std::string text = kincir::detail::metrics::summary_text(m);
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(text), ctx);
  }
};
/// @endcond
