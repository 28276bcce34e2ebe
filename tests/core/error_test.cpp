#include <kincir/core/error.hpp>

#include <string>  // messages

#include "support/catch.hpp"

TEST_CASE("kincir::errc converts to std::error_code in its own category", "[error]") {
  const std::error_code ec = kincir::errc::queue_full;
  CHECK(ec.value() == 1);
  CHECK(std::string(ec.category().name()) == "kincir");
  CHECK(ec.message() == "queue full");
  CHECK(ec == kincir::errc::queue_full);
  CHECK(ec != kincir::errc::timeout);
  CHECK(ec != std::errc::timed_out);
}

TEST_CASE("every errc value has its own message", "[error]") {
  for (int v = 1; v <= static_cast<int>(kincir::errc::handler_exception); ++v) {
    if (v == 12) continue;  // retired (was operation_aborted): values are never reused
    const std::error_code ec(v, kincir::error_category());
    CHECK(ec.message() != "unknown kincir error");
  }
  CHECK(std::error_code(12, kincir::error_category()).message() == "unknown kincir error");
  CHECK(std::error_code(999, kincir::error_category()).message() == "unknown kincir error");
}

TEST_CASE("throw_error throws kincir::Error carrying the code", "[error]") {
  try {
    kincir::throw_error(kincir::errc::invalid_topic, "publish");
    FAIL("no exception");
  } catch (const kincir::Error& e) {
    CHECK(e.code() == kincir::errc::invalid_topic);
    CHECK(std::string(e.what()).find("publish") != std::string::npos);
  }
  CHECK_NOTHROW(kincir::throw_if(std::error_code{}, "nothing"));
  CHECK_THROWS_AS(kincir::throw_if(kincir::errc::timeout, "x"), std::system_error);
}
