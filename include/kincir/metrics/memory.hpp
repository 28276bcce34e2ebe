/// @file
/// `kincir::metrics_observe(collector, broker, name)`: reports an in-memory broker's own
/// statistics (published, delivered, dropped, expired, queue depth) through a `MetricsCollector`.
#pragma once

#include <kincir/config.hpp>
#include <kincir/memory/broker.hpp>
#include <kincir/memory/stats.hpp>
#include <kincir/metrics/collector.hpp>
#include <kincir/metrics/performance_metrics.hpp>

#include <memory>   // std::shared_ptr
#include <string>   // source names
#include <utility>  // std::move

namespace kincir {

/// The broker-wide totals of `stats` as the sample a collector reports.
[[nodiscard]] inline BrokerStatsSample to_stats_sample(const memory::BrokerStats& stats) noexcept {
  return BrokerStatsSample{stats.published, stats.delivered, stats.dropped, stats.expired, stats.queue_depth};
}

/// Makes every `collector.snapshot()` (and so `print_summary`, `to_prometheus`) poll
/// `broker.stats()` and report it under `name`. Returns the id to pass to
/// `collector.unobserve`.
///
/// Lifetime: the collector keeps a reference to `broker`, so the broker object must outlive the
/// registration and must not be moved from while registered: call `collector.unobserve(id)`
/// before it goes away (or destroy the collector first). The `std::shared_ptr` overload has no
/// such rule. The counts are zero when the broker's `enable_statistics` is off.
inline MetricsCollector::ObserverId metrics_observe(MetricsCollector& collector, const memory::InMemoryBroker& broker,
                                                    std::string name) {
  return collector.observe(std::move(name), [&broker] { return to_stats_sample(broker.stats()); });
}

/// Like the overload above, but the registration shares ownership of the broker, which therefore
/// lives at least as long as the registration.
inline MetricsCollector::ObserverId metrics_observe(MetricsCollector& collector,
                                                    std::shared_ptr<const memory::InMemoryBroker> broker,
                                                    std::string name) {
  return collector.observe(std::move(name), [broker = std::move(broker)] { return to_stats_sample(broker->stats()); });
}

}  // namespace kincir
