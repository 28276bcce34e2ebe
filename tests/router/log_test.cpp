// The logger interface, the no-op default, the {fmt} line logger, and the router reporting
// through it.
#include <kincir/log.hpp>
#include <kincir/log/fmt_logger.hpp>

#include <kincir/router/signals.hpp>

#include "router/support.hpp"
#include "support/catch.hpp"

#include <chrono>   // bounded waits
#include <csignal>  // std::raise
#include <cstdint>  // field values
#include <cstdio>   // std::tmpfile
#include <string>   // captured text
#include <variant>  // field values

using kincir::LogField;
using kincir::LogLevel;

TEST_CASE("log: fields keep their types; the null logger writes nothing", "[router][log]") {
  const LogField a("n", 3);
  const LogField b("u", std::uint64_t{4});
  const LogField c("s", "text");
  const LogField d("b", true);
  const LogField e("d", 1.5);
  CHECK(std::get<std::int64_t>(a.value) == 3);
  CHECK(std::get<std::uint64_t>(b.value) == 4);
  CHECK(std::get<std::string_view>(c.value) == "text");
  CHECK(std::get<bool>(d.value));
  CHECK(std::get<double>(e.value) == 1.5);
  auto& null = kincir::null_logger();
  CHECK_FALSE(null.enabled(LogLevel::error));
  null.log(LogLevel::error, "nothing", {{"k", 1}});
  CHECK(kincir::to_string(LogLevel::warn) == "warn");
}

#if KINCIR_HAS_FMT
TEST_CASE("log: FmtLogger writes one line per record with its level and fields", "[router][log]") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  kincir::FmtLogger logger(LogLevel::info, f);
  CHECK_FALSE(logger.enabled(LogLevel::debug));
  CHECK(logger.enabled(LogLevel::warn));
  logger.log(LogLevel::debug, "hidden");
  logger.log(LogLevel::warn, "retrying",
             {{"handler", "orders"}, {"attempt", 2}, {"reason", "a = \"b\""}, {"ok", false}});
  std::rewind(f);
  std::string text;
  char buf[256];
  while (std::fgets(buf, sizeof buf, f) != nullptr) text += buf;
  std::fclose(f);
  CHECK(text.find("hidden") == std::string::npos);
  CHECK(text.find("Z warn  retrying handler=orders attempt=2 reason=\"a = \\\"b\\\"\" ok=false\n") !=
        std::string::npos);
  CHECK(text.size() > 24);
  CHECK(text[4] == '-');
  CHECK(text[10] == 'T');
}
#endif

TEST_CASE("SignalStop: SIGINT requests the stop instead of ending the process", "[router][concurrency]") {
  kincir::SignalStop signals;
  CHECK_THROWS(kincir::SignalStop());
  CHECK_FALSE(signals.token().stop_requested());
  std::raise(SIGINT);
  REQUIRE(kincir::test::eventually([&] { return signals.token().stop_requested(); }));
  CHECK(signals.signal() == SIGINT);
}
