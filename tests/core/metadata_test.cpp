#include <kincir/core/metadata.hpp>

#include <string>   // values
#include <utility>  // std::move
#include <vector>   // iteration order

#include "support/alloc_counter.hpp"
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
  for (const auto& [k, v] : a) keys.emplace_back(k);
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

TEST_CASE("Metadata of a typical message lives inline: no allocation, nothing to free", "[metadata]") {
  const kincir::test::AllocScope scope;
  {
    Metadata m;
    m.set("id", "99999");
    m.set("kind", "test");
    CHECK_FALSE(m.on_heap());
    Metadata copy = m;
    Metadata moved = std::move(m);
    CHECK(copy == moved);
    CHECK(moved.get("id") == "99999");
  }
  CHECK(scope.allocations() == 0);
}

TEST_CASE("Metadata beyond the inline bytes moves to one heap buffer and back to nothing", "[metadata]") {
  const std::string long_value(300, 'v');  // a two-byte length
  Metadata m;
  m.set("id", "1");
  m.set("long", long_value);
  CHECK(m.on_heap());
  m.set("b", "2");
  CHECK(m.size() == 3);
  CHECK(m.get("long") == long_value);
  CHECK(m.get("id") == "1");
  CHECK(m.get("b") == "2");

  Metadata copy = m;
  CHECK(copy == m);
  Metadata moved = std::move(copy);
  CHECK(moved == m);
  CHECK(copy.empty());  // NOLINT(bugprone-use-after-move): a moved-from map is empty
  copy = moved;         // reusable after the move
  CHECK(copy == m);

  // Equality is by content, wherever the bytes are.
  CHECK(m.erase("long"));
  Metadata small;
  small.set("b", "2");
  small.set("id", "1");
  CHECK(m == small);
  CHECK_FALSE(small.on_heap());

  m.clear();  // keeps the heap buffer
  const kincir::test::AllocScope scope;
  m.set("long", long_value);
  CHECK(scope.allocations() == 0);
}

TEST_CASE("Metadata set with views into itself", "[metadata]") {
  Metadata m;
  m.set("a", "first");
  m.set("zz", std::string(40, 'z'));
  m.set("b", *m.get("a"));
  m.set("a", *m.get("zz"));
  CHECK(m.get("a") == std::string(40, 'z'));
  CHECK(m.get("b") == "first");
  m.set(*m.get("b"), "x");
  CHECK(m.get("first") == "x");
}

TEST_CASE("Metadata keeps empty keys and values, and replaces values of other lengths", "[metadata]") {
  Metadata m;
  m.set("", "empty key");
  m.set("k", "");
  CHECK(m.get("") == "empty key");
  CHECK(m.get("k") == "");
  m.set("k", std::string(200, 'x'));
  m.set("", "");
  CHECK(m.get("k") == std::string(200, 'x'));
  CHECK(m.get("") == "");
  std::vector<std::string> keys;
  for (const auto& [k, v] : m) keys.emplace_back(k);
  CHECK(keys == std::vector<std::string>{"", "k"});
}
