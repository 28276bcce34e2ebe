/// @file
/// `kincir::to_prometheus`: a `PerformanceMetrics` snapshot in the Prometheus text exposition
/// format (version 0.0.4).
#pragma once

#include <kincir/config.hpp>
#include <kincir/metrics/performance_metrics.hpp>

#include <chrono>       // durations to seconds
#include <iterator>     // std::back_inserter
#include <string>       // the exposition text
#include <string_view>  // names and help texts

#include <fmt/format.h>  // number formatting

namespace kincir {

namespace detail::metrics {

/// Whether `name` is a valid Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
constexpr bool is_metric_name(std::string_view name) noexcept {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    const bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0)) return false;
  }
  return true;
}

/// `prefix` with every character a metric name cannot hold replaced by '_'.
inline std::string sanitize_prefix(std::string_view prefix) {
  std::string out(prefix);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const char c = out[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    const bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0)) out[i] = '_';
  }
  return out;
}

/// Escapes a HELP text (backslash and newline) or, with `quote`, a label value (also '"').
inline std::string escape(std::string_view text, bool quote) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

class PrometheusWriter {
 public:
  explicit PrometheusWriter(std::string_view prefix) : prefix_(sanitize_prefix(prefix)) {
    if (!prefix_.empty() && prefix_.back() != '_') prefix_ += '_';
  }

  void family(std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(out(), "# HELP {}{} {}\n# TYPE {}{} {}\n", prefix_, name, escape(help, false), prefix_, name, type);
  }

  void sample(std::string_view name, std::uint64_t value, std::string_view labels = {}) {
    fmt::format_to(out(), "{}{}{} {}\n", prefix_, name, labels, value);
  }

  void sample_seconds(std::string_view name, std::chrono::nanoseconds value, std::string_view labels = {}) {
    fmt::format_to(out(), "{}{}{} {}\n", prefix_, name, labels, std::chrono::duration<double>(value).count());
  }

  void counter(std::string_view name, std::string_view help, std::uint64_t value) {
    family(name, "counter", help);
    sample(name, value);
  }

  void summary(std::string_view name, std::string_view help, const LatencySummary& s) {
    family(name, "summary", help);
    const std::pair<const char*, std::chrono::nanoseconds> quantiles[] = {
        {"0.5", s.p50}, {"0.9", s.p90}, {"0.99", s.p99}, {"0.999", s.p999}};
    for (const auto& [q, value] : quantiles) {
      if (s.count == 0) {
        fmt::format_to(out(), "{}{}{{quantile=\"{}\"}} NaN\n", prefix_, name, q);
      } else {
        fmt::format_to(out(), "{}{}{{quantile=\"{}\"}} {}\n", prefix_, name, q,
                       std::chrono::duration<double>(value).count());
      }
    }
    fmt::format_to(out(), "{}{}_sum {}\n", prefix_, name, std::chrono::duration<double>(s.sum).count());
    fmt::format_to(out(), "{}{}_count {}\n", prefix_, name, s.count);
  }

  std::string take() { return std::move(text_); }

 private:
  std::back_insert_iterator<std::string> out() { return std::back_inserter(text_); }

  std::string prefix_;
  std::string text_;
};

}  // namespace detail::metrics

/// The snapshot in the Prometheus text format, every metric name starting with `prefix` and an
/// underscore (characters a metric name cannot hold become '_'). Counters end in `_total`,
/// durations are in seconds, latencies are summaries with the 0.5, 0.9, 0.99 and 0.999
/// quantiles (NaN without samples) plus `_sum` and `_count`, each family has HELP and TYPE
/// lines. Observed sources become `<prefix>_broker_*` families labelled `source="<name>"`.
inline std::string to_prometheus(const PerformanceMetrics& m, std::string_view prefix = "kincir") {
  detail::metrics::PrometheusWriter w(prefix);
  w.counter("messages_published_total", "Messages published.", m.messages_published);
  w.counter("messages_received_total", "Messages received.", m.messages_received);
  w.counter("errors_total", "Failed publish, receive and settlement calls.", m.error_count);
  w.counter("publish_calls_total", "Publish calls (a batch is one call).", m.publish_calls);
  w.counter("receive_calls_total", "Receive calls that returned a message.", m.receive_calls);
  w.counter("messages_acked_total", "Deliveries acknowledged.", m.messages_acked);
  w.counter("messages_nacked_total", "Deliveries negatively acknowledged.", m.messages_nacked);
  w.summary("publish_latency_seconds", "Latency of publish calls.", m.publish_latency);
  w.summary("receive_latency_seconds", "Latency of receive calls.", m.receive_latency);
  w.family("publish_latency_max_seconds", "gauge", "Longest publish call.");
  w.sample_seconds("publish_latency_max_seconds", m.publish_latency.max);
  w.family("receive_latency_max_seconds", "gauge", "Longest receive call.");
  w.sample_seconds("receive_latency_max_seconds", m.receive_latency.max);
  w.family("uptime_seconds", "gauge", "Time since the collector started.");
  w.sample_seconds("uptime_seconds", m.elapsed());

  for (const auto& c : m.counters) {
    const std::string name = c.name.ends_with("_total") ? c.name : c.name + "_total";
    w.counter(name, c.help.empty() ? c.name : c.help, c.value);
  }
  for (const auto& h : m.histograms) w.summary(h.name + "_seconds", h.help.empty() ? h.name : h.help, h.latency);

  if (!m.sources.empty()) {
    struct Field {
      const char* name;
      const char* type;
      const char* help;
      std::uint64_t BrokerStatsSample::*member;
    };
    static constexpr Field kFields[] = {
        {"broker_published_total", "counter", "Messages accepted by the observed broker.",
         &BrokerStatsSample::published},
        {"broker_delivered_total", "counter", "Deliveries made by the observed broker.", &BrokerStatsSample::delivered},
        {"broker_dropped_total", "counter", "Messages dropped by the observed broker.", &BrokerStatsSample::dropped},
        {"broker_expired_total", "counter", "Messages expired in the observed broker.", &BrokerStatsSample::expired},
        {"broker_queue_depth", "gauge", "Messages waiting in the observed broker.", &BrokerStatsSample::queue_depth},
    };
    for (const auto& f : kFields) {
      w.family(f.name, f.type, f.help);
      for (const auto& s : m.sources) {
        w.sample(f.name, s.stats.*f.member, fmt::format("{{source=\"{}\"}}", detail::metrics::escape(s.name, true)));
      }
    }
  }
  return w.take();
}

}  // namespace kincir
