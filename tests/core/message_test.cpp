#include <kincir/core/message.hpp>
#if KINCIR_HAS_FMT
#include <kincir/fmt.hpp>  // fmt::formatter<kincir::Message>
#endif

#include <sstream>  // operator<<
#include <string>   // payloads
#include <vector>   // payloads

#include "support/catch.hpp"

using kincir::Bytes;
using kincir::Message;

TEST_CASE("Message gets a fresh id and keeps its payload", "[message]") {
  std::vector<std::uint8_t> body(1024, 0);
  const auto* data = body.data();
  Message a(std::move(body));
  Message b(std::string("text"));
  CHECK(a.uuid.version() == 4);
  CHECK(a.uuid != b.uuid);
  CHECK(a.payload.data() == data);
  CHECK(b.payload.view() == "text");
  CHECK(Message().uuid.is_nil());
}

TEST_CASE("with_metadata chains on rvalues and lvalues", "[message]") {
  Message m = Message(std::string("x")).with_metadata("id", "1").with_metadata("kind", "k");
  CHECK(m.metadata.get("id") == "1");
  CHECK(m.metadata.get("kind") == "k");

  Message n(Bytes::from_static(std::string_view("y")));
  n.with_metadata("a", "1").with_metadata("b", "2");
  CHECK(n.metadata.size() == 2);
}

TEST_CASE("Copies share the payload, equality compares everything", "[message]") {
  const Message a = Message(std::string(100, 'p')).with_metadata("k", "v");
  Message b = a;
  CHECK(b == a);
  CHECK(b.payload.data() == a.payload.data());
  b.metadata.set("k", "other");
  CHECK_FALSE(b == a);
  Message c = a;
  c.uuid = kincir::Uuid::new_v4();
  CHECK_FALSE(c == a);
}

TEST_CASE("Message formats for logs", "[message]") {
  Message m = Message(Bytes::from_static(std::string_view("12345"))).with_metadata("id", "7");
  m.uuid = kincir::Uuid::parse("123e4567-e89b-12d3-a456-426614174000");
  std::ostringstream os;
  os << m;
  CHECK(os.str() == "Message{123e4567-e89b-12d3-a456-426614174000, 5 bytes, {id: 7}}");
#if KINCIR_HAS_FMT
  CHECK(fmt::format("{}", m) == os.str());
#endif
}
