/// @file
/// `kincir::MetricsCollector`: the collector of the Rust kincir crate's performance guide
/// (`record_publish`, `record_receive`, `record_error`, `get_metrics`, `print_summary`) made
/// cheap enough to leave on: per-thread shards, no lock and no shared cache line on the
/// recording path.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/error.hpp>
#include <kincir/metrics/detail/shard.hpp>
#include <kincir/metrics/histogram.hpp>
#include <kincir/metrics/performance_metrics.hpp>
#include <kincir/metrics/prometheus.hpp>

#include <array>         // reserved names
#include <chrono>        // durations, start time
#include <cstdint>       // std::uint64_t
#include <cstdio>        // std::FILE
#include <functional>    // std::function for observed sources
#include <memory>        // std::shared_ptr to the shard list
#include <mutex>         // registration and observer lists
#include <string>        // names
#include <string_view>   // names
#include <system_error>  // std::error_code
#include <utility>       // std::move
#include <vector>        // names, observers

namespace kincir {

/// Collects publish/receive counts and latencies, errors, named counters and named latency
/// histograms, and polls observed statistics sources; `snapshot()` merges it all into a
/// `PerformanceMetrics`.
///
/// Thread safety: every member may be called from any thread concurrently. Recording
/// (`record_*`, `count_*`, `Counter::add`, `Histogram::record`) is `noexcept`, takes no lock and
/// writes only the calling thread's shard (plain loads and stores, no locked instruction); a
/// thread's first record allocates its shard, a thread's first sample in a histogram allocates
/// that histogram's part (about 20 KiB), nothing allocates afterwards. When a thread exits its
/// shard is handed, counts included, to the next new thread. A snapshot reads every shard while
/// recording goes on: each number is exact as of some moment during the snapshot, but two
/// numbers may be from slightly different moments.
///
/// The collector is neither copyable nor movable (handles and shards point to it); share it by
/// reference or `std::shared_ptr`. It must outlive every thread's last record into it.
class MetricsCollector {
 public:
  using clock = std::chrono::steady_clock;
  /// Identifies an observed source, for `unobserve`.
  using ObserverId = std::uint64_t;

  /// Most named counters a collector holds.
  static constexpr std::size_t kMaxNamedCounters = detail::metrics::kMaxCounters - detail::metrics::kFirstNamedCounter;
  /// Most named histograms a collector holds.
  static constexpr std::size_t kMaxNamedHistograms =
      detail::metrics::kMaxHistograms - detail::metrics::kFirstNamedHistogram;

  /// A monotonically increasing named counter. Cheap to copy; a default-constructed one does
  /// nothing. Valid while its collector lives.
  class Counter {
   public:
    Counter() noexcept = default;
    /// Adds `n`. Never blocks, never allocates after the thread's first record.
    void add(std::uint64_t n = 1) const noexcept {
      if (collector_ == nullptr) return;
      if (auto* s = collector_->shard()) detail::metrics::bump(s->counters[slot_], n);
    }
    /// The current total over all threads.
    [[nodiscard]] std::uint64_t value() const noexcept {
      return collector_ == nullptr ? 0 : collector_->sum_counter(slot_);
    }
    explicit operator bool() const noexcept { return collector_ != nullptr; }

   private:
    friend class MetricsCollector;
    Counter(MetricsCollector* c, std::size_t slot) noexcept : collector_(c), slot_(slot) {}
    MetricsCollector* collector_ = nullptr;
    std::size_t slot_ = 0;
  };

  /// A named latency histogram. Cheap to copy; a default-constructed one does nothing. Valid
  /// while its collector lives.
  class Histogram {
   public:
    Histogram() noexcept = default;
    /// Adds one sample. Never blocks; allocates only on the thread's first sample.
    void record(std::chrono::nanoseconds d) const noexcept {
      if (collector_ != nullptr) collector_->record_sample(slot_, d);
    }
    /// Every thread's samples merged.
    [[nodiscard]] LatencyHistogram snapshot() const {
      return collector_ == nullptr ? LatencyHistogram{} : collector_->merged_histogram(slot_);
    }
    explicit operator bool() const noexcept { return collector_ != nullptr; }

   private:
    friend class MetricsCollector;
    Histogram(MetricsCollector* c, std::size_t slot) noexcept : collector_(c), slot_(slot) {}
    MetricsCollector* collector_ = nullptr;
    std::size_t slot_ = 0;
  };

  /// Starts the clock of `overall_throughput` now.
  MetricsCollector()
      : id_(detail::metrics::next_collector_id()),
        shards_(std::make_shared<detail::metrics::ShardList>(id_)),
        start_time_(clock::now()) {}
  MetricsCollector(const MetricsCollector&) = delete;
  MetricsCollector& operator=(const MetricsCollector&) = delete;
  ~MetricsCollector() = default;

  // --- recording (the guide's API) ----------------------------------------------------------

  /// One publish call that took `duration` and sent `messages` messages.
  void record_publish(std::chrono::nanoseconds duration, std::uint64_t messages = 1) noexcept {
    using namespace detail::metrics;
    if (Shard* s = shard()) [[likely]] {
      bump(s->counters[kPublishedMessages], messages);
      bump(s->counters[kPublishCalls], 1);
      if (HistogramCells* h = s->cells(kPublishLatency)) h->record(nanoseconds(duration));
    }
  }

  /// One receive call that took `duration` and returned `messages` messages.
  void record_receive(std::chrono::nanoseconds duration, std::uint64_t messages = 1) noexcept {
    using namespace detail::metrics;
    if (Shard* s = shard()) [[likely]] {
      bump(s->counters[kReceivedMessages], messages);
      bump(s->counters[kReceiveCalls], 1);
      if (HistogramCells* h = s->cells(kReceiveLatency)) h->record(nanoseconds(duration));
    }
  }

  /// `n` failed operations.
  void record_error(std::uint64_t n = 1) noexcept { add(detail::metrics::kErrors, n); }

  /// One publish call that was not timed (sampled timing): counted, and the publish time is
  /// extrapolated from the timed calls.
  void count_publish(std::uint64_t messages = 1) noexcept {
    using namespace detail::metrics;
    if (Shard* s = shard()) [[likely]] {
      bump(s->counters[kPublishedMessages], messages);
      bump(s->counters[kPublishCalls], 1);
    }
  }

  /// One receive call that was not timed; see `count_publish`.
  void count_receive(std::uint64_t messages = 1) noexcept {
    using namespace detail::metrics;
    if (Shard* s = shard()) [[likely]] {
      bump(s->counters[kReceivedMessages], messages);
      bump(s->counters[kReceiveCalls], 1);
    }
  }

  /// `n` deliveries acknowledged.
  void record_ack(std::uint64_t n = 1) noexcept { add(detail::metrics::kAcked, n); }
  /// `n` deliveries negatively acknowledged.
  void record_nack(std::uint64_t n = 1) noexcept { add(detail::metrics::kNacked, n); }

  // --- named metrics ------------------------------------------------------------------------

  /// The counter called `name` (registered on first request; later requests return the same
  /// counter and ignore `help`). `name` must be a Prometheus metric name
  /// (`[a-zA-Z_:][a-zA-Z0-9_:]*`) not taken by the collector's own families; `errc::invalid_argument`
  /// for a bad name or when `kMaxNamedCounters` are registered.
  Counter counter(std::string_view name, std::string_view help, std::error_code& ec) {
    const std::size_t slot = register_name(counter_names_, name, help, kMaxNamedCounters, false, ec);
    return ec ? Counter{} : Counter(this, detail::metrics::kFirstNamedCounter + slot);
  }
  /// Throwing form of `counter(name, help, ec)`.
  Counter counter(std::string_view name, std::string_view help = {}) {
    std::error_code ec;
    Counter c = counter(name, help, ec);
    throw_if(ec, "MetricsCollector::counter");
    return c;
  }

  /// The latency histogram called `name`; rules as for `counter` (exported as
  /// `<prefix>_<name>_seconds`), at most `kMaxNamedHistograms`.
  Histogram histogram(std::string_view name, std::string_view help, std::error_code& ec) {
    const std::size_t slot = register_name(histogram_names_, name, help, kMaxNamedHistograms, true, ec);
    return ec ? Histogram{} : Histogram(this, detail::metrics::kFirstNamedHistogram + slot);
  }
  /// Throwing form of `histogram(name, help, ec)`.
  Histogram histogram(std::string_view name, std::string_view help = {}) {
    std::error_code ec;
    Histogram h = histogram(name, help, ec);
    throw_if(ec, "MetricsCollector::histogram");
    return h;
  }

  // --- observed sources ---------------------------------------------------------------------

  /// Polls `source` on every snapshot and reports what it returns under `name` (the in-memory
  /// broker's statistics, for instance; see docs/metrics.md). `source` is called from the thread
  /// taking the snapshot, one snapshot at a time, and must not call `observe` or `unobserve`.
  /// It must stay callable until `unobserve(id)` returns or the collector is destroyed.
  ObserverId observe(std::string name, std::function<BrokerStatsSample()> source) {
    const std::lock_guard lock(observers_mutex_);
    const ObserverId id = ++last_observer_id_;
    observers_.push_back(Observer{id, std::move(name), std::move(source)});
    return id;
  }

  /// Stops polling the source `id`; once it returns, the source is never called again.
  void unobserve(ObserverId id) noexcept {
    const std::lock_guard lock(observers_mutex_);
    std::erase_if(observers_, [id](const Observer& o) { return o.id == id; });
  }

  // --- reading ------------------------------------------------------------------------------

  /// Every shard merged, named metrics, and a fresh poll of every observed source.
  [[nodiscard]] PerformanceMetrics snapshot() const;

  /// The guide's name for `snapshot()`.
  [[nodiscard]] PerformanceMetrics get_metrics() const { return snapshot(); }

  /// All publish-call latencies, mergeable with other histograms.
  [[nodiscard]] LatencyHistogram publish_histogram() const {
    return merged_histogram(detail::metrics::kPublishLatency);
  }
  /// All receive-call latencies, mergeable with other histograms.
  [[nodiscard]] LatencyHistogram receive_histogram() const {
    return merged_histogram(detail::metrics::kReceiveLatency);
  }

  /// Prints `snapshot()` as the guide's summary plus latency percentiles.
  void print_summary(std::FILE* out = stdout) const { snapshot().print_summary(out); }

  /// `snapshot()` in the Prometheus text format (see `kincir::to_prometheus`).
  [[nodiscard]] std::string to_prometheus(std::string_view prefix = "kincir") const {
    return kincir::to_prometheus(snapshot(), prefix);
  }

  [[nodiscard]] clock::time_point start_time() const noexcept { return start_time_; }

 private:
  struct Name {
    std::string name;
    std::string help;
  };
  struct Observer {
    ObserverId id;
    std::string name;
    std::function<BrokerStatsSample()> poll;
  };

  static std::uint64_t nanoseconds(std::chrono::nanoseconds d) noexcept {
    return d.count() > 0 ? static_cast<std::uint64_t>(d.count()) : 0;
  }

  /// The calling thread's shard: one thread-local compare when warm.
  detail::metrics::Shard* shard() const noexcept {
    const detail::metrics::ShardCache& cache = detail::metrics::tls_cache;
    if (cache.id == id_) [[likely]]
      return cache.shard;
    return detail::metrics::attach(shards_);
  }

  void add(std::size_t slot, std::uint64_t n) noexcept {
    if (detail::metrics::Shard* s = shard()) [[likely]]
      detail::metrics::bump(s->counters[slot], n);
  }

  void record_sample(std::size_t slot, std::chrono::nanoseconds d) noexcept {
    if (detail::metrics::Shard* s = shard()) [[likely]] {
      if (detail::metrics::HistogramCells* h = s->cells(slot)) h->record(nanoseconds(d));
    }
  }

  [[nodiscard]] std::uint64_t sum_counter(std::size_t slot) const noexcept {
    std::uint64_t total = 0;
    for (auto* s = shards_->head(); s != nullptr; s = s->next)
      total += s->counters[slot].load(std::memory_order_relaxed);
    return total;
  }

  [[nodiscard]] LatencyHistogram merged_histogram(std::size_t slot) const {
    LatencyHistogram out;
    for (auto* s = shards_->head(); s != nullptr; s = s->next) {
      // acquire: pairs with the release that published the cells.
      if (const auto* h = s->histograms[slot].load(std::memory_order_acquire)) h->merge_into(out);
    }
    return out;
  }

  static bool is_reserved(std::string_view name, bool histogram) noexcept;

  std::size_t register_name(std::vector<Name>& names, std::string_view name, std::string_view help,
                            std::size_t capacity, bool histogram, std::error_code& ec) {
    ec.clear();
    if (!detail::metrics::is_metric_name(name) || is_reserved(name, histogram)) {
      ec = errc::invalid_argument;
      return 0;
    }
    const std::lock_guard lock(names_mutex_);
    for (std::size_t i = 0; i < names.size(); ++i)
      if (names[i].name == name) return i;
    if (names.size() == capacity) {
      ec = errc::invalid_argument;
      return 0;
    }
    names.push_back(Name{std::string(name), std::string(help)});
    return names.size() - 1;
  }

  std::uint64_t id_;
  std::shared_ptr<detail::metrics::ShardList> shards_;
  clock::time_point start_time_;

  mutable std::mutex names_mutex_;
  std::vector<Name> counter_names_;
  std::vector<Name> histogram_names_;

  mutable std::mutex observers_mutex_;
  std::vector<Observer> observers_;
  ObserverId last_observer_id_ = 0;
};

KINCIR_DECL bool MetricsCollector::is_reserved(std::string_view name, bool histogram) noexcept {
  // The collector's own families, as the exported names would collide with them.
  static constexpr std::array<std::string_view, 7> kCounters = {
      "messages_published", "messages_received", "errors",         "publish_calls",
      "receive_calls",      "messages_acked",    "messages_nacked"};
  static constexpr std::array<std::string_view, 5> kHistograms = {
      "publish_latency", "receive_latency", "publish_latency_max", "receive_latency_max", "uptime"};
  if (name.starts_with("broker_")) return true;
  if (histogram) {
    for (auto reserved : kHistograms)
      if (name == reserved) return true;
    return false;
  }
  if (name.ends_with("_total")) name.remove_suffix(6);
  for (auto reserved : kCounters)
    if (name == reserved) return true;
  return false;
}

KINCIR_DECL PerformanceMetrics MetricsCollector::snapshot() const {
  using namespace detail::metrics;
  PerformanceMetrics m;
  m.start_time = start_time_;

  std::array<std::uint64_t, kMaxCounters> totals{};
  for (const Shard* s = shards_->head(); s != nullptr; s = s->next) {
    for (std::size_t i = 0; i < kMaxCounters; ++i) totals[i] += s->counters[i].load(std::memory_order_relaxed);
  }
  const LatencyHistogram publish = merged_histogram(kPublishLatency);
  const LatencyHistogram receive = merged_histogram(kReceiveLatency);

  m.messages_published = totals[kPublishedMessages];
  m.messages_received = totals[kReceivedMessages];
  m.publish_calls = totals[kPublishCalls];
  m.receive_calls = totals[kReceiveCalls];
  m.error_count = totals[kErrors];
  m.messages_acked = totals[kAcked];
  m.messages_nacked = totals[kNacked];
  m.publish_latency = publish.summary();
  m.receive_latency = receive.summary();

  // Exact when every call was timed; scaled up from the timed calls when timing is sampled.
  const auto total_time = [](const LatencyHistogram& h, std::uint64_t calls) {
    if (h.count() == 0 || calls <= h.count()) return h.sum();
    const double scaled =
        static_cast<double>(h.sum().count()) * static_cast<double>(calls) / static_cast<double>(h.count());
    return std::chrono::nanoseconds(static_cast<std::chrono::nanoseconds::rep>(scaled));
  };
  m.total_publish_time = total_time(publish, m.publish_calls);
  m.total_receive_time = total_time(receive, m.receive_calls);

  {
    const std::lock_guard lock(names_mutex_);
    for (std::size_t i = 0; i < counter_names_.size(); ++i) {
      m.counters.push_back({counter_names_[i].name, counter_names_[i].help, totals[kFirstNamedCounter + i]});
    }
    for (std::size_t i = 0; i < histogram_names_.size(); ++i) {
      m.histograms.push_back(
          {histogram_names_[i].name, histogram_names_[i].help, merged_histogram(kFirstNamedHistogram + i).summary()});
    }
  }
  {
    const std::lock_guard lock(observers_mutex_);
    for (const auto& o : observers_) m.sources.push_back({o.name, o.poll()});
  }
  m.snapshot_time = clock::now();
  return m;
}

}  // namespace kincir
