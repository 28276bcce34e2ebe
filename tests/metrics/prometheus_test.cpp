#include <kincir/metrics/prometheus.hpp>

#include <kincir/metrics/collector.hpp>

#include <chrono>   // durations
#include <cmath>    // std::isnan
#include <cstdlib>  // std::strtod
#include <map>      // parsed families
#include <set>      // families already closed
#include <sstream>  // line splitting
#include <string>   // lines
#include <utility>  // std::pair
#include <vector>   // samples

#include "support/catch.hpp"

using std::chrono::nanoseconds;

namespace {

// A parser for the Prometheus text format 0.0.4 that rejects what the format forbids; it
// fails the test on the first violation.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Family {
  std::string help;
  std::string type;
  std::vector<Sample> samples;
};

bool is_name(const std::string& s) { return kincir::detail::metrics::is_metric_name(s); }

double parse_value(const std::string& text) {
  if (text == "NaN") return std::nan("");
  if (text == "+Inf") return HUGE_VAL;
  if (text == "-Inf") return -HUGE_VAL;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  REQUIRE(!text.empty());
  REQUIRE(end == text.c_str() + text.size());
  return v;
}

std::string unescape_label(const std::string& line, std::size_t& pos) {
  std::string out;
  REQUIRE(line.at(pos) == '"');
  for (++pos; pos < line.size() && line[pos] != '"'; ++pos) {
    if (line[pos] == '\\') {
      ++pos;
      REQUIRE(pos < line.size());
      const char c = line[pos];
      REQUIRE((c == '\\' || c == '"' || c == 'n'));
      out += c == 'n' ? '\n' : c;
    } else {
      REQUIRE(line[pos] != '\n');
      out += line[pos];
    }
  }
  REQUIRE(pos < line.size());
  ++pos;  // closing quote
  return out;
}

// The family a sample belongs to: its own name, or for summaries the base of _sum/_count.
std::string family_of(const std::map<std::string, Family>& families, const std::string& name) {
  if (families.count(name) != 0) return name;
  for (const char* suffix : {"_sum", "_count"}) {
    const std::string s(suffix);
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      std::string base = name.substr(0, name.size() - s.size());
      auto it = families.find(base);
      if (it != families.end() && it->second.type == "summary") return base;
    }
  }
  FAIL("sample " << name << " has no TYPE line before it");
  return {};
}

std::map<std::string, Family> parse(const std::string& text) {
  REQUIRE(!text.empty());
  REQUIRE(text.back() == '\n');
  std::map<std::string, Family> families;
  std::set<std::string> closed;  // families whose sample group has ended
  std::string current;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    INFO(line);
    REQUIRE(!line.empty());
    if (line.rfind("# ", 0) == 0) {
      std::istringstream words(line.substr(2));
      std::string keyword;
      std::string name;
      words >> keyword >> name;
      REQUIRE(is_name(name));
      std::string rest;
      std::getline(words, rest);
      if (!rest.empty() && rest[0] == ' ') rest.erase(0, 1);
      Family& f = families[name];
      REQUIRE(f.samples.empty());  // HELP and TYPE come before the family's samples
      if (keyword == "HELP") {
        REQUIRE(f.help.empty());
        f.help = rest;
      } else if (keyword == "TYPE") {
        REQUIRE(f.type.empty());
        REQUIRE(
            (rest == "counter" || rest == "gauge" || rest == "summary" || rest == "histogram" || rest == "untyped"));
        f.type = rest;
      } else {
        FAIL("unknown comment keyword " << keyword);
      }
      continue;
    }
    Sample s;
    std::size_t pos = 0;
    while (pos < line.size() && line[pos] != '{' && line[pos] != ' ') ++pos;
    s.name = line.substr(0, pos);
    REQUIRE(is_name(s.name));
    if (line.at(pos) == '{') {
      ++pos;
      while (line.at(pos) != '}') {
        const std::size_t eq = line.find('=', pos);
        REQUIRE(eq != std::string::npos);
        const std::string label = line.substr(pos, eq - pos);
        REQUIRE(is_name(label));
        REQUIRE(label.find(':') == std::string::npos);
        pos = eq + 1;
        REQUIRE(s.labels.emplace(label, unescape_label(line, pos)).second);
        if (line.at(pos) == ',') ++pos;
      }
      ++pos;
    }
    REQUIRE(line.at(pos) == ' ');
    s.value = parse_value(line.substr(pos + 1));
    const std::string family = family_of(families, s.name);
    if (family != current) {
      REQUIRE(closed.count(family) == 0);  // a family's samples are contiguous
      if (!current.empty()) closed.insert(current);
      current = family;
    }
    families[family].samples.push_back(std::move(s));
  }
  for (const auto& [name, f] : families) {
    INFO(name);
    CHECK(!f.type.empty());
    CHECK(!f.help.empty());
    CHECK(!f.samples.empty());
    if (f.type == "counter") {
      CHECK(name.size() > 6);
      CHECK(name.compare(name.size() - 6, 6, "_total") == 0);
    }
    if (f.type == "summary") {
      int quantiles = 0;
      int sums = 0;
      int counts = 0;
      for (const auto& s : f.samples) {
        if (s.name == name) {
          REQUIRE(s.labels.count("quantile") == 1);
          const double q = parse_value(s.labels.at("quantile"));
          CHECK((q >= 0.0 && q <= 1.0));
          ++quantiles;
        }
        sums += s.name == name + "_sum";
        counts += s.name == name + "_count";
      }
      CHECK(quantiles > 0);
      CHECK(sums == 1);
      CHECK(counts == 1);
    }
  }
  return families;
}

double value(const std::map<std::string, Family>& families, const std::string& family, const std::string& sample,
             const std::map<std::string, std::string>& labels = {}) {
  INFO(sample);
  const auto& f = families.at(family);
  for (const auto& s : f.samples)
    if (s.name == sample && s.labels == labels) return s.value;
  FAIL("no sample " << sample);
  return 0;
}

}  // namespace

TEST_CASE("the exposition parses back to the snapshot's values", "[prometheus]") {
  kincir::MetricsCollector collector;
  for (int i = 1; i <= 1000; ++i) collector.record_publish(std::chrono::microseconds(i));
  collector.record_receive(std::chrono::milliseconds(2), 3);
  collector.record_error(7);
  collector.counter("retries", "Publish retries.").add(11);
  collector.counter("cache_hits_total", "Hits.\nSecond line \\ with backslash").add(2);
  collector.histogram("handler", "Handler latency.").record(std::chrono::microseconds(40));
  collector.histogram("idle");  // never recorded: NaN quantiles
  collector.observe("memory \"main\"\\", [] { return kincir::BrokerStatsSample{5, 9, 1, 0, 4}; });

  const kincir::PerformanceMetrics m = collector.snapshot();
  const std::string text = kincir::to_prometheus(m, "app");
  INFO(text);
  const auto families = parse(text);

  CHECK(value(families, "app_messages_published_total", "app_messages_published_total") == 1000);
  CHECK(value(families, "app_messages_received_total", "app_messages_received_total") == 3);
  CHECK(value(families, "app_errors_total", "app_errors_total") == 7);
  CHECK(value(families, "app_publish_calls_total", "app_publish_calls_total") == 1000);
  CHECK(families.at("app_publish_latency_seconds").type == "summary");
  CHECK(value(families, "app_publish_latency_seconds", "app_publish_latency_seconds", {{"quantile", "0.99"}}) ==
        Approx(std::chrono::duration<double>(m.publish_latency.p99).count()));
  CHECK(value(families, "app_publish_latency_seconds", "app_publish_latency_seconds", {{"quantile", "0.5"}}) ==
        Approx(500e-6).epsilon(kincir::LatencyHistogram::kMaxRelativeError));
  CHECK(value(families, "app_publish_latency_seconds", "app_publish_latency_seconds_sum") == Approx(0.5005));
  CHECK(value(families, "app_publish_latency_seconds", "app_publish_latency_seconds_count") == 1000);
  CHECK(value(families, "app_receive_latency_max_seconds", "app_receive_latency_max_seconds") == Approx(0.002));
  CHECK(value(families, "app_retries_total", "app_retries_total") == 11);
  CHECK(value(families, "app_cache_hits_total", "app_cache_hits_total") == 2);
  CHECK(families.at("app_cache_hits_total").help == "Hits.\\nSecond line \\\\ with backslash");
  CHECK(value(families, "app_handler_seconds", "app_handler_seconds_count") == 1);
  CHECK(std::isnan(value(families, "app_idle_seconds", "app_idle_seconds", {{"quantile", "0.5"}})));
  const std::map<std::string, std::string> source{{"source", "memory \"main\"\\"}};
  CHECK(value(families, "app_broker_published_total", "app_broker_published_total", source) == 5);
  CHECK(value(families, "app_broker_delivered_total", "app_broker_delivered_total", source) == 9);
  CHECK(value(families, "app_broker_dropped_total", "app_broker_dropped_total", source) == 1);
  CHECK(families.at("app_broker_queue_depth").type == "gauge");
  CHECK(value(families, "app_broker_queue_depth", "app_broker_queue_depth", source) == 4);
  CHECK(value(families, "app_uptime_seconds", "app_uptime_seconds") >= 0.0);
}

TEST_CASE("an empty collector and an odd prefix still give valid exposition", "[prometheus]") {
  const kincir::MetricsCollector collector;
  const std::string text = collector.to_prometheus("my-app.v2");
  INFO(text);
  const auto families = parse(text);
  CHECK(families.count("my_app_v2_messages_published_total") == 1);
  CHECK(families.count("my_app_v2_broker_published_total") == 0);  // no source observed
  CHECK(std::isnan(value(families, "my_app_v2_receive_latency_seconds", "my_app_v2_receive_latency_seconds",
                         {{"quantile", "0.9"}})));
  CHECK(value(families, "my_app_v2_receive_latency_seconds", "my_app_v2_receive_latency_seconds_count") == 0);
}
