#include <kincir/metrics/histogram.hpp>

#include <algorithm>  // std::sort
#include <chrono>     // durations
#include <cmath>      // std::exp, std::log, std::ceil
#include <cstdint>    // std::uint64_t
#include <random>     // test distributions
#include <vector>     // samples

#include "support/catch.hpp"

using kincir::LatencyHistogram;
using std::chrono::nanoseconds;

namespace {

// The sample of rank ceil(q * n), the definition the histogram approximates.
std::uint64_t exact_percentile(std::vector<std::uint64_t> sorted, double q) {
  auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  if (rank == 0) rank = 1;
  return sorted[rank - 1];
}

void check_percentiles(const std::vector<std::uint64_t>& samples) {
  LatencyHistogram h;
  for (auto v : samples) h.record(nanoseconds(v));
  std::vector<std::uint64_t> sorted = samples;
  std::sort(sorted.begin(), sorted.end());
  for (const double q : {0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0}) {
    const auto expected = static_cast<double>(exact_percentile(sorted, q));
    const auto got = static_cast<double>(h.percentile(q).count());
    INFO("q = " << q << ", expected " << expected << ", got " << got);
    CHECK(std::abs(got - expected) <= expected * LatencyHistogram::kMaxRelativeError);
  }
  CHECK(static_cast<std::uint64_t>(h.max().count()) == sorted.back());
  CHECK(h.count() == samples.size());
}

}  // namespace

TEST_CASE("every value lies in its bucket, buckets are at most 1/64 of their lower bound wide", "[histogram]") {
  std::mt19937_64 rng(7);
  std::vector<std::uint64_t> values;
  for (std::uint64_t v = 0; v < 5000; ++v) values.push_back(v);
  for (int i = 0; i < 20000; ++i) values.push_back(rng() % (LatencyHistogram::kMaxTrackable + 1));
  for (unsigned e = 0; e <= LatencyHistogram::kMaxExponent + 1; ++e) {
    values.push_back(std::uint64_t{1} << e);
    values.push_back((std::uint64_t{1} << e) - 1);
  }
  for (const auto v : values) {
    if (v > LatencyHistogram::kMaxTrackable) continue;  // clamped into the last bucket, checked below
    const std::size_t i = LatencyHistogram::bucket_index(v);
    REQUIRE(i < LatencyHistogram::kBucketCount);
    const std::uint64_t lower = LatencyHistogram::bucket_lower(i);
    const std::uint64_t width = LatencyHistogram::bucket_width(i);
    INFO("value " << v << " bucket " << i);
    CHECK(lower <= v);
    CHECK(v < lower + width);
    CHECK((width == 1 || width * LatencyHistogram::kSubBucketCount <= lower));
  }
  // Buckets tile the range: each starts where the previous one ends.
  for (std::size_t i = 1; i < LatencyHistogram::kBucketCount; ++i) {
    REQUIRE(LatencyHistogram::bucket_lower(i) ==
            LatencyHistogram::bucket_lower(i - 1) + LatencyHistogram::bucket_width(i - 1));
  }
  CHECK(LatencyHistogram::bucket_index(LatencyHistogram::kMaxTrackable + 12345) == LatencyHistogram::kBucketCount - 1);
}

TEST_CASE("an empty histogram reports zeros", "[histogram]") {
  const LatencyHistogram h;
  CHECK(h.empty());
  CHECK(h.percentile(0.5) == nanoseconds::zero());
  CHECK(h.summary() == kincir::LatencySummary{});
}

TEST_CASE("small values are exact", "[histogram]") {
  LatencyHistogram h;
  for (int v = 1; v <= 100; ++v) h.record(nanoseconds(v));
  CHECK(h.percentile(0.5) == nanoseconds(50));
  CHECK(h.percentile(0.9) == nanoseconds(90));
  CHECK(h.percentile(0.99) == nanoseconds(99));
  CHECK(h.percentile(1.0) == nanoseconds(100));
  CHECK(h.sum() == nanoseconds(5050));
  CHECK(h.mean() == nanoseconds(50));  // 50.5 rounded down
  CHECK(h.max() == nanoseconds(100));
}

TEST_CASE("negative durations count as zero", "[histogram]") {
  LatencyHistogram h;
  h.record(nanoseconds(-5));
  CHECK(h.count() == 1);
  CHECK(h.sum() == nanoseconds::zero());
  CHECK(h.bucket_count(0) == 1);
}

TEST_CASE("percentiles of a uniform distribution are within the stated error", "[histogram]") {
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<std::uint64_t> dist(1, 1'000'000);
  std::vector<std::uint64_t> samples(100'000);
  for (auto& s : samples) s = dist(rng);
  check_percentiles(samples);
}

TEST_CASE("percentiles of a log-uniform distribution from 1 ns to 1 h are within the stated error", "[histogram]") {
  std::mt19937_64 rng(1234);
  std::uniform_real_distribution<double> exponent(0.0, std::log(3600e9));
  std::vector<std::uint64_t> samples(100'000);
  for (auto& s : samples) s = static_cast<std::uint64_t>(std::exp(exponent(rng)));
  check_percentiles(samples);
}

TEST_CASE("percentiles of a bimodal distribution are within the stated error", "[histogram]") {
  std::mt19937_64 rng(99);
  std::normal_distribution<double> fast(2'000.0, 100.0);
  std::normal_distribution<double> slow(5'000'000.0, 250'000.0);
  std::vector<std::uint64_t> samples(50'000);
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const double v = i % 100 == 0 ? slow(rng) : fast(rng);
    samples[i] = static_cast<std::uint64_t>(v < 1.0 ? 1.0 : v);
  }
  check_percentiles(samples);
}

TEST_CASE("merging equals recording everything into one histogram", "[histogram]") {
  std::mt19937_64 rng(5);
  LatencyHistogram all;
  LatencyHistogram a;
  LatencyHistogram b;
  for (int i = 0; i < 10'000; ++i) {
    const nanoseconds v(static_cast<std::int64_t>(rng() % 10'000'000));
    all.record(v);
    (i % 3 == 0 ? a : b).record(v);
  }
  LatencyHistogram merged;
  merged.merge(a);
  merged.merge(b);
  merged.merge(LatencyHistogram{});
  CHECK(merged.summary() == all.summary());
  for (std::size_t i = 0; i < LatencyHistogram::kBucketCount; ++i)
    REQUIRE(merged.bucket_count(i) == all.bucket_count(i));
}

TEST_CASE("samples beyond the trackable range keep an exact max", "[histogram]") {
  LatencyHistogram h;
  const auto huge = nanoseconds(static_cast<std::int64_t>(LatencyHistogram::kMaxTrackable) * 4);
  h.record(nanoseconds(10));
  h.record(huge);
  CHECK(h.max() == huge);
  CHECK(h.percentile(1.0) <= huge);
  CHECK(h.percentile(0.5) == nanoseconds(10));
}
