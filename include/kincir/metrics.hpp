/// @file
/// Umbrella for kincir's metrics: `MetricsCollector`, `PerformanceMetrics`, latency histograms,
/// Prometheus exposition and the `instrumented` decorators. Needs {fmt} 9 (link `fmt::fmt`).
#pragma once

#include <kincir/config.hpp>
#include <kincir/metrics/collector.hpp>
#include <kincir/metrics/histogram.hpp>
#include <kincir/metrics/instrumented.hpp>
#include <kincir/metrics/performance_metrics.hpp>
#include <kincir/metrics/prometheus.hpp>
