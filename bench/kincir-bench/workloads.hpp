// kincir-bench: the workloads and what one run of a workload reports.
#pragma once

#include <benchmark/benchmark.h>

#include <cstddef>     // std::size_t
#include <cstdint>     // std::uint8_t
#include <functional>  // std::function
#include <string>      // names
#include <vector>      // the workload list

namespace kincir_bench {

/// Which invocation runs a workload: `--quick` runs the quick ones, the default set adds the
/// standard ones, `--full` runs everything.
enum class Tier : std::uint8_t { quick, standard, full };

/// What a rate counts.
enum class Unit : std::uint8_t {
  messages,    ///< messages published (or received) per second
  deliveries,  ///< messages times the subscribers that each received them, per second
  none,        ///< a latency workload: paced, its rate means nothing
};

/// One row of the table: a workload and its parameters. `run` measures one repetition: it
/// sets the manual iteration time and the counters `messages`, `deliveries`, and where they
/// apply `peak_bytes`, `p50_ns`, `p99_ns`, `p999_ns`, `max_ns`, `payload_bytes`,
/// `overhead` (fraction, instrumented against plain in the same repetition).
struct Workload {
  std::string name;   ///< e.g. "fanout/1->4"
  std::string group;  ///< e.g. "fanout": the chart groups by it
  std::string title;  ///< one line saying what is measured
  Unit unit = Unit::messages;
  std::size_t message_size = 0;  ///< payload bytes
  Tier tier = Tier::standard;
  std::function<void(benchmark::State&)> run;
};

/// Every workload, in table order.
std::vector<Workload> make_workloads();

/// Names of the counters `Workload::run` sets.
inline constexpr const char* kMessages = "messages";
inline constexpr const char* kDeliveries = "deliveries";
inline constexpr const char* kPeakBytes = "peak_bytes";
inline constexpr const char* kP50 = "p50_ns";
inline constexpr const char* kP99 = "p99_ns";
inline constexpr const char* kP999 = "p999_ns";
inline constexpr const char* kMax = "max_ns";
inline constexpr const char* kPayloadBytes = "payload_bytes";
inline constexpr const char* kOverhead = "overhead";
/// A peer's counters on a guide row: `<peer>_s`, its timed part, and `<peer>_peak`.
inline constexpr const char* kPeerSecondsSuffix = "_s";
inline constexpr const char* kPeerPeakSuffix = "_peak";

/// Called by each workload at the start of a repetition: shows progress, returns the index of
/// the repetition (0, 1, ...).
std::size_t on_repetition_start();

}  // namespace kincir_bench
