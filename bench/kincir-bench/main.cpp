// kincir-bench: the bundled throughput and latency benchmark (`scripts/dev bench` runs it).
//
//   kincir-bench [--quick | --full] [--filter REGEX] [--repetitions N] [--json FILE] [--list]
//                [--rabbitmq-uri URI] [--no-rabbitmq-c]
//
// Runs the selected workloads (Google Benchmark underneath, one iteration per repetition, a
// warm-up repetition first, the median of the others reported), shows progress on stderr, prints one table on stdout
// and the comparison with the performance targets, and writes every number with a description of the machine to FILE
// with --json. `scripts/bench/kincir_bench.py` adds --compare and --report on top.
#include <benchmark/benchmark.h>
#include <kincir/config.hpp>

#include <fmt/format.h>

#include <sys/utsname.h>  // uname: kernel
#include <unistd.h>       // isatty, gethostname

#include <algorithm>    // std::sort, std::max
#include <cmath>        // std::isnan
#include <cstdio>       // std::FILE, stderr
#include <cstdlib>      // getloadavg, std::strtoul
#include <ctime>        // gmtime_r
#include <exception>    // std::exception
#include <fstream>      // /proc files
#include <limits>       // quiet_NaN
#include <map>          // counters
#include <optional>     // optional numbers
#include <regex>        // --filter
#include <string>       // text
#include <string_view>  // --child arguments
#include <thread>       // hardware_concurrency
#include <utility>      // std::pair
#include <vector>       // results

#include "guide.hpp"
#include "rabbitmq_workloads.hpp"
#include "workloads.hpp"

#ifndef KINCIR_BENCH_BUILD_TYPE
#define KINCIR_BENCH_BUILD_TYPE "unknown"
#endif

namespace kincir_bench {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// --- options -------------------------------------------------------------------------------------

struct Options {
  Tier tier = Tier::standard;
  std::string mode = "default";
  std::string filter;
  std::string json;
  int repetitions = 0;  // 0: the mode's default
  bool list = false;
  RabbitMQOptions rabbitmq;
};

void usage(std::FILE* out) {
  fmt::print(
      out,
      "usage: kincir-bench [--quick | --full] [--filter REGEX] [--repetitions N] [--json FILE] [--list]\n"
      "  --quick          the guide's workloads, latency, one fan-out, metrics: 5 runs each (under a minute)\n"
      "  (default)        every dimension: fan-out, groups, sizes, batches, latency, metrics: 15 runs (a few minutes)\n"
      "  --full           also more sizes, batch sizes, fan-outs and groups: 25 runs each\n"
      "  --filter REGEX   only workloads whose name matches (ECMAScript regex, searched)\n"
      "  --repetitions N  runs per workload (the median is reported)\n"
      "  --json FILE      write every result and the machine description as JSON\n"
      "  --list           list the selected workloads and exit\n"
      "  --rabbitmq-uri URI  the RabbitMQ rows use this broker instead of starting a throw-away node\n"
      "  --no-rabbitmq-c  the RabbitMQ rows run kincir only (profiling)\n"
      "  --benchmark_*    passed to Google Benchmark\n"
      "Through scripts/dev bench also: --compare FILE (ratios to an earlier --json), --report DIR (SVG + Markdown).\n");
}

std::optional<Options> parse(int argc, char** argv, std::vector<char*>& benchmark_args) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> std::optional<std::string> {
      if (i + 1 >= argc) {
        fmt::print(stderr, "kincir-bench: {} needs a value\n", arg);
        return std::nullopt;
      }
      return std::string(argv[++i]);
    };
    if (arg == "--quick") {
      o.tier = Tier::quick;
      o.mode = "quick";
    } else if (arg == "--full") {
      o.tier = Tier::full;
      o.mode = "full";
    } else if (arg == "--filter") {
      auto v = value();
      if (!v) return std::nullopt;
      o.filter = *v;
    } else if (arg == "--json") {
      auto v = value();
      if (!v) return std::nullopt;
      o.json = *v;
    } else if (arg == "--repetitions") {
      auto v = value();
      if (!v) return std::nullopt;
      o.repetitions = static_cast<int>(std::strtoul(v->c_str(), nullptr, 10));
      if (o.repetitions < 1) {
        fmt::print(stderr, "kincir-bench: --repetitions needs a positive number\n");
        return std::nullopt;
      }
    } else if (arg == "--list") {
      o.list = true;
    } else if (arg == "--rabbitmq-uri") {
      auto v = value();
      if (!v) return std::nullopt;
      o.rabbitmq.uri = *v;
    } else if (arg == "--no-rabbitmq-c") {
      o.rabbitmq.peer = false;
    } else if (arg.starts_with("--benchmark_")) {
      benchmark_args.push_back(argv[i]);
    } else if (arg == "--help" || arg == "-h") {
      usage(stdout);
      std::exit(0);  // NOLINT(concurrency-mt-unsafe): single-threaded at this point
    } else {
      if (arg == "--compare" || arg == "--report")
        fmt::print(stderr, "kincir-bench: {} is handled by scripts/dev bench (scripts/bench/kincir_bench.py)\n", arg);
      else
        fmt::print(stderr, "kincir-bench: unknown option {}\n", arg);
      usage(stderr);
      return std::nullopt;
    }
  }
  if (o.repetitions == 0) o.repetitions = o.tier == Tier::quick ? 5 : (o.tier == Tier::full ? 25 : 15);
  return o;
}

// --- the machine ---------------------------------------------------------------------------------

std::string first_line_with(const char* path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(key)) {
      const auto colon = line.find_first_of(":=");
      std::string v = colon == std::string::npos ? line : line.substr(colon + 1);
      v.erase(0, v.find_first_not_of(" \t\""));
      while (!v.empty() && (v.back() == '"' || v.back() == ' ')) v.pop_back();
      return v;
    }
  }
  return {};
}

std::string load_average() {
  double load[3] = {kNaN, kNaN, kNaN};
  if (getloadavg(load, 3) != 3) return "unknown";
  return fmt::format("{:.2f} {:.2f} {:.2f}", load[0], load[1], load[2]);
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::string compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("g++ ") + __VERSION__;
#else
  return "unknown";
#endif
}

/// Key/value description of the machine and the build, in a stable order.
using Context = std::vector<std::pair<std::string, std::string>>;

/// `started` and `load_before` are taken before the workloads run.
Context machine(const benchmark::CPUInfo* cpu, const std::string& started, const std::string& load_before) {
  Context m;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  struct utsname u {};
  uname(&u);
  m.emplace_back("date", started);
  m.emplace_back("host", host);
  m.emplace_back("cpu", first_line_with("/proc/cpuinfo", "model name"));
  m.emplace_back("logical_cpus", std::to_string(std::thread::hardware_concurrency()));
  if (cpu != nullptr) {
    m.emplace_back("mhz", fmt::format("{:.0f}", cpu->cycles_per_second / 1e6));
    std::string caches;
    for (const auto& c : cpu->caches)
      caches += fmt::format("{}L{} {} KiB{}", caches.empty() ? "" : ", ", c.level, c.size / 1024,
                            c.type == "Instruction" ? " (i)" : (c.type == "Data" ? " (d)" : ""));
    m.emplace_back("caches", caches);
  }
  m.emplace_back("memory", first_line_with("/proc/meminfo", "MemTotal"));
  m.emplace_back("os", first_line_with("/etc/os-release", "PRETTY_NAME"));
  m.emplace_back("kernel", fmt::format("{} {} {}", u.sysname, u.release, u.machine));
  m.emplace_back("compiler", compiler());
  m.emplace_back("build_type", KINCIR_BENCH_BUILD_TYPE);
  m.emplace_back("kincir", KINCIR_VERSION_STRING);
  m.emplace_back("load_average_before", load_before);
  m.emplace_back("load_average_after", load_average());
  return m;
}

std::string lookup(const Context& c, const std::string& key) {
  for (const auto& [k, v] : c)
    if (k == key) return v;
  return {};
}

// --- results -------------------------------------------------------------------------------------

double median(std::vector<double> v) {
  std::erase_if(v, [](double x) { return std::isnan(x); });
  if (v.empty()) return kNaN;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/// Who else ran a row in the same repetitions: its counters' prefix and its label.
struct Peer {
  const char* name;
  const char* label;
};

/// One workload's repetitions.
struct Result {
  const Workload* workload = nullptr;
  bool failed = false;
  std::string error;
  std::vector<double> seconds;  ///< per repetition
  std::vector<double> rates;    ///< per repetition, in the workload's unit
  std::map<std::string, std::vector<double>> counters;

  [[nodiscard]] double counter(const std::string& name) const {
    const auto it = counters.find(name);
    return it == counters.end() ? kNaN : median(it->second);
  }
  [[nodiscard]] double counter_max(const std::string& name) const {
    const auto it = counters.find(name);
    if (it == counters.end() || it->second.empty()) return kNaN;
    return *std::max_element(it->second.begin(), it->second.end());
  }
  [[nodiscard]] double rate() const { return median(rates); }
  [[nodiscard]] double time() const { return median(seconds); }
  [[nodiscard]] double payload_rate() const {
    const double bytes = counter(kPayloadBytes);
    return std::isnan(bytes) ? kNaN : bytes / time();
  }

  /// A peer's runs of this row (the guide's workloads, the RabbitMQ rows), if it ran.
  [[nodiscard]] const std::vector<double>* peer_seconds(const Peer& peer) const {
    const auto it = counters.find(std::string(peer.name) + kPeerSecondsSuffix);
    return it == counters.end() || it->second.size() != seconds.size() ? nullptr : &it->second;
  }
  [[nodiscard]] double peer_time(const Peer& peer) const {
    const auto* s = peer_seconds(peer);
    return s == nullptr ? kNaN : median(*s);
  }
  [[nodiscard]] double peer_rate(const Peer& peer) const {
    const auto* s = peer_seconds(peer);
    if (s == nullptr) return kNaN;
    std::vector<double> rates;
    for (std::size_t i = 0; i < s->size(); ++i) rates.push_back(this->rates[i] * seconds[i] / (*s)[i]);
    return median(rates);
  }
  [[nodiscard]] double peer_peak(const Peer& peer) const {
    return counter_max(std::string(peer.name) + kPeerPeakSuffix);
  }
  /// Client CPU time per message (µs), kincir's or a peer's, where the row measures it.
  [[nodiscard]] double cpu() const { return counter(kCpuPerMessage); }
  [[nodiscard]] double peer_cpu(const Peer& peer) const { return counter(std::string(peer.name) + kCpuSuffix); }
  /// kincir's CPU per message divided by the peer's, the median of the per-repetition ratios.
  [[nodiscard]] double cpu_ratio(const Peer& peer) const {
    const auto ours = counters.find(kCpuPerMessage);
    const auto theirs = counters.find(std::string(peer.name) + kCpuSuffix);
    if (ours == counters.end() || theirs == counters.end() || ours->second.size() != theirs->second.size()) return kNaN;
    std::vector<double> r;
    for (std::size_t i = 0; i < ours->second.size(); ++i) r.push_back(ours->second[i] / theirs->second[i]);
    return median(r);
  }
  /// kincir's rate divided by the peer's, the median of the per-repetition ratios (both ran in
  /// the same repetition, so load hits both alike).
  [[nodiscard]] double ratio(const Peer& peer) const {
    const auto* s = peer_seconds(peer);
    if (s == nullptr) return kNaN;
    std::vector<double> r;
    for (std::size_t i = 0; i < s->size(); ++i) r.push_back((*s)[i] / seconds[i]);
    return median(r);
  }
};

const Peer kZeroMQ{impl_name(Impl::zeromq), impl_label(Impl::zeromq)};
const Peer kMutex{impl_name(Impl::mutex), impl_label(Impl::mutex)};
const Peer kRabbitMQC{kRabbitMQCName, kRabbitMQCLabel};
const Peer* const kPeers[] = {&kZeroMQ, &kMutex, &kRabbitMQC};

const char* unit_name(Unit u) {
  switch (u) {
    case Unit::messages: return "msg/s";
    case Unit::deliveries: return "deliveries/s";
    case Unit::none: return "";
  }
  return "";
}

// --- progress ------------------------------------------------------------------------------------

struct Progress {
  std::vector<Result>* results = nullptr;
  std::size_t current = 0;  // index into results
  std::size_t repetition = 0;
  int repetitions = 1;
  bool tty = false;
};

Progress& progress() {
  static Progress p;
  return p;
}

std::string si(double v) {
  if (std::isnan(v)) return "-";
  if (v >= 1e9) return fmt::format("{:.2f} G", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.2f} M", v / 1e6);
  if (v >= 1e3) return fmt::format("{:.1f} k", v / 1e3);
  return fmt::format("{:.0f}", v);
}

std::string duration(double seconds) {
  if (std::isnan(seconds)) return "-";
  if (seconds >= 1) return fmt::format("{:.2f} s", seconds);
  if (seconds >= 1e-3) return fmt::format("{:.2f} ms", seconds * 1e3);
  if (seconds >= 1e-6) return fmt::format("{:.1f} us", seconds * 1e6);
  return fmt::format("{:.0f} ns", seconds * 1e9);
}

std::string latency_text(double ns) { return std::isnan(ns) ? "-" : duration(ns * 1e-9); }

std::string memory_text(double bytes) {
  if (std::isnan(bytes)) return "-";
  if (bytes < 1e6) return fmt::format("+{:.0f} kB", bytes / 1e3);
  return fmt::format("+{:.1f} MB", bytes / 1e6);
}

std::string rate_text(const Result& r) {
  if (r.failed) return "failed";
  if (r.workload->unit == Unit::none) return "-";
  return si(r.rate()) + " " + unit_name(r.workload->unit);
}

std::string prefix(std::size_t index, std::size_t total, const std::string& name) {
  const int width = static_cast<int>(std::to_string(total).size());
  return fmt::format("[{:>{}}/{}] {:<26}", index + 1, width, total, name);
}

/// Reports each workload as it finishes (progress) and keeps its numbers.
class Reporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context& context) override {
    cpu_ = &context.cpu_info;
    return true;
  }

  void ReportRuns(const std::vector<Run>& runs) override {
    Progress& p = progress();
    // Google Benchmark reports the repetitions, then its own aggregates (ignored: the medians
    // are computed here, without the warm-up run).
    const bool repetitions =
        std::any_of(runs.begin(), runs.end(), [](const Run& run) { return run.run_type == Run::RT_Iteration; });
    if (!repetitions) return;
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Iteration) continue;
      if (run.repetition_index == 0) continue;  // the warm-up run
      Result& r = (*p.results)[static_cast<std::size_t>(run.family_index)];
      if (run.error_occurred) {
        r.failed = true;
        r.error = run.error_message;
        continue;
      }
      const double seconds = run.real_accumulated_time / static_cast<double>(std::max<std::int64_t>(run.iterations, 1));
      r.seconds.push_back(seconds);
      double count = kNaN;
      for (const auto& [name, counter] : run.counters) {
        r.counters[name].push_back(counter.value);
        if (name == (r.workload->unit == Unit::deliveries ? kDeliveries : kMessages)) count = counter.value;
      }
      r.rates.push_back(count / seconds);
    }
    const auto index = static_cast<std::size_t>(runs.front().family_index);
    const Result& r = (*p.results)[index];
    std::string summary;
    if (r.failed) {
      summary = "FAILED: " + r.error;
    } else if (r.workload->unit == Unit::none) {
      summary = fmt::format("p50 {}  p99 {}", latency_text(r.counter(kP50)), latency_text(r.counter(kP99)));
    } else {
      summary = fmt::format("{}  ({} per run)", rate_text(r), duration(r.time()));
    }
    fmt::print(stderr, "{}{}  {}\n", p.tty ? "\r\033[K" : " ",
               p.tty ? prefix(index, p.results->size(), r.workload->name) : "", summary);
  }

  [[nodiscard]] const benchmark::CPUInfo* cpu() const { return cpu_; }

 private:
  const benchmark::CPUInfo* cpu_ = nullptr;
};

// --- the table and the targets -------------------------------------------------------------------

std::string cpu_text(double us) { return std::isnan(us) ? "-" : fmt::format("{:.2f} us", us); }

std::string note(const Result& r) {
  if (r.failed) return {};
  if (!std::isnan(r.cpu())) {
    if (r.peer_seconds(kRabbitMQC) == nullptr) return fmt::format("CPU {}/msg", cpu_text(r.cpu()));
    return fmt::format("CPU {}/msg; vs rabbitmq-c: {:.2f}x msg/s, {:.2f}x CPU/msg", cpu_text(r.cpu()),
                       r.ratio(kRabbitMQC), r.cpu_ratio(kRabbitMQC));
  }
  const double overhead = r.counter(kOverhead);
  if (!std::isnan(overhead)) return fmt::format("{:+.1f} % vs plain (same runs)", overhead * 100);
  const double payload = r.payload_rate();
  if (!std::isnan(payload)) return fmt::format("{:.0f} MB/s of payload", payload / 1e6);
  if (r.workload->unit == Unit::none)
    return fmt::format("p99.9 {}, max {}", latency_text(r.counter(kP999)), latency_text(r.counter_max(kMax)));
  return {};
}

std::string ratio_text(double ratio) { return std::isnan(ratio) ? "" : fmt::format("{:.2f}x", ratio); }

void print_table(const std::vector<Result>& results, int repetitions, const std::string& rabbitmq_skipped) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"workload", "rate", "time/run", "p50", "p99", "peak mem", "vs ZeroMQ", "vs mutex", "note"});
  for (const auto& r : results) {
    rows.push_back({r.workload->name, rate_text(r), duration(r.time()), latency_text(r.counter(kP50)),
                    latency_text(r.counter(kP99)), memory_text(r.counter_max(kPeakBytes)), ratio_text(r.ratio(kZeroMQ)),
                    ratio_text(r.ratio(kMutex)), note(r)});
    for (const Peer* peer : kPeers) {
      if (r.failed || r.peer_seconds(*peer) == nullptr) continue;
      const double cpu = r.peer_cpu(*peer);
      rows.push_back({std::string("  ") + peer->name, si(r.peer_rate(*peer)) + " " + unit_name(r.workload->unit),
                      duration(r.peer_time(*peer)), "-", "-", memory_text(r.peer_peak(*peer)), "", "",
                      std::string(peer->label) + (std::isnan(cpu) ? "" : "; CPU " + cpu_text(cpu) + "/msg")});
    }
  }
  std::vector<std::size_t> width(rows.front().size(), 0);
  for (const auto& row : rows)
    for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  const auto line = [&](const std::vector<std::string>& row) {
    std::string out;
    for (std::size_t c = 0; c < row.size(); ++c) {
      if (c == 0 || c + 1 == row.size())
        out += fmt::format("{:<{}}", row[c], width[c]);
      else
        out += fmt::format("{:>{}}", row[c], width[c]);
      if (c + 1 != row.size()) out += "  ";
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    fmt::print("{}\n", out);
  };
  fmt::print("\n");
  line(rows.front());
  std::size_t total = 0;
  for (auto w : width) total += w + 2;
  fmt::print("{}\n", std::string(total - 2, '-'));
  for (std::size_t i = 1; i < rows.size(); ++i) line(rows[i]);
  fmt::print(
      "medians of {} runs; time/run = the timed part of one run; peak mem = heap growth during it "
      "(beyond the input messages)\n"
      "vs ZeroMQ, vs mutex = kincir's rate / the peer's, median of the per-run ratios (each run measures kincir and "
      "its peers, in rotating order); cold/ = once per fresh process{}\n",
      repetitions, impl_available(Impl::zeromq) ? "" : "; ZeroMQ: not built in (install libzmq3-dev cppzmq-dev)");
  const bool rabbitmq_rows =
      std::any_of(results.begin(), results.end(), [](const Result& r) { return r.workload->group == "rabbitmq"; });
  if (rabbitmq_rows)
    fmt::print(
        "rabbitmq/ = a local RabbitMQ node on loopback, kincir's adapter and rabbitmq-c in rotating order; CPU/msg = "
        "user + system time of this process (getrusage RUSAGE_SELF: every client thread, not the broker) / "
        "messages{}\n",
        rabbitmq_peer_enabled() ? ""
        : rabbitmq_c_built_in() ? "; rabbitmq-c: turned off (--no-rabbitmq-c)"
                                : "; rabbitmq-c: not built in (install librabbitmq-dev)");
  if (!rabbitmq_skipped.empty()) fmt::print("{}\n", rabbitmq_skipped);
}

/// One performance target and how this run did against it.
struct Target {
  std::string workload;
  std::string what;
  std::string reference;
  std::string target;
  double measured = kNaN;
  std::string measured_text;
  bool met = false;
};

const Result* find(const std::vector<Result>& results, const std::string& name) {
  for (const auto& r : results)
    if (r.workload->name == name && !r.failed) return &r;
  return nullptr;
}

std::string ratio_measured(double ratio, const Result& r, const Peer& peer) {
  return fmt::format("{:.2f}x ({} vs {})", ratio, si(r.rate()), si(r.peer_rate(peer)));
}

std::vector<Target> targets(const std::vector<Result>& results) {
  std::vector<Target> t;
  // The guide's workloads, as ratios to ZeroMQ measured in the same runs.
  const auto versus_zeromq = [&](const char* name, const char* what, double at_least) {
    const Result* r = find(results, name);
    if (r == nullptr) return;
    const double ratio = r->ratio(kZeroMQ);
    if (std::isnan(ratio)) return;
    t.push_back({name, what, "ZeroMQ inproc", fmt::format(">= {:g}x ZeroMQ", at_least), ratio,
                 ratio_measured(ratio, *r, kZeroMQ), ratio >= at_least});
  };
  versus_zeromq("cold/simple/publish", "simple publish, fresh process", 30);
  versus_zeromq("simple/publish", "simple publish, warm", 30);
  versus_zeromq("cold/simple/receive", "simple receive(), fresh process", 3);
  versus_zeromq("simple/receive", "simple receive(), warm", 3);
  versus_zeromq("cold/concurrent", "concurrent, fresh process, built in the loop", 2);
  versus_zeromq("concurrent", "concurrent, warm, prebuilt", 2);
  for (const char* name : {"cold/simple/publish", "simple/publish"}) {
    if (const Result* r = find(results, name)) {
      const double ours = r->counter_max(kPeakBytes);
      const double theirs = r->peer_peak(kZeroMQ);
      if (std::isnan(theirs) || theirs <= 0) continue;
      t.push_back({name, std::string("peak memory beyond the input, ") + (name[0] == 'c' ? "fresh process" : "warm"),
                   "ZeroMQ inproc", "<= 0.15x ZeroMQ", ours / theirs,
                   fmt::format("{:.2f}x ({} vs {})", ours / theirs, memory_text(ours), memory_text(theirs)),
                   ours / theirs <= 0.15});
    }
  }
  if (const Result* r = find(results, "simple/poll")) {
    t.push_back({"simple/poll", "simple, poll() in batches, warm", "-", ">= 60 M msg/s", r->rate(),
                 si(r->rate()) + " msg/s", r->rate() >= 60e6});
  }
  if (const Result* one = find(results, "fanout/1->1")) {
    for (const auto& r : results) {
      if (r.failed || r.workload->group != "group") continue;
      const double ratio = r.rate() / one->rate();
      t.push_back({r.workload->name, r.workload->name + " vs fanout/1->1", "-", ">= 0.8x 1->1", ratio,
                   fmt::format("{:.2f}x ({} vs {})", ratio, si(r.rate()), si(one->rate())), ratio >= 0.8});
    }
  }
  if (const Result* r = find(results, "latency/spinning")) {
    const double p50 = r->counter(kP50);
    const double p99 = r->counter(kP99);
    t.push_back({"latency/spinning", "publish->receive p50 / p99, spinning", "\"2-3 us\" claimed",
                 "<= 250 ns / <= 2 us", p50, latency_text(p50) + " / " + latency_text(p99), p50 <= 250 && p99 <= 2000});
  }
  if (const Result* r = find(results, "latency/sleeping")) {
    const double p50 = r->counter(kP50);
    const double p99 = r->counter(kP99);
    t.push_back({"latency/sleeping", "publish->receive p50 / p99, sleeping", "\"2-3 us\" claimed",
                 "<= 10 us / <= 50 us", p50, latency_text(p50) + " / " + latency_text(p99),
                 p50 <= 10'000 && p99 <= 50'000});
  }
  for (const auto& [name, what] : {std::pair{"metrics/simple", "metrics overhead, simple, every call timed"},
                                   std::pair{"metrics/simple-sampled", "metrics overhead, simple, 1 call in 64 timed"},
                                   std::pair{"metrics/concurrent", "metrics overhead, concurrent, every call timed"},
                                   std::pair{"metrics/concurrent-sampled", "metrics overhead, concurrent, 1 in 64"}}) {
    if (const Result* r = find(results, name)) {
      const double o = r->counter(kOverhead);
      t.push_back({name, what, "-", "<= 5 %", o, fmt::format("{:+.1f} %", o * 100), o <= 0.05});
    }
  }
  // RabbitMQ, against rabbitmq-c in the same runs: at least its rate at half its CPU per message.
  for (const auto& r : results) {
    if (r.failed || r.workload->group != "rabbitmq" || r.peer_seconds(kRabbitMQC) == nullptr) continue;
    const std::string what = r.workload->name.substr(std::string("rabbitmq/").size());
    const double rate = r.ratio(kRabbitMQC);
    t.push_back({r.workload->name, "RabbitMQ " + what + ": msg/s", "rabbitmq-c", ">= 1.0x rabbitmq-c", rate,
                 ratio_measured(rate, r, kRabbitMQC), rate >= 1.0});
    const double cpu = r.cpu_ratio(kRabbitMQC);
    t.push_back({r.workload->name, "RabbitMQ " + what + ": client CPU per message", "rabbitmq-c", "<= 0.5x rabbitmq-c",
                 cpu, fmt::format("{:.2f}x ({} vs {})", cpu, cpu_text(r.cpu()), cpu_text(r.peer_cpu(kRabbitMQC))),
                 cpu <= 0.5});
  }
  return t;
}

void print_targets(const std::vector<Target>& t) {
  if (t.empty()) return;
  fmt::print("\nAgainst the performance targets (ratios: kincir / the peer in the same runs):\n");
  std::size_t w0 = 0;
  std::size_t w1 = 0;
  for (const auto& x : t) {
    w0 = std::max(w0, x.what.size());
    w1 = std::max(w1, x.measured_text.size());
  }
  for (const auto& x : t) {
    fmt::print("  {:<{}}  {:>{}}  target {:<18} {}\n", x.what, w0, x.measured_text, w1, x.target,
               x.met ? "met" : "MISSED");
  }
}

// --- JSON ----------------------------------------------------------------------------------------

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        else
          out += c;
    }
  }
  return out + "\"";
}

std::string number(double v) { return std::isnan(v) ? "null" : fmt::format("{:.6g}", v); }

std::string numbers(const std::vector<double>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i == 0 ? "" : ", ") + number(v[i]);
  return out + "]";
}

bool write_json(const std::string& path, const Options& o, const Context& context, const std::vector<Result>& results,
                const std::vector<Target>& t) {
  std::string j = "{\n  \"format\": \"kincir-bench/1\",\n  \"context\": {\n";
  for (std::size_t i = 0; i < context.size(); ++i)
    j += fmt::format("    {}: {}{}\n", quoted(context[i].first), quoted(context[i].second),
                     i + 1 == context.size() ? "" : ",");
  j += fmt::format("  }},\n  \"mode\": {},\n  \"filter\": {},\n  \"repetitions\": {},\n  \"results\": [\n",
                   quoted(o.mode), quoted(o.filter), o.repetitions);
  for (std::size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    const Workload& w = *r.workload;
    j += "    {";
    j += fmt::format("\"name\": {}, \"group\": {}, \"title\": {}, \"unit\": {}, \"message_size\": {}, ", quoted(w.name),
                     quoted(w.group), quoted(w.title), quoted(unit_name(w.unit)), w.message_size);
    j += fmt::format("\"failed\": {}, \"error\": {}, ", r.failed ? "true" : "false", quoted(r.error));
    j += fmt::format("\"rate\": {}, \"time_s\": {}, \"messages\": {}, \"deliveries\": {}, ",
                     number(w.unit == Unit::none ? kNaN : r.rate()), number(r.time()), number(r.counter(kMessages)),
                     number(r.counter(kDeliveries)));
    j += fmt::format("\"p50_ns\": {}, \"p99_ns\": {}, \"p999_ns\": {}, \"max_ns\": {}, ", number(r.counter(kP50)),
                     number(r.counter(kP99)), number(r.counter(kP999)), number(r.counter_max(kMax)));
    j += fmt::format("\"peak_bytes\": {}, \"payload_bytes_per_s\": {}, \"overhead\": {}, ",
                     number(r.counter_max(kPeakBytes)), number(r.payload_rate()), number(r.counter(kOverhead)));
    j += fmt::format("\"ratio_zeromq\": {}, \"ratio_mutex\": {}, ", number(r.ratio(kZeroMQ)), number(r.ratio(kMutex)));
    j += fmt::format("\"cpu_us_per_msg\": {}, \"ratio_rabbitmq_c\": {}, \"cpu_ratio_rabbitmq_c\": {}, ",
                     number(r.cpu()), number(r.ratio(kRabbitMQC)), number(r.cpu_ratio(kRabbitMQC)));
    j += fmt::format("\"runs\": {{\"time_s\": {}, \"rate\": {}}}}}", numbers(r.seconds), numbers(r.rates));
    // The peers measured in the same runs: rows of their own, named "<row> [<peer>]".
    for (const Peer* peer_ptr : kPeers) {
      const Peer& peer = *peer_ptr;
      const std::vector<double>* peer_s = r.failed ? nullptr : r.peer_seconds(peer);
      if (peer_s == nullptr) continue;
      std::vector<double> rates;
      for (std::size_t k = 0; k < peer_s->size(); ++k) rates.push_back(r.rates[k] * r.seconds[k] / (*peer_s)[k]);
      j += ",\n    {";
      j += fmt::format(
          "\"name\": {}, \"group\": {}, \"title\": {}, \"unit\": {}, \"message_size\": {}, \"peer\": {}, \"of\": {}, ",
          quoted(w.name + " [" + peer.name + "]"), quoted("peer:" + w.group), quoted(peer.label),
          quoted(unit_name(w.unit)), w.message_size, quoted(peer.name), quoted(w.name));
      j += fmt::format(
          "\"failed\": false, \"error\": \"\", \"rate\": {}, \"time_s\": {}, \"messages\": {}, \"deliveries\": {}, ",
          number(r.peer_rate(peer)), number(r.peer_time(peer)), number(r.counter(kMessages)),
          number(r.counter(kDeliveries)));
      j += fmt::format(
          "\"p50_ns\": null, \"p99_ns\": null, \"p999_ns\": null, \"max_ns\": null, \"peak_bytes\": {}, "
          "\"payload_bytes_per_s\": null, \"overhead\": null, \"cpu_us_per_msg\": {}, ",
          number(r.peer_peak(peer)), number(r.peer_cpu(peer)));
      j += fmt::format("\"runs\": {{\"time_s\": {}, \"rate\": {}}}}}", numbers(*peer_s), numbers(rates));
    }
    j += i + 1 == results.size() ? "\n" : ",\n";
  }
  j += "  ],\n  \"targets\": [\n";
  for (std::size_t i = 0; i < t.size(); ++i) {
    j += fmt::format(
        "    {{\"workload\": {}, \"what\": {}, \"measured\": {}, \"measured_text\": {}, \"target\": {}, "
        "\"reference\": {}, \"met\": {}}}{}\n",
        quoted(t[i].workload), quoted(t[i].what), number(t[i].measured), quoted(t[i].measured_text),
        quoted(t[i].target), quoted(t[i].reference), t[i].met ? "true" : "false", i + 1 == t.size() ? "" : ",");
  }
  j += "  ]\n}\n";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << j;
  out.close();
  return static_cast<bool>(out);
}

}  // namespace

std::size_t on_repetition_start() {
  Progress& p = progress();
  const std::size_t rep = p.repetition++;
  const Result& r = (*p.results)[p.current];
  const std::string head = prefix(p.current, p.results->size(), r.workload->name);
  if (p.tty) {
    if (rep == 0)
      fmt::print(stderr, "\r\033[K{}  warm-up", head);
    else
      fmt::print(stderr, "\r\033[K{}  run {}/{}", head, rep, p.repetitions);
  } else if (rep == 0) {
    fmt::print(stderr, "{} warm-up + {} runs ", head, p.repetitions);
  } else {
    fmt::print(stderr, ".");
  }
  std::fflush(stderr);
  return rep;
}

}  // namespace kincir_bench

int main(int argc, char** argv) {
  using namespace kincir_bench;
  // `--child WORKLOAD IMPL`: one run of a guide workload in this fresh process (the cold rows
  // start one per run); prints "publish_s receive_s seconds peak_bytes".
  if (argc == 4 && std::string_view(argv[1]) == "--child") {
    try {
      for (const Impl impl : kImpls) {
        if (std::string_view(argv[3]) != impl_name(impl)) continue;
        const GuideResult r = guide_run(argv[2], impl);
        fmt::print("{:.9g} {:.9g} {:.9g} {:.9g}\n", r.publish_s, r.receive_s, r.seconds, r.peak_bytes);
        return 0;
      }
      fmt::print(stderr, "kincir-bench --child: unknown implementation {}\n", argv[3]);
    } catch (const std::exception& e) {
      fmt::print(stderr, "kincir-bench --child {} {}: {}\n", argv[2], argv[3], e.what());
    }
    return 1;
  }
  std::vector<char*> benchmark_args{argv[0]};
  const std::optional<Options> parsed = parse(argc, argv, benchmark_args);
  if (!parsed) return 2;
  const Options& o = *parsed;

  std::optional<std::regex> filter;
  try {
    if (!o.filter.empty()) filter.emplace(o.filter);
  } catch (const std::regex_error& e) {
    fmt::print(stderr, "kincir-bench: bad --filter regex: {}\n", e.what());
    return 2;
  }

  const std::string started = utc_now();
  const std::string load_before = load_average();
  set_rabbitmq_options(o.rabbitmq);
  static const std::vector<Workload> all = [] {
    std::vector<Workload> w = make_workloads();
    for (auto& x : make_rabbitmq_workloads()) w.push_back(std::move(x));
    return w;
  }();
  std::vector<Result> results;
  for (const auto& w : all) {
    if (static_cast<int>(w.tier) > static_cast<int>(o.tier)) continue;
    if (filter && !std::regex_search(w.name, *filter)) continue;
    results.push_back(Result{&w, false, {}, {}, {}, {}});
  }
  if (o.list) {
    for (const auto& r : results) fmt::print("{:<28} {}\n", r.workload->name, r.workload->title);
    return 0;
  }
  if (results.empty()) {
    fmt::print(stderr, "kincir-bench: no workload matches --filter {}\n", o.filter);
    return 2;
  }
  // The RabbitMQ rows need a broker: without one they are left out, said in one line.
  std::string rabbitmq_skipped;
  if (std::any_of(results.begin(), results.end(), [](const Result& r) { return r.workload->group == "rabbitmq"; })) {
    fmt::print(stderr, "kincir-bench: starting a RabbitMQ node for the rabbitmq/ rows\n");
    rabbitmq_skipped = rabbitmq_start();
    if (!rabbitmq_skipped.empty()) {
      fmt::print(stderr, "{}\n", rabbitmq_skipped);
      std::erase_if(results, [](const Result& r) { return r.workload->group == "rabbitmq"; });
      if (results.empty()) return 0;
    }
  }

  int benchmark_argc = static_cast<int>(benchmark_args.size());
  benchmark::Initialize(&benchmark_argc, benchmark_args.data());
  Progress& p = progress();
  p.results = &results;
  p.repetitions = o.repetitions;
  p.tty = isatty(fileno(stderr)) != 0;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const Workload* w = results[i].workload;
    benchmark::RegisterBenchmark(w->name.c_str(),
                                 [i, w](benchmark::State& state) {
                                   Progress& progress_state = progress();
                                   if (progress_state.current != i || progress_state.results == nullptr) {
                                     progress_state.current = i;
                                     progress_state.repetition = 0;
                                   }
                                   try {
                                     w->run(state);
                                   } catch (const std::exception& e) {
                                     state.SkipWithError(e.what());
                                   }
                                 })
        ->Iterations(1)
        ->Repetitions(o.repetitions + 1)  // the first is a warm-up, not counted
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }

  fmt::print(stderr, "kincir-bench {}: {} workloads, {} runs each ({} set)\n", KINCIR_VERSION_STRING, results.size(),
             o.repetitions, o.mode);
  Reporter reporter;
  p.current = static_cast<std::size_t>(-1);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  rabbitmq_stop();

  const Context context = machine(reporter.cpu(), started, load_before);
  print_table(results, o.repetitions, rabbitmq_skipped);
  const std::vector<Target> t = targets(results);
  print_targets(t);
  fmt::print("\n{}, {} logical CPUs, {}; {}, {} build; load average before {}, after {}\n", lookup(context, "cpu"),
             lookup(context, "logical_cpus"), lookup(context, "kernel"), lookup(context, "compiler"),
             lookup(context, "build_type"), load_before, lookup(context, "load_average_after"));
  if (!o.json.empty()) {
    if (!write_json(o.json, o, context, results, t)) {
      fmt::print(stderr, "kincir-bench: cannot write {}\n", o.json);
      return 1;
    }
    fmt::print(stderr, "wrote {}\n", o.json);
  }
  const bool any_failed = std::any_of(results.begin(), results.end(), [](const Result& r) { return r.failed; });
  return any_failed ? 1 : 0;
}
