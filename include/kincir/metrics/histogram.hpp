/// @file
/// `kincir::LatencyHistogram`: a mergeable log-linear histogram of durations with bounded
/// relative error, and `kincir::LatencySummary`, the percentiles read from it.
#pragma once

#include <kincir/config.hpp>

#include <algorithm>  // std::max
#include <bit>        // std::countl_zero
#include <chrono>     // std::chrono::nanoseconds
#include <cstdint>    // std::uint64_t
#include <vector>     // bucket storage

namespace kincir {

/// What a latency histogram reports: sample count, exact sum, mean and max, and percentiles
/// (each within `LatencyHistogram::kMaxRelativeError` of the true order statistic).
/// All zero when there are no samples.
struct LatencySummary {
  std::uint64_t count = 0;          ///< Number of samples.
  std::chrono::nanoseconds sum{};   ///< Exact sum of the samples.
  std::chrono::nanoseconds mean{};  ///< `sum / count`, rounded down.
  std::chrono::nanoseconds p50{};
  std::chrono::nanoseconds p90{};
  std::chrono::nanoseconds p99{};
  std::chrono::nanoseconds p999{};  ///< 99.9th percentile.
  std::chrono::nanoseconds max{};   ///< Exact largest sample.

  friend bool operator==(const LatencySummary&, const LatencySummary&) = default;
};

/// A histogram of durations in nanoseconds with log-linear buckets: below 128 ns every
/// nanosecond has its own bucket; above, each power of two is split into 64 equal buckets. A
/// bucket is therefore at most 1/64 of its lower bound wide, and a percentile (reported as the
/// middle of its bucket) is within 1/128 (0.8 %) of the true value, from 1 ns up to
/// `kMaxTrackable` (about 4.9 hours; longer samples land in the last bucket, the max stays exact).
///
/// Histograms merge exactly (`merge` adds bucket counts), so per-thread histograms combine into
/// one without losing precision. A value type, not thread-safe; `MetricsCollector` keeps the
/// concurrent, sharded form and produces these on read.
class LatencyHistogram {
 public:
  /// log2 of the number of buckets per power of two.
  static constexpr unsigned kSubBucketBits = 6;
  static constexpr std::uint64_t kSubBucketCount = std::uint64_t{1} << kSubBucketBits;
  /// Largest exponent tracked with full precision: values up to 2^44 - 1 ns (about 4.9 h).
  static constexpr unsigned kMaxExponent = 43;
  static constexpr std::uint64_t kMaxTrackable = (std::uint64_t{1} << (kMaxExponent + 1)) - 1;
  static constexpr std::size_t kBucketCount = (kMaxExponent - kSubBucketBits + 2) * kSubBucketCount;
  /// Bound on |reported - true| / true for every percentile of samples up to `kMaxTrackable`.
  static constexpr double kMaxRelativeError = 1.0 / (2.0 * kSubBucketCount);

  /// The bucket holding `ns` nanoseconds.
  static constexpr std::size_t bucket_index(std::uint64_t ns) noexcept {
    if (ns > kMaxTrackable) ns = kMaxTrackable;
    if (ns < kSubBucketCount) return static_cast<std::size_t>(ns);
    const auto exponent = static_cast<unsigned>(63 - std::countl_zero(ns));
    const std::uint64_t mantissa = ns >> (exponent - kSubBucketBits);  // in [64, 128)
    return static_cast<std::size_t>((exponent - kSubBucketBits) * kSubBucketCount + mantissa);
  }

  /// Smallest value of bucket `index`.
  static constexpr std::uint64_t bucket_lower(std::size_t index) noexcept {
    if (index < 2 * kSubBucketCount) return index;
    const std::uint64_t shift = index / kSubBucketCount - 1;
    const std::uint64_t mantissa = index % kSubBucketCount + kSubBucketCount;
    return mantissa << shift;
  }

  /// Number of values in bucket `index`.
  static constexpr std::uint64_t bucket_width(std::size_t index) noexcept {
    if (index < 2 * kSubBucketCount) return 1;
    return std::uint64_t{1} << (index / kSubBucketCount - 1);
  }

  /// An empty histogram; allocates its buckets on the first sample.
  LatencyHistogram() noexcept = default;

  /// Adds `times` samples of `value` (negative durations count as zero).
  void record(std::chrono::nanoseconds value, std::uint64_t times = 1) {
    const std::uint64_t ns = value.count() > 0 ? static_cast<std::uint64_t>(value.count()) : 0;
    add_bucket(bucket_index(ns), times);
    sum_ += ns * times;
    max_ = std::max(max_, ns);
  }

  /// Adds every sample of `other`.
  void merge(const LatencyHistogram& other) {
    if (other.count_ == 0) return;
    for (std::size_t i = 0; i < other.buckets_.size(); ++i) {
      if (other.buckets_[i] != 0) add_bucket(i, other.buckets_[i]);
    }
    sum_ += other.sum_;
    max_ = std::max(max_, other.max_);
  }

  /// Adds `n` samples to bucket `index` without touching sum or max; with `add_totals`, this is
  /// how sharded storage is merged into a histogram.
  void add_bucket(std::size_t index, std::uint64_t n) {
    if (n == 0) return;
    if (buckets_.empty()) buckets_.assign(kBucketCount, 0);
    buckets_[index] += n;
    count_ += n;
  }

  /// Adds to the sum and raises the max (see `add_bucket`).
  void add_totals(std::uint64_t sum_ns, std::uint64_t max_ns) noexcept {
    sum_ += sum_ns;
    max_ = std::max(max_, max_ns);
  }

  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
  [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
  [[nodiscard]] std::chrono::nanoseconds sum() const noexcept { return as_duration(sum_); }
  [[nodiscard]] std::chrono::nanoseconds max() const noexcept { return as_duration(max_); }
  [[nodiscard]] std::chrono::nanoseconds mean() const noexcept {
    return count_ == 0 ? std::chrono::nanoseconds{} : as_duration(sum_ / count_);
  }
  /// Samples in bucket `index` (0 for an empty histogram).
  [[nodiscard]] std::uint64_t bucket_count(std::size_t index) const noexcept {
    return buckets_.empty() ? 0 : buckets_[index];
  }

  /// The `q`-quantile (`q` in [0, 1], clamped): the sample of rank ceil(q * count), reported as
  /// the middle of its bucket and never above the max. Zero for an empty histogram.
  [[nodiscard]] std::chrono::nanoseconds percentile(double q) const noexcept {
    if (count_ == 0) return {};
    q = q < 0.0 ? 0.0 : (q > 1.0 ? 1.0 : q);
    auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count_));
    if (static_cast<double>(rank) < q * static_cast<double>(count_)) ++rank;  // ceil
    if (rank == 0) rank = 1;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < buckets_.size(); ++i) {
      seen += buckets_[i];
      if (seen >= rank) {
        const std::uint64_t middle = bucket_lower(i) + (bucket_width(i) - 1) / 2;
        return as_duration(middle < max_ ? middle : max_);
      }
    }
    return as_duration(max_);
  }

  /// Count, sum, mean, p50, p90, p99, p99.9 and max.
  [[nodiscard]] LatencySummary summary() const noexcept {
    LatencySummary s;
    s.count = count_;
    s.sum = sum();
    s.mean = mean();
    s.max = max();
    s.p50 = percentile(0.5);
    s.p90 = percentile(0.9);
    s.p99 = percentile(0.99);
    s.p999 = percentile(0.999);
    return s;
  }

 private:
  static std::chrono::nanoseconds as_duration(std::uint64_t ns) noexcept {
    return std::chrono::nanoseconds(static_cast<std::chrono::nanoseconds::rep>(ns));
  }

  std::vector<std::uint64_t> buckets_;  // empty until the first sample, then kBucketCount
  std::uint64_t count_ = 0;
  std::uint64_t sum_ = 0;
  std::uint64_t max_ = 0;
};

static_assert(LatencyHistogram::bucket_index(LatencyHistogram::kMaxTrackable) == LatencyHistogram::kBucketCount - 1,
              "the last bucket holds the largest trackable value");
static_assert(LatencyHistogram::bucket_lower(LatencyHistogram::bucket_index(1000)) <= 1000 &&
                  1000 < LatencyHistogram::bucket_lower(LatencyHistogram::bucket_index(1000)) +
                             LatencyHistogram::bucket_width(LatencyHistogram::bucket_index(1000)),
              "a value lies inside its bucket");

}  // namespace kincir
