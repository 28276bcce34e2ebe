// The sans-I/O AMQP codec: frames, field tables, generated methods, content properties, body
// splitting, content reassembly and the error categories.
#include <kincir/rabbitmq/amqp/codec.hpp>

#include "support/catch.hpp"

#include <kincir/rabbitmq/amqp/content.hpp>
#include <kincir/rabbitmq/amqp/error.hpp>
#include <kincir/rabbitmq/amqp/field_table.hpp>
#include <kincir/rabbitmq/amqp/frame.hpp>
#include <kincir/rabbitmq/amqp/methods.hpp>
#include <kincir/rabbitmq/amqp/properties.hpp>

#include "amqp_harness.hpp"

#include <cstdint>       // fixed-width values
#include <limits>        // numeric limits in round trips
#include <string>        // strings
#include <system_error>  // std::error_code
#include <utility>       // std::index_sequence
#include <variant>       // Method alternatives
#include <vector>        // byte vectors

namespace amqp = kincir::rabbitmq::amqp;
using amqp::test::ByteVector;
using kincir::rabbitmq::errc;
using kincir::rabbitmq::reply_code;

namespace {

ByteVector bytes_of(const amqp::ByteBuffer& b) { return {b.data(), b.data() + b.size()}; }

amqp::ParseResult parse(const amqp::FrameReader& reader, const ByteVector& in, std::error_code& ec) {
  return reader.parse(std::span<const std::uint8_t>(in), ec);
}

}  // namespace

TEST_CASE("protocol header and heartbeat frame have their wire form", "[amqp][frame]") {
  CHECK(ByteVector(amqp::kProtocolHeader.begin(), amqp::kProtocolHeader.end()) ==
        ByteVector{'A', 'M', 'Q', 'P', 0, 0, 9, 1});
  CHECK(amqp::test::heartbeat_frame() == ByteVector{8, 0, 0, 0, 0, 0, 0, 0xCE});
}

TEST_CASE("frame reader returns complete frames or how many bytes it needs", "[amqp][frame]") {
  const ByteVector frame = amqp::test::body_frame(5, "hello");
  REQUIRE(frame == ByteVector{3, 0, 5, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o', 0xCE});
  amqp::FrameReader reader(4096);
  std::error_code ec;

  SECTION("complete") {
    auto r = parse(reader, frame, ec);
    REQUIRE_FALSE(ec);
    REQUIRE(r.status == amqp::ParseStatus::complete);
    CHECK(r.size == frame.size());
    CHECK(r.frame.type == amqp::FrameType::body);
    CHECK(r.frame.channel == 5);
    CHECK(std::string(r.frame.payload.begin(), r.frame.payload.end()) == "hello");
    CHECK(r.frame.payload.data() == frame.data() + 7);  // a view, not a copy
  }
  SECTION("every strict prefix needs more, and says how much") {
    for (std::size_t n = 0; n < frame.size(); ++n) {
      ByteVector prefix(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(n));
      auto r = parse(reader, prefix, ec);
      INFO("prefix " << n);
      REQUIRE_FALSE(ec);
      CHECK(r.status == amqp::ParseStatus::need_more);
      CHECK(r.size == (n < 7 ? 7 : frame.size()));
    }
  }
  SECTION("two frames back to back") {
    ByteVector two = amqp::test::concat({frame, amqp::test::heartbeat_frame()});
    auto r = parse(reader, two, ec);
    REQUIRE(r.status == amqp::ParseStatus::complete);
    auto rest = std::span<const std::uint8_t>(two).subspan(r.size);
    auto r2 = reader.parse(rest, ec);
    REQUIRE(r2.status == amqp::ParseStatus::complete);
    CHECK(r2.frame.type == amqp::FrameType::heartbeat);
    CHECK(r2.size == rest.size());
  }
}

TEST_CASE("frame reader rejects bad frames before allocating", "[amqp][frame]") {
  std::error_code ec;
  amqp::FrameReader reader(4096);

  SECTION("frame-end octet") {
    ByteVector frame = amqp::test::body_frame(1, "x");
    frame.back() = 0xCD;
    auto r = parse(reader, frame, ec);
    CHECK(r.status == amqp::ParseStatus::error);
    CHECK(ec == errc::bad_frame_end);
  }
  SECTION("frame_max is checked from the 7-byte header alone") {
    // A header announcing a 4 GiB payload: refused without the payload being there.
    ByteVector header{1, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF};
    auto r = parse(reader, header, ec);
    CHECK(r.status == amqp::ParseStatus::error);
    CHECK(ec == errc::frame_too_large);
    CHECK(r.size == 0);
  }
  SECTION("a frame of exactly frame_max bytes passes, one more byte fails") {
    ByteVector exact = amqp::test::body_frame(1, std::string(4096 - 8, 'a'));
    CHECK(parse(reader, exact, ec).status == amqp::ParseStatus::complete);
    ByteVector over = amqp::test::body_frame(1, std::string(4096 - 7, 'a'));
    CHECK(parse(reader, over, ec).status == amqp::ParseStatus::error);
    CHECK(ec == errc::frame_too_large);
    amqp::FrameReader unlimited(0);
    CHECK(parse(unlimited, over, ec).status == amqp::ParseStatus::complete);
  }
  SECTION("unknown frame type, from the first byte") {
    CHECK(parse(reader, ByteVector{4}, ec).status == amqp::ParseStatus::error);
    CHECK(ec == errc::unknown_frame_type);
  }
  SECTION("the server's protocol header (version mismatch)") {
    ByteVector header{'A', 'M', 'Q', 'P', 0, 0, 9, 1};
    CHECK(parse(reader, header, ec).status == amqp::ParseStatus::error);
    CHECK(ec == errc::protocol_version_mismatch);
  }
}

TEST_CASE("field tables use RabbitMQ's type tags", "[amqp][table]") {
  amqp::ByteBuffer out;
  std::error_code ec;

  SECTION("exact bytes of a small table") {
    amqp::FieldTable t{{"a", std::int32_t{1}}, {"b", std::int16_t{-2}}, {"c", std::int64_t{3}}};
    amqp::encode_field_table(t, out, ec);
    REQUIRE_FALSE(ec);
    const ByteVector length{0, 0, 0, 23};
    const ByteVector i32{1, 'a', 'I', 0, 0, 0, 1};              // i32 is I
    const ByteVector i16{1, 'b', 's', 0xFF, 0xFE};              // i16 is s (the spec's table: U)
    const ByteVector i64{1, 'c', 'l', 0, 0, 0, 0, 0, 0, 0, 3};  // i64 is l (the spec's table: L)
    const ByteVector expected = amqp::test::concat({length, i32, i16, i64});
    amqp::test::record_seed("field_table", expected);
    CHECK(bytes_of(out) == expected);
  }
  SECTION("every value type round-trips") {
    amqp::FieldTable nested{{"deep", amqp::FieldArray{std::int32_t{7}, "s", amqp::FieldTable{{"x", true}}}}};
    amqp::FieldTable t{
        {"void", amqp::FieldValue()},
        {"bool", false},
        {"i8", std::int8_t{-8}},
        {"u8", std::uint8_t{200}},
        {"i16", std::int16_t{-30000}},
        {"u16", std::uint16_t{60000}},
        {"i32", std::numeric_limits<std::int32_t>::min()},
        {"u32", std::numeric_limits<std::uint32_t>::max()},
        {"i64", std::numeric_limits<std::int64_t>::min()},
        {"f32", 1.5F},
        {"f64", -2.25},
        {"decimal", amqp::Decimal{2, 12345}},
        {"string", "text"},
        {"bytes", amqp::ByteArray{0, 1, 0xFF}},
        {"timestamp", amqp::Timestamp{1700000000}},
        {"table", nested},
        {"array", amqp::FieldArray{std::int32_t{1}, amqp::FieldArray{}, amqp::FieldValue()}},
    };
    amqp::encode_field_table(t, out, ec);
    REQUIRE_FALSE(ec);
    amqp::test::record_seed("field_table", bytes_of(out));
    std::size_t consumed = 0;
    auto decoded = amqp::decode_field_table(out.span(), ec, &consumed);
    REQUIRE_FALSE(ec);
    CHECK(consumed == out.size());
    CHECK(decoded == t);
    std::string tags;
    for (const auto& e : decoded) tags += e.value.tag();
    CHECK(tags == "VtbBsuIilfdDSxTFA");
    CHECK(tags.substr(6, 3) == "Iil");
  }
  SECTION("set replaces, find looks up") {
    amqp::FieldTable t;
    t.set("k", std::int32_t{1}).set("k", "two").set("other", true);
    REQUIRE(t.size() == 2);
    REQUIRE(t.find("k") != nullptr);
    CHECK(*t.find("k")->get_if<std::string>() == "two");
    CHECK(t.find("missing") == nullptr);
  }
  SECTION("a name longer than 255 bytes cannot be encoded; the buffer is left as it was") {
    out.append("xy", 2);
    amqp::FieldTable t{{std::string(256, 'n'), true}};
    amqp::encode_field_table(t, out, ec);
    CHECK(ec == errc::string_too_long);
    CHECK(out.size() == 2);
  }
}

TEST_CASE("field table decoding fails cleanly on hostile input", "[amqp][table]") {
  std::error_code ec;
  auto decode = [&ec](const ByteVector& in, amqp::FieldLimits limits = {}) {
    amqp::test::record_seed("field_table", in);
    return amqp::decode_field_table(std::span<const std::uint8_t>(in), ec, nullptr, limits);
  };

  SECTION("unknown tag") {
    decode({0, 0, 0, 4, 1, 'a', 'U', 0});
    CHECK(ec == errc::malformed_field_table);
  }
  SECTION("table length past the input") {
    decode({0, 0, 0, 9, 1, 'a', 't', 1});
    CHECK(ec == errc::malformed_field_table);
  }
  SECTION("a value running past its table's length") {
    decode({0, 0, 0, 4, 1, 'a', 'I', 0, 0, 0, 1});
    CHECK(ec == errc::malformed_field_table);
  }
  SECTION("a string longer than the input") {
    decode({0, 0, 0, 7, 1, 'a', 'S', 0x7F, 0xFF, 0xFF, 0xFF});
    CHECK(ec == errc::malformed_field_table);
  }
  SECTION("truncated length") {
    decode({0, 0});
    CHECK(ec == errc::malformed_field_table);
  }
  SECTION("nesting deeper than the limit") {
    auto nested = [](std::size_t depth) {
      amqp::FieldTable t{{"leaf", true}};
      for (std::size_t i = 0; i < depth; ++i) t = amqp::FieldTable{{"t", t}};
      amqp::ByteBuffer out;
      std::error_code e;
      amqp::encode_field_table(t, out, e);
      return bytes_of(out);
    };
    decode(nested(15));  // 16 levels of tables
    CHECK_FALSE(ec);
    decode(nested(16));
    CHECK(ec == errc::field_table_too_deep);
    decode(nested(3), amqp::FieldLimits{3, 100});
    CHECK(ec == errc::field_table_too_deep);
  }
  SECTION("more values than the limit") {
    amqp::FieldArray many;
    for (int i = 0; i < 100; ++i) many.push_back(amqp::FieldValue());
    amqp::ByteBuffer out;
    amqp::encode_field_table(amqp::FieldTable{{"a", many}}, out, ec);
    REQUIRE_FALSE(ec);
    decode(bytes_of(out), amqp::FieldLimits{16, 50});
    CHECK(ec == errc::field_table_too_large);
    decode(bytes_of(out), amqp::FieldLimits{16, 101});
    CHECK_FALSE(ec);
  }
  SECTION("the throwing overload throws kincir::Error") {
    const ByteVector bad{0, 0, 0, 4, 1, 'a', '?', 0};
    CHECK_THROWS_AS(amqp::decode_field_table(std::span<const std::uint8_t>(bad)), kincir::Error);
  }
}

TEST_CASE("methods encode with spec ids and packed bits", "[amqp][method]") {
  amqp::ByteBuffer out;
  amqp::detail::WireWriter w(out);

  SECTION("exchange.declare: five bits in one octet, LSB first") {
    amqp::ExchangeDeclare m;
    m.exchange = "ex";
    m.type = "fanout";
    m.durable = true;
    m.nowait = true;
    amqp::encode_method(w, m);
    const ByteVector expected{0,    40,  0,   10, 0,   0,  // class, method, reserved short
                              2,    'e', 'x', 6,  'f', 'a', 'n', 'o', 'u', 't',
                              0x12,  // durable (bit 1) | no-wait (bit 4)
                              0,    0,   0,   0};
    CHECK(bytes_of(out) == expected);
    CHECK_FALSE(m.expects_reply());
  }
  SECTION("basic.publish") {
    amqp::BasicPublish m;
    m.exchange = "e";
    m.routing_key = "rk";
    m.mandatory = true;
    amqp::encode_method(w, m);
    CHECK(bytes_of(out) == ByteVector{0, 60, 0, 40, 0, 0, 1, 'e', 2, 'r', 'k', 1});
  }
  SECTION("a short string over 255 bytes is an error") {
    amqp::BasicPublish m;
    m.routing_key = std::string(256, 'r');
    std::error_code ec;
    amqp::encode_method_frame(out, 1, m, ec);
    CHECK(ec == errc::string_too_long);
    CHECK(out.empty());
  }
  SECTION("ids follow the spec, including exchange.unbind-ok (40, 51)") {
    CHECK(amqp::ExchangeUnbindOk::kClassId == 40);
    CHECK(amqp::ExchangeUnbindOk::kMethodId == 51);
    CHECK(amqp::class_id_of(amqp::MethodId::confirm_select) == 85);
    CHECK(amqp::method_id_of(amqp::MethodId::basic_nack) == 120);
    CHECK(amqp::find_method(amqp::make_method_id(60, 60))->name == "basic.deliver");
    CHECK(amqp::find_method(amqp::make_method_id(30, 10)) == nullptr);  // access.request: not ours
    CHECK(amqp::is_reply_to(amqp::MethodId::basic_get, amqp::MethodId::basic_get_ok));
    CHECK(amqp::is_reply_to(amqp::MethodId::basic_get, amqp::MethodId::basic_get_empty));
    CHECK_FALSE(amqp::is_reply_to(amqp::MethodId::queue_declare, amqp::MethodId::queue_bind_ok));
    CHECK(amqp::BasicPublish::kHasContent);
    CHECK(amqp::BasicDeliver::kHasContent);
    CHECK_FALSE(amqp::BasicAck::kSynchronous);
  }
}

namespace {

template <std::size_t... I>
void round_trip_every_method(std::index_sequence<I...>) {
  (
      [] {
        using M = std::variant_alternative_t<I, amqp::Method>;
        INFO(M::kName);
        M m{};
        amqp::ByteBuffer out;
        amqp::detail::WireWriter w(out);
        amqp::encode_method(w, m);
        amqp::Method decoded;
        std::error_code ec;
        CHECK(amqp::decode_method(out.span(), decoded, ec) == M::kId);
        CHECK_FALSE(ec);
        REQUIRE(std::holds_alternative<M>(decoded));
        CHECK(std::get<M>(decoded) == m);
        CHECK(amqp::method_id(decoded) == M::kId);
        CHECK(amqp::find_method(M::kId)->name == M::kName);
        // Every strict prefix is malformed, never a crash.
        for (std::size_t n = 0; n < out.size(); ++n) {
          amqp::decode_method(std::span<const std::uint8_t>(out.data(), n), decoded, ec);
          CHECK(ec == errc::malformed_method);
        }
      }(),
      ...);
}

}  // namespace

TEST_CASE("every generated method round-trips and rejects truncation", "[amqp][method]") {
  round_trip_every_method(std::make_index_sequence<std::variant_size_v<amqp::Method>>());
  CHECK(amqp::kMethods.size() == std::variant_size_v<amqp::Method>);
}

TEST_CASE("method decoding of arguments and errors", "[amqp][method]") {
  amqp::ByteBuffer out;
  amqp::detail::WireWriter w(out);
  amqp::Method decoded;
  std::error_code ec;

  SECTION("arguments survive") {
    amqp::QueueDeclare m;
    m.queue = "q";
    m.exclusive = true;
    m.auto_delete = true;
    m.arguments.set("x-max-length", std::int32_t{10}).set("x-queue-type", "quorum");
    amqp::encode_method(w, m);
    CHECK(amqp::decode_method(out.span(), decoded, ec) == amqp::MethodId::queue_declare);
    REQUIRE_FALSE(ec);
    CHECK(std::get<amqp::QueueDeclare>(decoded) == m);
  }
  SECTION("unknown method") {
    const ByteVector in{0, 30, 0, 10, 0};
    amqp::decode_method(std::span<const std::uint8_t>(in), decoded, ec);
    CHECK(ec == errc::unknown_method);
  }
  SECTION("bytes left over") {
    amqp::encode_method(w, amqp::BasicQosOk{});
    w.u8(0);
    amqp::decode_method(out.span(), decoded, ec);
    CHECK(ec == errc::malformed_method);
  }
  SECTION("decode_method_as insists on its method") {
    amqp::encode_method(w, amqp::ChannelOpenOk{});
    amqp::ConnectionStart start;
    amqp::decode_method_as(out.span(), start, ec);
    CHECK(ec == errc::unexpected_frame);
  }
}

TEST_CASE("basic properties: 14 flags from bit 15 down", "[amqp][properties]") {
  amqp::BasicProperties p;
  CHECK(p.flags() == 0);
  p.content_type = "text/plain";
  CHECK(p.flags() == 0x8000);
  p.cluster_id = "";
  CHECK(p.flags() == 0x8004);

  amqp::BasicProperties all;
  all.content_type = "application/json";
  all.content_encoding = "gzip";
  all.headers = amqp::FieldTable{{"x-delivery-count", std::int64_t{2}}};
  all.delivery_mode = 2;
  all.priority = 9;
  all.correlation_id = "corr";
  all.reply_to = "amq.rabbitmq.reply-to";
  all.expiration = "60000";
  all.message_id = "123e4567-e89b-12d3-a456-426614174000";
  all.timestamp = 1700000000;
  all.type = "event";
  all.user_id = "guest";
  all.app_id = "kincir";
  all.cluster_id = "c";
  CHECK(all.flags() == 0xFFFC);

  amqp::ByteBuffer out;
  amqp::detail::WireWriter w(out);
  amqp::encode_content_header(w, 1234, all);
  std::error_code ec;
  auto header = amqp::decode_content_header(out.span(), ec);
  REQUIRE_FALSE(ec);
  CHECK(header.body_size == 1234);
  CHECK(header.properties == all);
  amqp::test::record_frames_seed(amqp::test::header_frame(1, 1234, all));

  SECTION("only the properties that are set are encoded, in flag order") {
    amqp::ByteBuffer small;
    amqp::detail::WireWriter sw(small);
    amqp::BasicProperties two;
    two.delivery_mode = 2;
    two.message_id = "m";
    amqp::encode_content_header(sw, 5, two);
    CHECK(bytes_of(small) == ByteVector{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0x10, 0x80, 2, 1, 'm'});
  }
  SECTION("an unknown flag or another class is malformed") {
    ByteVector bad{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x02};
    amqp::decode_content_header(std::span<const std::uint8_t>(bad), ec);
    CHECK(ec == errc::malformed_content_header);
    bad = {0, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00};
    amqp::decode_content_header(std::span<const std::uint8_t>(bad), ec);
    CHECK(ec == errc::malformed_content_header);
    for (std::size_t n = 0; n < out.size(); ++n) {
      amqp::decode_content_header(std::span<const std::uint8_t>(out.data(), n), ec);
      // Cut inside the headers table, the table decoder reports it.
      CHECK((ec == errc::malformed_content_header || ec == errc::malformed_field_table));
    }
  }
}

TEST_CASE("small bodies are copied into the write buffer while it is small, larger ones borrowed", "[amqp][content]") {
  const std::vector<std::uint8_t> small(amqp::OutputBuffer::kCopyBodiesUpTo, 0x11);
  const std::vector<std::uint8_t> large(amqp::OutputBuffer::kCopyBodiesUpTo + 1, 0x22);
  const auto points_into = [](const amqp::OutputBuffer& out, const std::vector<std::uint8_t>& body) {
    std::vector<std::span<const std::uint8_t>> buffers;
    out.buffers(buffers);
    std::size_t n = 0;
    for (auto b : buffers)
      if (b.data() >= body.data() && b.data() < body.data() + body.size()) n += b.size();
    return n;
  };
  amqp::BasicPublish publish;
  amqp::BasicProperties props;
  std::error_code ec;
  amqp::OutputBuffer out;
  amqp::encode_publish(out, 1, publish, props, small, amqp::kDefaultFrameMax, ec);
  amqp::encode_publish(out, 1, publish, props, large, amqp::kDefaultFrameMax, ec);
  REQUIRE_FALSE(ec);
  CHECK(points_into(out, small) == 0);             // copied: one contiguous run of bytes
  CHECK(points_into(out, large) == large.size());  // borrowed
  std::vector<std::span<const std::uint8_t>> buffers;
  out.buffers(buffers);
  CHECK(buffers.size() == 3);  // [publish 1 + publish 2's method and header] [large] [frame end]

  // Past the copy budget even small bodies are borrowed: a reused buffer stays small.
  amqp::OutputBuffer burst;
  std::size_t publishes = 0;
  while (points_into(burst, small) == 0) {
    REQUIRE(publishes < 1000);
    amqp::encode_publish(burst, 1, publish, props, small, amqp::kDefaultFrameMax, ec);
    ++publishes;
  }
  CHECK(publishes > 10);
  CHECK(points_into(burst, small) == small.size());  // the first one past the budget
  CHECK(burst.bytes().size() <= amqp::OutputBuffer::kCopyBudget);

  // Whatever was copied or borrowed, the wire is the same frames with the same bodies.
  const ByteVector wire = burst.flatten();  // the frames point into it
  const auto frames = amqp::test::split_frames(wire);
  REQUIRE(frames.size() == 3 * publishes);
  for (std::size_t i = 2; i < frames.size(); i += 3) {
    CHECK(frames[i].type == amqp::FrameType::body);
    CHECK(ByteVector(frames[i].payload.begin(), frames[i].payload.end()) == small);
  }
}

TEST_CASE("a content header larger than frame_max is refused and leaves the buffer unchanged", "[amqp][content]") {
  amqp::BasicProperties props;
  props.headers = amqp::FieldTable{{"big", std::string(5000, 'h')}};
  const std::vector<std::uint8_t> body(10, 1);
  amqp::OutputBuffer out;
  std::error_code ec;
  amqp::encode_publish(out, 1, amqp::BasicPublish{}, amqp::BasicProperties{}, body, 4096, ec);
  REQUIRE_FALSE(ec);
  const std::size_t before = out.size();
  amqp::encode_publish(out, 1, amqp::BasicPublish{}, props, body, 4096, ec);
  CHECK(ec == errc::frame_too_large);
  CHECK(out.size() == before);
  amqp::encode_publish(out, 1, amqp::BasicPublish{}, props, body, 8192, ec);  // fits a larger frame_max
  CHECK_FALSE(ec);
}

TEST_CASE("publish splits bodies at frame_max - 8 without copying them", "[amqp][content]") {
  std::vector<std::uint8_t> body(10000);
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<std::uint8_t>(i * 7);
  amqp::BasicPublish publish;
  publish.exchange = "ex";
  amqp::BasicProperties props;
  props.delivery_mode = 2;
  amqp::OutputBuffer out;
  std::error_code ec;
  amqp::encode_publish(out, 3, publish, props, body, 4096, ec);
  REQUIRE_FALSE(ec);

  // The body's bytes are borrowed: the buffers point into `body`.
  std::vector<std::span<const std::uint8_t>> buffers;
  out.buffers(buffers);
  std::size_t borrowed = 0;
  for (auto b : buffers)
    if (b.data() >= body.data() && b.data() < body.data() + body.size()) borrowed += b.size();
  CHECK(borrowed == body.size());
  CHECK(out.size() == out.bytes().size() + body.size());

  const ByteVector wire = out.flatten();
  amqp::test::record_frames_seed(wire);
  const auto frames = amqp::test::split_frames(wire);
  REQUIRE(frames.size() == 5);
  CHECK(frames[0].type == amqp::FrameType::method);
  CHECK(frames[1].type == amqp::FrameType::header);
  CHECK(frames[2].payload.size() == 4088);
  CHECK(frames[3].payload.size() == 4088);
  CHECK(frames[4].payload.size() == 10000 - 2 * 4088);
  ByteVector reassembled;
  for (std::size_t i = 2; i < frames.size(); ++i) {
    CHECK(frames[i].type == amqp::FrameType::body);
    CHECK(frames[i].channel == 3);
    CHECK(frames[i].wire_size() <= 4096);
    reassembled.insert(reassembled.end(), frames[i].payload.begin(), frames[i].payload.end());
  }
  CHECK(reassembled == body);

  SECTION("an empty body is a header with body-size 0 and no body frame") {
    amqp::OutputBuffer empty;
    amqp::encode_publish(empty, 3, publish, props, {}, 4096, ec);
    const ByteVector w2 = empty.flatten();
    const auto f2 = amqp::test::split_frames(w2);
    REQUIRE(f2.size() == 2);
    auto header = amqp::decode_content_header(f2[1].payload, ec);
    CHECK(header.body_size == 0);
  }
  SECTION("frame_max 0 (no limit) sends one body frame") {
    amqp::OutputBuffer one;
    amqp::encode_publish(one, 3, publish, props, body, 0, ec);
    const ByteVector w3 = one.flatten();
    CHECK(amqp::test::split_frames(w3).size() == 3);
  }
}

TEST_CASE("content reassembly: zero-copy single frame, copies only across frames", "[amqp][content]") {
  amqp::ContentAssembler content;
  std::error_code ec;
  amqp::BasicProperties props;
  props.content_type = "text/plain";
  const ByteVector header = amqp::test::header_frame(1, 11, props);
  const auto header_frames = amqp::test::split_frames(header);

  SECTION("one body frame is sliced from the read buffer") {
    // The driver reads into a Bytes and parses frames out of it.
    const kincir::Bytes source(amqp::test::body_frame(1, "hello world"));
    amqp::FrameReader reader(0);
    const amqp::Frame frame = reader.parse(source.span(), ec).frame;
    REQUIRE_FALSE(ec);
    content.begin();
    CHECK_FALSE(content.feed(header_frames[0], nullptr, ec));
    REQUIRE(content.feed(frame, &source, ec));
    REQUIRE_FALSE(ec);
    const kincir::Bytes body = content.take_body();
    CHECK(body.view() == "hello world");
    CHECK(body.data() == source.data() + 7);
    CHECK(source.use_count() == 2);
    CHECK(content.properties().content_type == "text/plain");
  }
  SECTION("several body frames are joined") {
    const ByteVector a = amqp::test::body_frame(1, "hello");
    const ByteVector b = amqp::test::body_frame(1, " world");
    content.begin();
    CHECK_FALSE(content.feed(header_frames[0], nullptr, ec));
    CHECK_FALSE(content.feed(amqp::test::split_frames(a)[0], nullptr, ec));
    REQUIRE(content.feed(amqp::test::split_frames(b)[0], nullptr, ec));
    CHECK(content.take_body().view() == "hello world");
  }
  SECTION("more body than announced is unexpected") {
    const ByteVector big = amqp::test::body_frame(1, "hello world!");
    content.begin();
    content.feed(header_frames[0], nullptr, ec);
    CHECK_FALSE(content.feed(amqp::test::split_frames(big)[0], nullptr, ec));
    CHECK(ec == errc::unexpected_frame);
    CHECK_FALSE(content.in_progress());
  }
  SECTION("a body above the limit is refused at the header") {
    content.begin();
    CHECK_FALSE(content.feed(header_frames[0], nullptr, ec, amqp::ContentLimits{10, {}}));
    CHECK(ec == errc::body_too_large);
  }
  SECTION("a body frame before the header is unexpected") {
    const ByteVector a = amqp::test::body_frame(1, "hello");
    content.begin();
    CHECK_FALSE(content.feed(amqp::test::split_frames(a)[0], nullptr, ec));
    CHECK(ec == errc::unexpected_frame);
  }
}

TEST_CASE("error categories: client errors and AMQP reply codes", "[amqp][error]") {
  std::error_code ec = errc::frame_too_large;
  CHECK(ec.category().name() == std::string("kincir.rabbitmq"));
  CHECK(ec.message() == "frame larger than frame_max");
  CHECK(ec.value() == 3);
  CHECK(std::error_code(errc::malformed_frame).value() == 1);

  std::error_code reply = reply_code::not_found;
  CHECK(reply.category().name() == std::string("amqp"));
  CHECK(reply.value() == 404);
  CHECK(reply.message() == "NOT_FOUND (404)");
  CHECK(kincir::rabbitmq::reply_error(404) == reply_code::not_found);
  CHECK_FALSE(kincir::rabbitmq::reply_error(200));
  CHECK(kincir::rabbitmq::reply_error(599).message() == "AMQP reply code 599");

  for (auto code : {311, 312, 313, 403, 404, 405, 406})
    CHECK(kincir::rabbitmq::is_soft_error(static_cast<reply_code>(code)));
  for (auto code : {320, 402, 501, 502, 503, 504, 505, 506, 530, 540, 541})
    CHECK_FALSE(kincir::rabbitmq::is_soft_error(static_cast<reply_code>(code)));

  kincir::rabbitmq::Diagnostics diag;
  diag.assign("NOT_FOUND - no queue 'q'", 50, 10);
  CHECK(diag.server_message() == "NOT_FOUND - no queue 'q'");
  CHECK(diag.class_id() == 50);
  diag.clear();
  CHECK(diag.server_message().empty());
}
