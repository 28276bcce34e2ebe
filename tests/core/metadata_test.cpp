#include <kincir/core/metadata.hpp>

#include <string>  // values
#include <vector>  // iteration order

#include "support/catch.hpp"

using kincir::Metadata;

TEST_CASE("Metadata sets, gets, replaces and erases", "[metadata]") {
  Metadata m;
  CHECK(m.empty());
  m.set("id", "1");
  m.set("kind", "test");
  CHECK(m.size() == 2);
  CHECK(m.get("id") == "1");
  CHECK(m.contains("kind"));
  CHECK_FALSE(m.get("missing").has_value());
  m.set("id", "2");
  CHECK(m.size() == 2);
  CHECK(m.get("id") == "2");
  CHECK(m.erase("id"));
  CHECK_FALSE(m.erase("id"));
  CHECK_FALSE(m.contains("id"));
  m.clear();
  CHECK(m.empty());
}

TEST_CASE("Metadata iterates in key order and compares by content", "[metadata]") {
  Metadata a;
  a.set("zeta", "z");
  a.set("alpha", "a");
  a.set("mid", "m");
  std::vector<std::string> keys;
  for (const auto& [k, v] : a) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{"alpha", "mid", "zeta"});

  const Metadata b{{"mid", "m"}, {"zeta", "z"}, {"alpha", "a"}};
  CHECK(a == b);
  Metadata c = b;
  c.set("mid", "changed");
  CHECK_FALSE(a == c);
}

TEST_CASE("Metadata keys that are prefixes of each other stay distinct", "[metadata]") {
  Metadata m;
  m.set("ab", "2");
  m.set("a", "1");
  m.set("abc", "3");
  CHECK(m.get("a") == "1");
  CHECK(m.get("ab") == "2");
  CHECK(m.get("abc") == "3");
  CHECK_FALSE(m.contains(""));
}
