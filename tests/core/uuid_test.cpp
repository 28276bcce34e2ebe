#include <kincir/core/uuid.hpp>
#if KINCIR_HAS_FMT
#include <kincir/fmt.hpp>  // fmt::formatter<kincir::Uuid>
#endif

#include <algorithm>      // std::sort, std::adjacent_find
#include <cctype>         // std::toupper
#include <sstream>        // operator<<
#include <string>         // mutated texts
#include <thread>         // generation on two threads
#include <unordered_set>  // std::hash
#include <vector>         // collected ids

#include "support/catch.hpp"

using kincir::Uuid;

TEST_CASE("new_v4 sets the version and variant bits", "[uuid]") {
  for (int i = 0; i < 1000; ++i) {
    const Uuid id = Uuid::new_v4();
    CHECK(id.version() == 4);
    CHECK((id.bytes()[8] & 0xC0) == 0x80);
    CHECK_FALSE(id.is_nil());
  }
}

TEST_CASE("one million ids from two threads are unique", "[uuid][concurrency]") {
  constexpr std::size_t kPerThread = 500'000;
  std::vector<Uuid> a(kPerThread);
  std::vector<Uuid> b(kPerThread);
  std::thread ta([&] {
    for (auto& id : a) id = Uuid::new_v4();
  });
  std::thread tb([&] {
    for (auto& id : b) id = Uuid::new_v4();
  });
  ta.join();
  tb.join();
  a.insert(a.end(), b.begin(), b.end());
  std::sort(a.begin(), a.end());
  CHECK(std::adjacent_find(a.begin(), a.end()) == a.end());
}

TEST_CASE("to_string and parse round-trip", "[uuid]") {
  for (int i = 0; i < 100; ++i) {
    const Uuid id = Uuid::new_v4();
    const std::string text = id.to_string();
    REQUIRE(text.size() == 36);
    CHECK(text[8] == '-');
    CHECK(text[13] == '-');
    CHECK(text[14] == '4');
    CHECK(Uuid::parse(text) == id);
  }
  const Uuid known = Uuid::parse("123E4567-e89b-12d3-A456-426614174000");
  CHECK(known.to_string() == "123e4567-e89b-12d3-a456-426614174000");
  CHECK(known.version() == 1);
  std::ostringstream os;
  os << known;
  CHECK(os.str() == "123e4567-e89b-12d3-a456-426614174000");
  CHECK(Uuid{}.to_string() == "00000000-0000-0000-0000-000000000000");
}

TEST_CASE("parse rejects malformed strings", "[uuid]") {
  const char* bad[] = {
      "",
      "123e4567-e89b-12d3-a456-42661417400",    // short
      "123e4567-e89b-12d3-a456-4266141740000",  // long
      "123e4567e89b-12d3-a456-4266141740000",   // dash missing
      "123e4567-e89b-12d3-a456_426614174000",   // wrong separator
      "g23e4567-e89b-12d3-a456-426614174000",   // not hex
      "123e4567-e89b-12d3-a456-42661417400 ",   // trailing space
  };
  for (const char* text : bad) {
    std::error_code ec;
    const Uuid id = Uuid::parse(text, ec);
    CHECK(ec == kincir::errc::invalid_uuid);
    CHECK(id.is_nil());
    CHECK_THROWS_AS(Uuid::parse(text), kincir::Error);
  }
}

TEST_CASE("parse checks every character, in either case", "[uuid]") {
  const std::string good = "123e4567-e89b-12d3-a456-426614174000";
  const Uuid expected = Uuid::parse(good);
  std::string upper = good;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  CHECK(Uuid::parse(upper) == expected);
  for (std::size_t pos = 0; pos < good.size(); ++pos) {
    const bool dash = pos == 8 || pos == 13 || pos == 18 || pos == 23;
    const std::string wrong =
        dash ? std::string{'0', 'a', '_'} : std::string{'g', '-', '/', ':', '@', '`', 'G', '\xe9', '\0'};
    for (const char c : wrong) {
      std::string text = good;
      text[pos] = c;
      std::error_code ec;
      const Uuid id = Uuid::parse(text, ec);
      INFO("position " << pos << ", character " << static_cast<int>(static_cast<unsigned char>(c)));
      CHECK(ec == kincir::errc::invalid_uuid);
      CHECK(id.is_nil());
    }
  }
}

TEST_CASE("Uuid compares, orders and hashes", "[uuid]") {
  const Uuid a = Uuid::parse("00000000-0000-0000-0000-000000000001");
  const Uuid b = Uuid::parse("00000000-0000-0000-0000-000000000002");
  CHECK(a < b);
  CHECK(a != b);
  CHECK(a == Uuid::parse("00000000-0000-0000-0000-000000000001"));
  std::unordered_set<Uuid> set;
  for (int i = 0; i < 10'000; ++i) set.insert(Uuid::new_v4());
  CHECK(set.size() == 10'000);
  CHECK(std::hash<Uuid>{}(a) != std::hash<Uuid>{}(b));
}

#if KINCIR_HAS_FMT
TEST_CASE("Uuid has a fmt formatter", "[uuid][fmt]") {
  const Uuid id = Uuid::parse("123e4567-e89b-12d3-a456-426614174000");
  CHECK(fmt::format("{}", id) == "123e4567-e89b-12d3-a456-426614174000");
  CHECK(fmt::format("[{:>38}]", id) == "[  123e4567-e89b-12d3-a456-426614174000]");
}
#endif
