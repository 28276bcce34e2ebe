// The sans-I/O AMQP protocol algorithms: handshake, close, heartbeats, blocked, channels,
// publishing with confirms and consuming. Scenarios feed frames and check the bytes and actions
// that come out.
#include <kincir/rabbitmq/amqp/channel.hpp>

#include "support/catch.hpp"

#include <kincir/rabbitmq/amqp/connection.hpp>
#include <kincir/rabbitmq/amqp/heartbeat.hpp>

#include "amqp_harness.hpp"

#include <chrono>        // heartbeat clock
#include <cstdint>       // tags
#include <string>        // bodies
#include <system_error>  // std::error_code
#include <vector>        // actions, ranges

namespace amqp = kincir::rabbitmq::amqp;
using amqp::Action;
using amqp::Event;
using amqp::test::ByteVector;
using kincir::rabbitmq::errc;
using kincir::rabbitmq::reply_code;

namespace {

using Kind = Action::Kind;

amqp::ConnectionStart server_start(std::string mechanisms = "AMQPLAIN PLAIN") {
  amqp::ConnectionStart start;
  start.server_properties = amqp::FieldTable{{"product", "RabbitMQ"}, {"version", "3.12.0"}};
  start.mechanisms = std::move(mechanisms);
  return start;
}

amqp::ConnectionTune server_tune(std::uint16_t channel_max = 2047, std::uint32_t frame_max = 131072,
                                 std::uint16_t heartbeat = 60) {
  amqp::ConnectionTune tune;
  tune.channel_max = channel_max;
  tune.frame_max = frame_max;
  tune.heartbeat = heartbeat;
  return tune;
}

amqp::ConnectionConfig test_config() {
  amqp::ConnectionConfig config;
  config.username = "user";
  config.password = "secret";
  config.vhost = "/prod";
  config.connection_name = "orders";
  config.heartbeat = amqp::HeartbeatSetting::seconds(30);
  return config;
}

ByteVector protocol_header() { return {amqp::kProtocolHeader.begin(), amqp::kProtocolHeader.end()}; }

/// The start-ok in `written`, which must be exactly that frame on channel 0.
amqp::ConnectionStartOk decode_start_ok(const ByteVector& written) {
  auto frames = amqp::test::split_frames(written);
  REQUIRE(frames.size() == 1);
  CHECK(frames[0].channel == 0);
  amqp::ConnectionStartOk ok;
  std::error_code ec;
  amqp::decode_method_as(frames[0].payload, ok, ec);
  REQUIRE_FALSE(ec);
  return ok;
}

/// The capabilities RabbitMQ needs to hear about, all true in `caps`.
void check_kincir_capabilities(const amqp::FieldTable& caps) {
  for (const char* cap : {"publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
                          "connection.blocked", "authentication_failure_close", "per_consumer_qos"}) {
    INFO(cap);
    const auto* value = caps.find(cap);
    REQUIRE(value != nullptr);
    REQUIRE(value->get_if<bool>() != nullptr);
    CHECK(*value->get_if<bool>());
  }
}

/// The start-ok the client must send: PLAIN with \0user\0password and every capability
/// RabbitMQ needs advertised.
void check_start_ok(const ByteVector& written) {
  const amqp::ConnectionStartOk ok = decode_start_ok(written);
  std::error_code ec;
  CHECK(ok.mechanism == "PLAIN");
  CHECK(ok.response == std::string("\0user\0secret", 12));
  CHECK(ok.locale == "en_US");
  amqp::ByteBuffer table;
  amqp::encode_field_table(ok.client_properties, table, ec);
  amqp::test::record_seed("field_table", amqp::test::to_vector(table.span()));
  REQUIRE(ok.client_properties.find("connection_name") != nullptr);
  CHECK(*ok.client_properties.find("connection_name")->get_if<std::string>() == "orders");
  const auto* caps = ok.client_properties.find("capabilities");
  REQUIRE(caps != nullptr);
  REQUIRE(caps->get_if<amqp::FieldTable>() != nullptr);
  check_kincir_capabilities(*caps->get_if<amqp::FieldTable>());
}

amqp::test::Conversation handshake_until_tune() {
  amqp::test::Conversation c;
  c.expect_write(protocol_header())
      .expect_read(amqp::test::method_frame(0, server_start()))
      .expect_write_matching(check_start_ok);
  return c;
}

ByteVector tune_ok_and_open(std::uint16_t channel_max, std::uint32_t frame_max, std::uint16_t heartbeat) {
  amqp::ConnectionTuneOk ok;
  ok.channel_max = channel_max;
  ok.frame_max = frame_max;
  ok.heartbeat = heartbeat;
  amqp::ConnectionOpen open;
  open.virtual_host = "/prod";
  return amqp::test::concat({amqp::test::method_frame(0, ok), amqp::test::method_frame(0, open)});
}

auto make_handshake = [] { return amqp::HandshakeAlgo(); };
auto make_connection = [] { return amqp::ConnectionState(test_config()); };

}  // namespace

TEST_CASE("tuning: channel_max and frame_max take the smaller non-zero value", "[amqp][connection]") {
  amqp::ConnectionConfig client;
  client.heartbeat = amqp::HeartbeatSetting::server_default();
  std::error_code ec;
  CHECK(amqp::negotiate(server_tune(2047, 131072, 60), client, ec) == amqp::Tuning{2047, 131072, 60});
  CHECK_FALSE(ec);

  struct Case {
    std::uint16_t server_channels, client_channels, channels;
    std::uint32_t server_frame, client_frame, frame;
  };
  // 0 is "no limit" on either side: the other side's value wins; both 0 gives 65535 channels
  // (every channel id) and frame_max 0 (no limit).
  const Case cases[] = {
      {2047, 100, 100, 131072, 8192, 8192},  // both set: the smaller
      {100, 2047, 100, 8192, 131072, 8192},  // both set, the other way round
      {0, 100, 100, 0, 8192, 8192},          // no server limit
      {2047, 0, 2047, 131072, 0, 131072},    // no client limit
      {0, 0, 65535, 0, 0, 0},                // no limit at all
      {7, 7, 7, 4096, 4096, 4096},           // equal; 4096 is the protocol minimum
  };
  for (const auto& c : cases) {
    INFO("server " << c.server_channels << "/" << c.server_frame << ", client " << c.client_channels << "/"
                   << c.client_frame);
    client.channel_max = c.client_channels;
    client.frame_max = c.client_frame;
    const auto t = amqp::negotiate(server_tune(c.server_channels, c.server_frame, 0), client, ec);
    CHECK_FALSE(ec);
    CHECK(t.channel_max == c.channels);
    CHECK(t.frame_max == c.frame);
  }
  CHECK(amqp::kMaxChannelId == 65535);

  // Below the protocol minimum of 4096, whichever side asks for it.
  client.frame_max = 0;
  amqp::negotiate(server_tune(0, 4095, 0), client, ec);
  CHECK(ec == errc::frame_max_too_small);
  client.frame_max = 1024;
  amqp::negotiate(server_tune(0, 131072, 0), client, ec);
  CHECK(ec == errc::frame_max_too_small);
  client.frame_max = 4096;
  amqp::negotiate(server_tune(0, 131072, 0), client, ec);
  CHECK_FALSE(ec);
}

TEST_CASE("tuning: heartbeat off, the server's proposal, or a value in seconds", "[amqp][connection]") {
  using HB = amqp::HeartbeatSetting;
  // The default is what RabbitMQ's own clients ask for: 60 s.
  CHECK(amqp::ConnectionConfig{}.heartbeat == HB::seconds(60));
  CHECK(HB::off().kind == HB::Kind::off);
  CHECK(HB::server_default().kind == HB::Kind::server_default);
  CHECK(HB::seconds(15) == HB{HB::Kind::seconds, 15});

  struct Case {
    HB setting;
    std::uint16_t server;
    std::uint16_t expected;
  };
  const Case cases[] = {
      // off: 0 whatever the server proposes (RabbitMQ then sends no heartbeats).
      {HB::off(), 60, 0},
      {HB::off(), 0, 0},
      {HB::off(), 5, 0},
      // The server's proposal, including "none".
      {HB::server_default(), 60, 60},
      {HB::server_default(), 0, 0},
      {HB::server_default(), 5, 5},
      // A value: the smaller non-zero one; a server proposing 0 gets ours.
      {HB::seconds(30), 60, 30},
      {HB::seconds(120), 60, 60},
      {HB::seconds(60), 60, 60},
      {HB::seconds(30), 0, 30},
      {HB::seconds(1), 65535, 1},
      // seconds(0) is no preference: the server's proposal.
      {HB::seconds(0), 60, 60},
      {HB::seconds(0), 0, 0},
  };
  amqp::ConnectionConfig client;
  for (const auto& c : cases) {
    INFO("setting kind " << static_cast<int>(c.setting.kind) << " interval " << c.setting.interval << ", server "
                         << c.server);
    CHECK(amqp::negotiate_heartbeat(c.setting, c.server) == c.expected);
    client.heartbeat = c.setting;
    std::error_code ec;
    const auto t = amqp::negotiate(server_tune(2047, 131072, c.server), client, ec);
    CHECK_FALSE(ec);
    CHECK(t.heartbeat == c.expected);
    CHECK(t.channel_max == 2047);  // unaffected
    CHECK(t.frame_max == 131072);
  }
}

TEST_CASE("handshake: tune-ok carries the negotiated values", "[amqp][connection]") {
  using HB = amqp::HeartbeatSetting;
  struct Case {
    HB setting;
    std::uint16_t server_channels, client_channels;
    std::uint16_t server_heartbeat;
    std::uint16_t channels, heartbeat;
  };
  const Case cases[] = {
      {HB::off(), 2047, 2047, 60, 2047, 0},           {HB::server_default(), 2047, 2047, 60, 2047, 60},
      {HB::server_default(), 2047, 2047, 0, 2047, 0}, {HB::seconds(30), 2047, 2047, 60, 2047, 30},
      {HB::seconds(90), 2047, 2047, 60, 2047, 60},    {HB::seconds(90), 2047, 2047, 0, 2047, 90},
      {HB::seconds(60), 0, 0, 60, 65535, 60},         {HB::seconds(60), 0, 10, 60, 10, 60},
  };
  for (const auto& c : cases) {
    INFO("setting kind " << static_cast<int>(c.setting.kind) << " interval " << c.setting.interval
                         << ", server heartbeat " << c.server_heartbeat << ", channels " << c.server_channels << "/"
                         << c.client_channels);
    auto make_state = [&c] {
      auto config = test_config();
      config.heartbeat = c.setting;
      config.channel_max = c.client_channels;
      return amqp::ConnectionState(config);
    };
    auto conv = handshake_until_tune();
    conv.expect_read(amqp::test::method_frame(0, server_tune(c.server_channels, 131072, c.server_heartbeat)))
        .expect_write(tune_ok_and_open(c.channels, 131072, c.heartbeat))
        .expect_read(amqp::test::method_frame(0, amqp::ConnectionOpenOk{}));
    auto algo = make_handshake();
    auto st = make_state();
    REQUIRE_FALSE(conv.run(algo, st));
    CHECK(st.tuning == amqp::Tuning{c.channels, 131072, c.heartbeat});
  }
}

TEST_CASE("client properties: a user capabilities table is merged with kincir's", "[amqp][connection]") {
  auto config = test_config();
  config.client_properties =
      amqp::FieldTable{{"product", "orders-service"},
                       {"capabilities", amqp::FieldTable{{"x-custom_feature", true}, {"connection.blocked", false}}},
                       {"team", "payments"}};

  auto check = [](const ByteVector& written) {
    const amqp::ConnectionStartOk ok = decode_start_ok(written);
    const auto& props = ok.client_properties;
    // The user's other properties are kept, replacing kincir's of the same name.
    REQUIRE(props.find("product") != nullptr);
    CHECK(*props.find("product")->get_if<std::string>() == "orders-service");
    REQUIRE(props.find("team") != nullptr);
    CHECK(*props.find("team")->get_if<std::string>() == "payments");
    REQUIRE(props.find("version") != nullptr);
    REQUIRE(props.find("connection_name") != nullptr);
    // capabilities: the user's custom entry and every one of kincir's, kincir's value winning.
    const auto* caps_value = props.find("capabilities");
    REQUIRE(caps_value != nullptr);
    const auto* caps = caps_value->get_if<amqp::FieldTable>();
    REQUIRE(caps != nullptr);
    REQUIRE(caps->find("x-custom_feature") != nullptr);
    CHECK(*caps->find("x-custom_feature")->get_if<bool>());
    check_kincir_capabilities(*caps);
    CHECK(caps->size() == amqp::client_capabilities().size() + 1);
  };
  amqp::test::Conversation conv;
  conv.expect_write(protocol_header())
      .expect_read(amqp::test::method_frame(0, server_start()))
      .expect_write_matching(check)
      .expect_read(amqp::test::method_frame(0, server_tune()))
      .expect_write(tune_ok_and_open(2047, 131072, 30))
      .expect_read(amqp::test::method_frame(0, amqp::ConnectionOpenOk{}));
  conv.check(make_handshake, [&config] { return amqp::ConnectionState(config); });

  SECTION("a capabilities entry that is not a table leaves kincir's table") {
    config.client_properties = amqp::FieldTable{{"capabilities", "none"}};
    const auto props = amqp::client_properties(config);
    const auto* caps = props.find("capabilities");
    REQUIRE(caps != nullptr);
    REQUIRE(caps->get_if<amqp::FieldTable>() != nullptr);
    CHECK(*caps->get_if<amqp::FieldTable>() == amqp::client_capabilities());
  }
  SECTION("without user capabilities, kincir's table is sent as is") {
    config.client_properties = amqp::FieldTable{{"team", "payments"}};
    const auto props = amqp::client_properties(config);
    REQUIRE(props.find("capabilities") != nullptr);
    CHECK(*props.find("capabilities")->get_if<amqp::FieldTable>() == amqp::client_capabilities());
  }
}

TEST_CASE("handshake: header, start/start-ok, tune/tune-ok, open/open-ok", "[amqp][connection]") {
  auto c = handshake_until_tune();
  c.expect_read(amqp::test::method_frame(0, server_tune(2047, 131072, 60)))
      .expect_write(tune_ok_and_open(2047, 131072, 30))
      .expect_read(amqp::test::method_frame(0, amqp::ConnectionOpenOk{}));

  auto algo = make_handshake();
  auto st = make_connection();
  REQUIRE_FALSE(c.run(algo, st));
  CHECK(st.phase == amqp::ConnectionPhase::open);
  CHECK(st.tuning == amqp::Tuning{2047, 131072, 30});
  CHECK(st.reader.frame_max() == 131072);
  CHECK(*st.server_properties.find("product")->get_if<std::string>() == "RabbitMQ");
  // Finished algorithms stay finished.
  CHECK(algo.resume(st, Event::written()) == Action::done());

  c.check_network_errors(make_handshake, make_connection);
}

TEST_CASE("handshake: SASL EXTERNAL sends no credentials", "[amqp][connection]") {
  auto config = test_config();
  config.mechanism = amqp::SaslMechanism::external;
  auto check = [](const ByteVector& written) {
    const amqp::ConnectionStartOk ok = decode_start_ok(written);
    CHECK(ok.mechanism == "EXTERNAL");
    CHECK(ok.response.empty());
  };
  amqp::test::Conversation conv;
  conv.expect_write(protocol_header())
      .expect_read(amqp::test::method_frame(0, server_start("PLAIN AMQPLAIN EXTERNAL")))
      .expect_write_matching(check)
      .expect_read(amqp::test::method_frame(0, server_tune()))
      .expect_write(tune_ok_and_open(2047, 131072, 30))
      .expect_read(amqp::test::method_frame(0, amqp::ConnectionOpenOk{}));
  conv.check(make_handshake, [&config] { return amqp::ConnectionState(config); });

  amqp::test::Conversation without;
  without.expect_write(protocol_header()).expect_read(amqp::test::method_frame(0, server_start("PLAIN AMQPLAIN")));
  without.check(
      make_handshake, [&config] { return amqp::ConnectionState(config); }, errc::unsupported_mechanism);
}

TEST_CASE("handshake ignores heartbeats before open-ok", "[amqp][connection]") {
  auto c = handshake_until_tune();
  c.expect_read(amqp::test::method_frame(0, server_tune()))
      .expect_write(tune_ok_and_open(2047, 131072, 30))
      .expect_read(amqp::test::heartbeat_frame())
      .expect_read(amqp::test::method_frame(0, amqp::ConnectionOpenOk{}));
  c.check(make_handshake, make_connection);
}

TEST_CASE("handshake failures", "[amqp][connection]") {
  SECTION("no PLAIN mechanism") {
    amqp::test::Conversation c;
    c.expect_write(protocol_header()).expect_read(amqp::test::method_frame(0, server_start("AMQPLAIN EXTERNAL")));
    c.check(make_handshake, make_connection, errc::unsupported_mechanism);
  }
  SECTION("a server speaking another version") {
    amqp::ConnectionStart start = server_start();
    start.version_minor = 8;
    amqp::test::Conversation c;
    c.expect_write(protocol_header()).expect_read(amqp::test::method_frame(0, start));
    c.check(make_handshake, make_connection, errc::protocol_version_mismatch);
  }
  SECTION("bad login: connection.close(403) is answered with close-ok and reported") {
    amqp::ConnectionClose close;
    close.reply_code = 403;
    close.reply_text = "ACCESS_REFUSED - Login was refused";
    close.class_id = 10;
    close.method_id = 11;
    auto c = handshake_until_tune();
    c.expect_read(amqp::test::method_frame(0, close))
        .expect_write(amqp::test::method_frame(0, amqp::ConnectionCloseOk{}));
    auto algo = make_handshake();
    auto st = make_connection();
    CHECK(c.run(algo, st) == reply_code::access_refused);
    CHECK(st.diagnostics.server_message() == "ACCESS_REFUSED - Login was refused");
    CHECK(st.diagnostics.method_id() == 11);
    CHECK(st.phase == amqp::ConnectionPhase::closed);
  }
  SECTION("vhost refused at open: 530") {
    amqp::ConnectionClose close;
    close.reply_code = 530;
    close.reply_text = "NOT_ALLOWED - vhost /prod not found";
    auto c = handshake_until_tune();
    c.expect_read(amqp::test::method_frame(0, server_tune()))
        .expect_write(tune_ok_and_open(2047, 131072, 30))
        .expect_read(amqp::test::method_frame(0, close))
        .expect_write(amqp::test::method_frame(0, amqp::ConnectionCloseOk{}));
    c.check(make_handshake, make_connection, reply_code::not_allowed);
  }
  SECTION("frame_max below 4096") {
    auto c = handshake_until_tune();
    c.expect_read(amqp::test::method_frame(0, server_tune(0, 2048, 0)));
    c.check(make_handshake, make_connection, errc::frame_max_too_small);
  }
  SECTION("a method other than the expected one") {
    auto c = handshake_until_tune();
    c.expect_read(amqp::test::method_frame(0, amqp::ConnectionOpenOk{}));
    c.check(make_handshake, make_connection, errc::unexpected_frame);
  }
  SECTION("a frame on another channel") {
    amqp::test::Conversation c;
    c.expect_write(protocol_header()).expect_read(amqp::test::method_frame(1, server_start()));
    c.check(make_handshake, make_connection, errc::unexpected_frame);
  }
  SECTION("timeout while waiting for open-ok") {
    auto c = handshake_until_tune();
    c.expect_read(amqp::test::method_frame(0, server_tune()))
        .expect_write(tune_ok_and_open(2047, 131072, 30))
        .expect_timeout();
    c.check(make_handshake, make_connection, errc::handshake_timeout);
  }
}

TEST_CASE("client close: close, discard until close-ok", "[amqp][connection]") {
  amqp::ConnectionClose close;
  close.reply_code = 200;
  close.reply_text = "bye";
  auto make_close = [] { return amqp::CloseAlgo(200, "bye"); };
  auto make_state = [] {
    amqp::ConnectionState st(test_config());
    st.phase = amqp::ConnectionPhase::open;
    return st;
  };
  amqp::BasicDeliver deliver;
  deliver.delivery_tag = 1;

  SECTION("close-ok after frames that are discarded") {
    amqp::test::Conversation c;
    c.expect_write(amqp::test::method_frame(0, close))
        .expect_read(amqp::test::method_frame(1, deliver))
        .expect_read(amqp::test::header_frame(1, 1))
        .expect_read(amqp::test::body_frame(1, "x"))
        .expect_read(amqp::test::heartbeat_frame())
        .expect_read(amqp::test::method_frame(0, amqp::ConnectionCloseOk{}));
    auto algo = make_close();
    auto st = make_state();
    REQUIRE_FALSE(c.run(algo, st));
    CHECK(st.phase == amqp::ConnectionPhase::closed);
    c.check_network_errors(make_close, make_state);
  }
  SECTION("the server's close crossing ours gets a close-ok") {
    amqp::ConnectionClose server;
    server.reply_code = 320;
    server.reply_text = "CONNECTION_FORCED - shutdown";
    amqp::test::Conversation c;
    c.expect_write(amqp::test::method_frame(0, close))
        .expect_read(amqp::test::method_frame(0, server))
        .expect_write(amqp::test::method_frame(0, amqp::ConnectionCloseOk{}));
    auto algo = make_close();
    auto st = make_state();
    REQUIRE_FALSE(c.run(algo, st));
    CHECK(st.diagnostics.server_message() == "CONNECTION_FORCED - shutdown");
  }
  SECTION("timeout") {
    amqp::test::Conversation c;
    c.expect_write(amqp::test::method_frame(0, close)).expect_timeout();
    c.check(make_close, make_state, errc::close_timeout);
  }
}

TEST_CASE("heartbeat: send after H/2 without writing, dead after 2H without reading", "[amqp][heartbeat]") {
  using namespace std::chrono_literals;
  using Status = amqp::Heartbeat::Status;
  const auto t0 = amqp::Heartbeat::clock::time_point() + 1h;
  amqp::Heartbeat hb;
  CHECK(hb.check(t0 + 24h) == Status::idle);  // disabled
  CHECK(hb.next_deadline() == amqp::Heartbeat::clock::time_point::max());

  hb.start(10s, t0);
  CHECK(hb.check(t0 + 4999ms) == Status::idle);
  CHECK(hb.check(t0 + 5s) == Status::send);
  CHECK(hb.next_deadline() == t0 + 5s);
  hb.on_write(t0 + 5s);
  CHECK(hb.check(t0 + 9s) == Status::idle);
  CHECK(hb.next_deadline() == t0 + 10s);
  // Reading (any bytes) keeps the peer alive; silence for 2H kills it even while we write.
  hb.on_read(t0 + 15s);
  hb.on_write(t0 + 34s);
  CHECK(hb.check(t0 + 34s) == Status::idle);
  CHECK(hb.check(t0 + 35s) == Status::dead);
}

TEST_CASE("open connection: server close, blocked, heartbeats", "[amqp][connection]") {
  using namespace std::chrono_literals;
  amqp::ConnectionState st(test_config());
  st.phase = amqp::ConnectionPhase::open;
  auto feed = [&st](const ByteVector& bytes) {
    auto frames = amqp::test::split_frames(bytes);
    REQUIRE(frames.size() == 1);
    return amqp::resume(st, Event::received(frames[0]));
  };

  SECTION("update-secret: sent on channel 0, the password follows, update-secret-ok reported") {
    std::error_code ec;
    amqp::update_secret(st, "new-token", "expiring", ec);
    REQUIRE_FALSE(ec);
    amqp::ConnectionUpdateSecret expected;
    expected.new_secret = "new-token";
    expected.reason = "expiring";
    CHECK(st.out.flatten() == amqp::test::method_frame(0, expected));
    CHECK(st.config.password == "new-token");
    CHECK(feed(amqp::test::method_frame(0, amqp::ConnectionUpdateSecretOk{})).kind == Kind::secret_updated);
    st.phase = amqp::ConnectionPhase::closed;
    amqp::update_secret(st, "other", "", ec);
    CHECK(ec == errc::invalid_state);
  }
  SECTION("blocked and unblocked") {
    amqp::ConnectionBlocked blocked;
    blocked.reason = "low on memory";
    CHECK(feed(amqp::test::method_frame(0, blocked)).kind == Kind::blocked);
    CHECK(st.blocked);
    CHECK(st.blocked_reason == "low on memory");
    CHECK(feed(amqp::test::method_frame(0, amqp::ConnectionUnblocked{})).kind == Kind::unblocked);
    CHECK_FALSE(st.blocked);
  }
  SECTION("server close: close-ok queued, reply code reported, text in diagnostics") {
    amqp::ConnectionClose close;
    close.reply_code = 320;
    close.reply_text = "CONNECTION_FORCED - broker forced connection closure";
    auto action = feed(amqp::test::method_frame(0, close));
    CHECK(action.kind == Kind::connection_closed);
    CHECK(action.ec == reply_code::connection_forced);
    CHECK(st.out.flatten() == amqp::test::method_frame(0, amqp::ConnectionCloseOk{}));
    CHECK(st.diagnostics.server_message() == "CONNECTION_FORCED - broker forced connection closure");
    CHECK(st.phase == amqp::ConnectionPhase::closed);
  }
  SECTION("heartbeat frames are fine on channel 0 only") {
    CHECK(feed(amqp::test::heartbeat_frame()) == Action::none());
    const ByteVector bad{8, 0, 1, 0, 0, 0, 0, 0xCE};
    auto action = feed(bad);
    CHECK(action.kind == Kind::protocol_error);
    CHECK(action.ec == errc::unexpected_frame);
    CHECK(amqp::reply_code_for(action.ec) == reply_code::unexpected_frame);
  }
  SECTION("content on channel 0 is a protocol error; other channels are not its business") {
    CHECK(feed(amqp::test::body_frame(0, "x")).kind == Kind::protocol_error);
    CHECK(feed(amqp::test::body_frame(3, "x")) == Action::none());
  }
  SECTION("ticks send heartbeats and detect a dead server") {
    const auto t0 = amqp::Heartbeat::clock::time_point() + 1h;
    st.heartbeat.start(60s, t0);
    CHECK(amqp::resume(st, Event::tick(t0 + 29s)) == Action::none());
    CHECK(st.out.empty());
    CHECK(amqp::resume(st, Event::tick(t0 + 30s)) == Action::none());
    CHECK(st.out.flatten() == amqp::test::heartbeat_frame());
    st.out.clear();
    CHECK(amqp::resume(st, Event::tick(t0 + 31s)) == Action::none());
    CHECK(st.out.empty());
    auto dead = amqp::resume(st, Event::tick(t0 + 120s));
    CHECK(dead.kind == Kind::protocol_error);
    CHECK(dead.ec == errc::heartbeat_timeout);
  }
}

namespace {

/// Feeds every frame in `bytes` to the channel and collects the actions that are not `none`.
std::vector<Action> feed(amqp::ChannelState& st, const ByteVector& bytes, const kincir::Bytes* source = nullptr) {
  amqp::test::record_frames_seed(bytes);
  if (st.id == 1 && st.phase != amqp::ChannelPhase::opening) {
    // The fuzzed client opens channel 1 after the handshake, then sees these frames.
    amqp::ConnectionStart start = server_start("PLAIN");
    amqp::test::record_seed(
        "connection",
        amqp::test::concat({amqp::test::method_frame(0, start), amqp::test::method_frame(0, server_tune()),
                            amqp::test::method_frame(0, amqp::ConnectionOpenOk{}),
                            amqp::test::method_frame(1, amqp::ChannelOpenOk{}), bytes}));
  }
  std::vector<Action> actions;
  for (const auto& frame : amqp::test::split_frames(bytes)) {
    auto action = amqp::resume(st, Event::received(frame, source));
    if (action.kind != Kind::none) actions.push_back(action);
  }
  return actions;
}

ByteVector take_output(amqp::ChannelState& st) {
  ByteVector out = st.out.flatten();
  st.out.clear();
  return out;
}

amqp::ChannelState open_channel(std::uint16_t id = 1, std::uint32_t frame_max = 131072) {
  amqp::ChannelState st(id, frame_max);
  std::error_code ec;
  amqp::open_channel(st, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(take_output(st) == amqp::test::method_frame(id, amqp::ChannelOpen{}));
  auto actions = feed(st, amqp::test::method_frame(id, amqp::ChannelOpenOk{}));
  REQUIRE(actions.size() == 1);
  REQUIRE(actions[0].kind == Kind::reply);
  REQUIRE(st.phase == amqp::ChannelPhase::open);
  return st;
}

amqp::ChannelClose server_channel_close(std::uint16_t code, std::string text, std::uint16_t class_id = 0,
                                        std::uint16_t method_id = 0) {
  amqp::ChannelClose close;
  close.reply_code = code;
  close.reply_text = std::move(text);
  close.class_id = class_id;
  close.method_id = method_id;
  return close;
}

}  // namespace

TEST_CASE("channel: open, pipelined calls answered in order", "[amqp][channel]") {
  auto st = open_channel(7);
  std::error_code ec;
  amqp::QueueDeclare declare;
  declare.queue = "q";
  amqp::QueueBind bind;
  bind.queue = "q";
  bind.exchange = "ex";
  amqp::BasicQos qos;
  qos.prefetch_count = 1000;
  amqp::ExchangeDeclare nowait;
  nowait.exchange = "ex";
  nowait.nowait = true;
  amqp::send_method(st, declare, ec);
  amqp::send_method(st, nowait, ec);
  amqp::send_method(st, bind, ec);
  amqp::send_method(st, qos, ec);
  REQUIRE_FALSE(ec);
  CHECK(take_output(st) ==
        amqp::test::concat({amqp::test::method_frame(7, declare), amqp::test::method_frame(7, nowait),
                            amqp::test::method_frame(7, bind), amqp::test::method_frame(7, qos)}));
  REQUIRE(st.pending.size() == 3);  // no-wait has no reply

  SECTION("replies in order") {
    amqp::QueueDeclareOk declare_ok;
    declare_ok.queue = "q";
    declare_ok.message_count = 5;
    auto actions = feed(st, amqp::test::method_frame(7, declare_ok));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].kind == Kind::reply);
    CHECK(std::get<amqp::QueueDeclareOk>(st.reply).message_count == 5);
    CHECK(feed(st, amqp::test::method_frame(7, amqp::QueueBindOk{}))[0].kind == Kind::reply);
    CHECK(feed(st, amqp::test::method_frame(7, amqp::BasicQosOk{}))[0].kind == Kind::reply);
    CHECK(st.pending.empty());
  }
  SECTION("a reply out of order is a protocol error") {
    auto actions = feed(st, amqp::test::method_frame(7, amqp::QueueBindOk{}));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].kind == Kind::protocol_error);
    CHECK(actions[0].ec == errc::unexpected_frame);
  }
  SECTION("a frame for another channel is a protocol error") {
    auto actions = feed(st, amqp::test::method_frame(8, amqp::QueueDeclareOk{}));
    CHECK(actions.at(0).kind == Kind::protocol_error);
  }
}

TEST_CASE("channel: soft errors close only the channel", "[amqp][channel]") {
  auto st = open_channel(2);
  std::error_code ec;
  amqp::QueueDeclare passive;
  passive.queue = "missing";
  passive.passive = true;
  amqp::send_method(st, passive, ec);
  take_output(st);

  auto actions = feed(st, amqp::test::method_frame(
                              2, server_channel_close(404, "NOT_FOUND - no queue 'missing' in vhost '/'", 50, 10)));
  REQUIRE(actions.size() == 1);
  CHECK(actions[0].kind == Kind::channel_closed);
  CHECK(actions[0].ec == reply_code::not_found);
  CHECK(kincir::rabbitmq::is_soft_error(static_cast<reply_code>(actions[0].ec.value())));
  CHECK(take_output(st) == amqp::test::method_frame(2, amqp::ChannelCloseOk{}));
  CHECK(st.diagnostics.server_message() == "NOT_FOUND - no queue 'missing' in vhost '/'");
  CHECK(st.diagnostics.class_id() == 50);
  CHECK(st.pending.empty());
  CHECK(st.phase == amqp::ChannelPhase::closed);

  // Closed: operations fail without writing; the channel can be opened again.
  amqp::send_method(st, amqp::BasicQos{}, ec);
  CHECK(ec == errc::channel_closed);
  CHECK(st.out.empty());
  amqp::open_channel(st, ec);
  CHECK_FALSE(ec);
  CHECK(st.phase == amqp::ChannelPhase::opening);
  amqp::send_method(st, amqp::BasicQos{}, ec);
  CHECK(ec == errc::invalid_state);
}

TEST_CASE("channel: client close discards everything until close-ok", "[amqp][channel]") {
  auto st = open_channel(3);
  std::error_code ec;
  amqp::close_channel(st, ec);
  REQUIRE_FALSE(ec);
  CHECK(take_output(st) == amqp::test::method_frame(3, server_channel_close(200, "")));
  CHECK(st.phase == amqp::ChannelPhase::closing);

  amqp::BasicDeliver deliver;
  deliver.consumer_tag = "c";
  deliver.delivery_tag = 9;
  // A delivery in flight is dropped with its content frames.
  CHECK(feed(st, amqp::test::concat({amqp::test::method_frame(3, deliver), amqp::test::header_frame(3, 2),
                                     amqp::test::body_frame(3, "hi")}))
            .empty());
  auto actions = feed(st, amqp::test::method_frame(3, amqp::ChannelCloseOk{}));
  REQUIRE(actions.size() == 1);
  CHECK(actions[0].kind == Kind::channel_closed);
  CHECK_FALSE(actions[0].ec);
  CHECK(st.phase == amqp::ChannelPhase::closed);
  CHECK(st.out.empty());
}

TEST_CASE("channel: the server's close crossing ours is answered and the channel stays closing", "[amqp][channel]") {
  // The sequence RabbitMQ 3.10.8 produced: we send channel.close while the broker closes the
  // same channel for an error; it sends channel.close(404), then the close-ok for ours.
  auto st = open_channel(5);
  std::error_code ec;
  amqp::close_channel(st, ec);
  REQUIRE_FALSE(ec);
  CHECK(take_output(st) == amqp::test::method_frame(5, server_channel_close(200, "")));

  const std::string text = "NOT_FOUND - no exchange 'missing' in vhost '/'";
  auto actions = feed(st, amqp::test::method_frame(5, server_channel_close(404, text, 60, 40)));
  CHECK(actions.empty());  // no protocol_error, and not closed yet
  CHECK(take_output(st) == amqp::test::method_frame(5, amqp::ChannelCloseOk{}));
  CHECK(st.phase == amqp::ChannelPhase::closing);
  CHECK(st.diagnostics.server_message() == text);

  // Our close-ok has not arrived: the channel id is not free.
  amqp::open_channel(st, ec);
  CHECK(ec == errc::invalid_state);
  amqp::send_method(st, amqp::BasicQos{}, ec);
  CHECK(ec == errc::channel_closed);
  CHECK(st.out.empty());

  actions = feed(st, amqp::test::method_frame(5, amqp::ChannelCloseOk{}));
  REQUIRE(actions.size() == 1);
  CHECK(actions[0].kind == Kind::channel_closed);
  CHECK(actions[0].ec == reply_code::not_found);
  CHECK(st.error == reply_code::not_found);
  CHECK(st.phase == amqp::ChannelPhase::closed);
  CHECK(st.diagnostics.server_message() == text);
  CHECK(st.diagnostics.class_id() == 60);
  CHECK(st.diagnostics.method_id() == 40);
  CHECK(st.out.empty());

  // Now the id can be reused.
  amqp::open_channel(st, ec);
  CHECK_FALSE(ec);
  CHECK(take_output(st) == amqp::test::method_frame(5, amqp::ChannelOpen{}));
  CHECK(st.diagnostics.server_message().empty());
}

TEST_CASE("channel: what may arrive while closing", "[amqp][channel]") {
  auto st = open_channel(1);
  std::error_code ec;
  amqp::send_method(st, amqp::ConfirmSelect{}, ec);
  feed(st, amqp::test::method_frame(1, amqp::ConfirmSelectOk{}));
  for (int i = 0; i < 3; ++i) amqp::publish(st, amqp::BasicPublish{}, {}, {}, ec);
  amqp::send_method(st, amqp::QueueDeclare{}, ec);
  REQUIRE(st.pending.size() == 1);
  amqp::close_channel(st, ec);
  REQUIRE_FALSE(ec);
  take_output(st);
  amqp::BasicDeliver deliver;
  deliver.delivery_tag = 4;
  amqp::BasicAck ack;
  ack.delivery_tag = 1;

  SECTION("only our close-ok: a clean close") {
    auto actions = feed(st, amqp::test::method_frame(1, amqp::ChannelCloseOk{}));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].kind == Kind::channel_closed);
    CHECK_FALSE(actions[0].ec);
    CHECK(st.diagnostics.server_message().empty());
    CHECK(st.settled == std::vector<amqp::TagRange>{{1, 3}});
    CHECK(st.out.empty());
    // A close after the close handshake completed is on a closed channel.
    actions = feed(st, amqp::test::method_frame(1, server_channel_close(404, "NOT_FOUND")));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].kind == Kind::protocol_error);
  }
  SECTION("frames before and after the server's close are discarded; confirms fail at our close-ok") {
    CHECK(feed(st, amqp::test::concat({amqp::test::method_frame(1, ack), amqp::test::method_frame(1, deliver),
                                       amqp::test::header_frame(1, 1), amqp::test::body_frame(1, "x")}))
              .empty());
    CHECK(feed(st, amqp::test::method_frame(
                       1, server_channel_close(406, "PRECONDITION_FAILED - unknown delivery tag 9", 60, 80)))
              .empty());
    CHECK(take_output(st) == amqp::test::method_frame(1, amqp::ChannelCloseOk{}));
    CHECK(st.settled.empty());
    CHECK(st.confirms.outstanding() == 3);  // the ack above was discarded
    CHECK(st.pending.size() == 1);
    CHECK(feed(st, amqp::test::method_frame(1, amqp::QueueDeclareOk{})).empty());
    auto actions = feed(st, amqp::test::method_frame(1, amqp::ChannelCloseOk{}));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].kind == Kind::channel_closed);
    CHECK(actions[0].ec == reply_code::precondition_failed);
    CHECK(st.settled == std::vector<amqp::TagRange>{{1, 3}});
    CHECK(st.pending.empty());
    CHECK(st.diagnostics.server_message() == "PRECONDITION_FAILED - unknown delivery tag 9");
  }
  SECTION("the server closing with 200 while we close: a clean close") {
    CHECK(feed(st, amqp::test::method_frame(1, server_channel_close(200, "Goodbye"))).empty());
    CHECK(take_output(st) == amqp::test::method_frame(1, amqp::ChannelCloseOk{}));
    auto actions = feed(st, amqp::test::method_frame(1, amqp::ChannelCloseOk{}));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].kind == Kind::channel_closed);
    CHECK_FALSE(actions[0].ec);
  }
  SECTION("a second close from the server is a protocol error") {
    CHECK(feed(st, amqp::test::method_frame(1, server_channel_close(404, "NOT_FOUND"))).empty());
    auto actions = feed(st, amqp::test::method_frame(1, server_channel_close(404, "NOT_FOUND")));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].kind == Kind::protocol_error);
    CHECK(actions[0].ec == errc::unexpected_frame);
  }
  SECTION("the connection fails before our close-ok") {
    CHECK(feed(st, amqp::test::method_frame(1, server_channel_close(404, "NOT_FOUND"))).empty());
    auto action = amqp::resume(st, Event::failed(amqp::test::network_error()));
    CHECK(action.kind == Kind::channel_closed);
    CHECK(action.ec == amqp::test::network_error());
    CHECK(st.settled == std::vector<amqp::TagRange>{{1, 3}});
    CHECK(st.phase == amqp::ChannelPhase::closed);
    amqp::open_channel(st, ec);
    CHECK_FALSE(ec);
  }
}

TEST_CASE("publisher confirms: tags, multiple, out of order, nacks", "[amqp][publish]") {
  auto st = open_channel(1);
  std::error_code ec;
  amqp::send_method(st, amqp::ConfirmSelect{}, ec);
  take_output(st);
  REQUIRE(feed(st, amqp::test::method_frame(1, amqp::ConfirmSelectOk{})).at(0).kind == Kind::reply);
  REQUIRE(st.confirm_mode);

  amqp::BasicPublish publish;
  publish.exchange = "ex";
  const std::string body = "payload";
  const auto span = std::span(reinterpret_cast<const std::uint8_t*>(body.data()), body.size());
  for (std::uint64_t expected = 1; expected <= 6; ++expected) {
    CHECK(amqp::publish(st, publish, {}, span, ec) == expected);
    REQUIRE_FALSE(ec);
  }
  CHECK(st.confirms.outstanding() == 6);
  const auto wire = take_output(st);
  CHECK(amqp::test::split_frames(wire).size() == 18);  // method, header, body per publish

  auto ack = [](std::uint64_t tag, bool multiple) {
    amqp::BasicAck m;
    m.delivery_tag = tag;
    m.multiple = multiple;
    return amqp::test::method_frame(1, m);
  };

  // Out-of-order single acks, then a multiple ack covering what is left below it.
  auto a = feed(st, ack(3, false));
  REQUIRE(a.size() == 1);
  CHECK(a[0].kind == Kind::confirm);
  CHECK_FALSE(a[0].ec);
  CHECK(st.settled == std::vector<amqp::TagRange>{{3, 3}});
  feed(st, ack(1, false));
  CHECK(st.settled == std::vector<amqp::TagRange>{{1, 1}});
  a = feed(st, ack(5, true));
  CHECK(st.settled == std::vector<amqp::TagRange>{{2, 2}, {4, 5}});
  // Acking a settled or unknown tag settles nothing.
  CHECK(feed(st, ack(3, false)).empty());
  CHECK(feed(st, ack(5, true)).empty());

  amqp::BasicNack nack;
  nack.delivery_tag = 6;
  a = feed(st, amqp::test::method_frame(1, nack));
  REQUIRE(a.size() == 1);
  CHECK(a[0].kind == Kind::confirm);
  CHECK(a[0].ec == errc::message_nacked);
  CHECK(st.settled == std::vector<amqp::TagRange>{{6, 6}});
  CHECK(st.confirms.outstanding() == 0);
}

TEST_CASE("publisher confirms: basic.return comes before the ack", "[amqp][publish]") {
  auto st = open_channel(1);
  std::error_code ec;
  amqp::send_method(st, amqp::ConfirmSelect{}, ec);
  take_output(st);
  feed(st, amqp::test::method_frame(1, amqp::ConfirmSelectOk{}));
  amqp::BasicPublish publish;
  publish.exchange = "ex";
  publish.routing_key = "nowhere";
  publish.mandatory = true;
  amqp::BasicProperties props;
  props.message_id = "m-1";
  const std::string body = "lost";
  const auto tag =
      amqp::publish(st, publish, props, std::span(reinterpret_cast<const std::uint8_t*>(body.data()), body.size()), ec);
  REQUIRE(tag == 1);

  amqp::BasicReturn ret;
  ret.reply_code = 312;
  ret.reply_text = "NO_ROUTE";
  ret.exchange = "ex";
  ret.routing_key = "nowhere";
  amqp::BasicAck ack;
  ack.delivery_tag = 1;
  auto actions = feed(st, amqp::test::concat({amqp::test::method_frame(1, ret), amqp::test::header_frame(1, 4, props),
                                              amqp::test::body_frame(1, "lost"), amqp::test::method_frame(1, ack)}));
  REQUIRE(actions.size() == 2);
  CHECK(actions[0].kind == Kind::returned);
  CHECK(actions[1].kind == Kind::confirm);
  CHECK(st.returned.reply_code == 312);
  CHECK(st.returned.routing_key == "nowhere");
  CHECK(st.returned.properties.message_id == "m-1");
  CHECK(st.returned.body.view() == "lost");
}

TEST_CASE("publisher confirms: every pending confirm fails when the channel closes", "[amqp][publish]") {
  auto st = open_channel(1);
  std::error_code ec;
  amqp::send_method(st, amqp::ConfirmSelect{}, ec);
  feed(st, amqp::test::method_frame(1, amqp::ConfirmSelectOk{}));
  for (int i = 0; i < 5; ++i) amqp::publish(st, amqp::BasicPublish{}, {}, {}, ec);
  amqp::BasicAck ack;
  ack.delivery_tag = 2;
  feed(st, amqp::test::method_frame(1, ack));
  take_output(st);

  SECTION("closed by the server") {
    auto actions = feed(st, amqp::test::method_frame(1, server_channel_close(406, "PRECONDITION_FAILED")));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].kind == Kind::channel_closed);
    CHECK(actions[0].ec == reply_code::precondition_failed);
    CHECK(st.settled == std::vector<amqp::TagRange>{{1, 1}, {3, 5}});
  }
  SECTION("the connection failed") {
    auto action = amqp::resume(st, Event::failed(amqp::test::network_error()));
    CHECK(action.kind == Kind::channel_closed);
    CHECK(action.ec == amqp::test::network_error());
    CHECK(st.settled == std::vector<amqp::TagRange>{{1, 1}, {3, 5}});
  }
  CHECK(st.confirms.outstanding() == 0);
  amqp::publish(st, amqp::BasicPublish{}, {}, {}, ec);
  CHECK(ec == errc::channel_closed);
}

TEST_CASE("publish scenario with a transport failure at every step", "[amqp][publish]") {
  // Steps: select-ok, then publish/ack pairs. Wherever the transport fails, every tag is
  // settled exactly once: by an ack before the failure or by the failure itself.
  const int kPublishes = 4;
  for (int fail_at = 0; fail_at <= 2 * kPublishes + 1; ++fail_at) {
    INFO("transport fails at step " << fail_at);
    auto st = open_channel(1);
    std::error_code ec;
    std::vector<int> settled(kPublishes + 1, 0);
    auto count = [&settled, &st] {
      for (auto r : st.settled)
        for (auto t = r.first; t <= r.last; ++t) ++settled.at(t);
    };
    amqp::send_method(st, amqp::ConfirmSelect{}, ec);
    int step = 0;
    bool failed = false;
    auto next_step = [&]() {
      if (step++ != fail_at) return false;
      auto action = amqp::resume(st, Event::failed(amqp::test::network_error()));
      CHECK(action.kind == Kind::channel_closed);
      count();
      failed = true;
      return true;
    };
    if (!next_step()) feed(st, amqp::test::method_frame(1, amqp::ConfirmSelectOk{}));
    for (int i = 1; i <= kPublishes && !failed; ++i) {
      if (next_step()) break;
      CHECK(amqp::publish(st, amqp::BasicPublish{}, {}, {}, ec) == static_cast<std::uint64_t>(i));
      if (next_step()) break;
      if (i % 2 == 0) {  // ack two at a time
        amqp::BasicAck ack;
        ack.delivery_tag = static_cast<std::uint64_t>(i);
        ack.multiple = true;
        feed(st, amqp::test::method_frame(1, ack));
        count();
      }
    }
    if (!failed) {
      amqp::resume(st, Event::failed(amqp::test::network_error()));
      count();
    }
    for (int t = 1; t <= kPublishes; ++t) {
      INFO("tag " << t);
      // A tag that was published is settled once; one that was not is never reported.
      CHECK(settled[static_cast<std::size_t>(t)] <= 1);
    }
    std::uint64_t published = st.confirms.next_tag() - 1;
    for (std::uint64_t t = 1; t <= published; ++t) CHECK(settled[t] == 1);
  }
}

TEST_CASE("consuming: qos, consume, deliveries reassembled, acks", "[amqp][consume]") {
  auto st = open_channel(4, 4096);
  std::error_code ec;
  amqp::BasicQos qos;
  qos.prefetch_count = 1000;
  amqp::BasicConsume consume;
  consume.queue = "jobs";
  amqp::send_method(st, qos, ec);
  amqp::send_method(st, consume, ec);
  take_output(st);
  CHECK(feed(st, amqp::test::method_frame(4, amqp::BasicQosOk{})).at(0).kind == Kind::reply);
  amqp::BasicConsumeOk consume_ok;
  consume_ok.consumer_tag = "amq.ctag-1";
  CHECK(feed(st, amqp::test::method_frame(4, consume_ok)).at(0).kind == Kind::reply);
  CHECK(std::get<amqp::BasicConsumeOk>(st.reply).consumer_tag == "amq.ctag-1");

  amqp::BasicDeliver deliver;
  deliver.consumer_tag = "amq.ctag-1";
  deliver.delivery_tag = 42;
  deliver.redelivered = true;
  deliver.exchange = "ex";
  deliver.routing_key = "rk";
  amqp::BasicProperties props;
  props.headers = amqp::FieldTable{{"x-delivery-count", std::int64_t{3}}};

  SECTION("a body across three frames") {
    const std::string body(10000, 'z');
    auto actions = feed(
        st, amqp::test::concat({amqp::test::method_frame(4, deliver), amqp::test::header_frame(4, body.size(), props),
                                amqp::test::body_frame(4, std::string_view(body).substr(0, 4088)),
                                amqp::test::body_frame(4, std::string_view(body).substr(4088, 4088)),
                                amqp::test::body_frame(4, std::string_view(body).substr(8176))}));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].kind == Kind::delivery);
    CHECK(st.delivery.consumer_tag == "amq.ctag-1");
    CHECK(st.delivery.delivery_tag == 42);
    CHECK(st.delivery.redelivered);
    CHECK(st.delivery.routing_key == "rk");
    CHECK(st.delivery.properties == props);
    CHECK(st.delivery.body.view() == body);
  }
  SECTION("a body in one frame is not copied") {
    const kincir::Bytes read_buffer(amqp::test::concat(
        {amqp::test::method_frame(4, deliver), amqp::test::header_frame(4, 5), amqp::test::body_frame(4, "hello")}));
    const ByteVector view(read_buffer.begin(), read_buffer.end());
    amqp::FrameReader reader(4096);
    std::span<const std::uint8_t> rest = read_buffer.span();
    std::vector<Action> actions;
    while (!rest.empty()) {
      auto r = reader.parse(rest, ec);
      REQUIRE(r.status == amqp::ParseStatus::complete);
      auto action = amqp::resume(st, Event::received(r.frame, &read_buffer));
      if (action.kind != Kind::none) actions.push_back(action);
      rest = rest.subspan(r.size);
    }
    REQUIRE(actions.size() == 1);
    CHECK(st.delivery.body.view() == "hello");
    CHECK(st.delivery.body.data() >= read_buffer.data());
    CHECK(st.delivery.body.data() < read_buffer.data() + read_buffer.size());
  }
  SECTION("an empty body completes at the header") {
    auto actions = feed(st, amqp::test::concat({amqp::test::method_frame(4, deliver), amqp::test::header_frame(4, 0)}));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].kind == Kind::delivery);
    CHECK(st.delivery.body.empty());
  }
  SECTION("ack, nack, reject") {
    amqp::ack(st, 42, false, ec);
    amqp::nack(st, 43, true, false, ec);
    amqp::reject(st, 44, true, ec);
    REQUIRE_FALSE(ec);
    const auto frames_bytes = take_output(st);
    const auto frames = amqp::test::split_frames(frames_bytes);
    REQUIRE(frames.size() == 3);
    CHECK(ByteVector(frames[0].payload.begin(), frames[0].payload.end()) ==
          ByteVector{0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 42, 0});
    CHECK(ByteVector(frames[1].payload.begin(), frames[1].payload.end()) ==
          ByteVector{0, 60, 0, 120, 0, 0, 0, 0, 0, 0, 0, 43, 1});  // multiple, no requeue
    CHECK(ByteVector(frames[2].payload.begin(), frames[2].payload.end()) ==
          ByteVector{0, 60, 0, 90, 0, 0, 0, 0, 0, 0, 0, 44, 1});
    CHECK(st.pending.empty());
  }
  SECTION("server-side cancel gets a cancel-ok and is reported") {
    amqp::BasicCancel cancel;
    cancel.consumer_tag = "amq.ctag-1";
    auto actions = feed(st, amqp::test::method_frame(4, cancel));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].kind == Kind::consumer_cancelled);
    CHECK(st.cancelled_consumer == "amq.ctag-1");
    amqp::BasicCancelOk ok;
    ok.consumer_tag = "amq.ctag-1";
    CHECK(take_output(st) == amqp::test::method_frame(4, ok));
  }
  SECTION("a stream of deliveries: each replaces every field, storage is reused") {
    // The properties are decoded in place into st.delivery and the method's strings trade
    // storage with a scratch: a property absent from the next message must not survive.
    amqp::BasicProperties first;
    first.message_id = std::string(36, 'a');
    first.timestamp = 1234;
    first.headers = amqp::FieldTable{{"k", std::string("v")}};
    first.correlation_id = "corr";
    deliver.consumer_tag = "amq.ctag-0123456789abcdefghijkl";  // longer than any small-string buffer
    deliver.routing_key = "kincir.bench.0123456789";
    auto actions =
        feed(st, amqp::test::concat({amqp::test::method_frame(4, deliver), amqp::test::header_frame(4, 3, first),
                                     amqp::test::body_frame(4, "one")}));
    REQUIRE(actions.size() == 1);
    CHECK(st.delivery.properties == first);
    CHECK(st.delivery.body.view() == "one");
    const char* id_storage = st.delivery.properties.message_id->data();

    amqp::BasicProperties second;
    second.message_id = std::string(36, 'b');
    second.delivery_mode = 2;
    deliver.delivery_tag = 43;
    deliver.redelivered = false;
    deliver.exchange = "";
    actions = feed(st, amqp::test::concat({amqp::test::method_frame(4, deliver), amqp::test::header_frame(4, 3, second),
                                           amqp::test::body_frame(4, "two")}));
    REQUIRE(actions.size() == 1);
    CHECK(st.delivery.properties == second);                         // headers, timestamp, correlation-id gone
    CHECK(st.delivery.properties.message_id->data() == id_storage);  // decoded into the same string
    CHECK(st.delivery.consumer_tag == deliver.consumer_tag);
    CHECK(st.delivery.delivery_tag == 43);
    CHECK_FALSE(st.delivery.redelivered);
    CHECK(st.delivery.exchange.empty());
    CHECK(st.delivery.routing_key == deliver.routing_key);
    CHECK(st.delivery.body.view() == "two");

    // Two method strings alternate between the delivery and the scratch: the third delivery's
    // routing key lands in the first one's storage again.
    const char* key_storage = st.delivery.routing_key.data();
    actions = feed(st, amqp::test::concat({amqp::test::method_frame(4, deliver), amqp::test::header_frame(4, 0)}));
    REQUIRE(actions.size() == 1);
    CHECK(st.delivery.routing_key == deliver.routing_key);
    CHECK(st.delivery.properties == amqp::BasicProperties{});
    actions = feed(st, amqp::test::concat({amqp::test::method_frame(4, deliver), amqp::test::header_frame(4, 0)}));
    REQUIRE(actions.size() == 1);
    CHECK(st.delivery.routing_key.data() == key_storage);
  }
  SECTION("a malformed basic.deliver is a protocol error") {
    ByteVector frame = amqp::test::method_frame(4, deliver);
    frame.insert(frame.end() - 1, std::uint8_t{0});      // one byte too many before the frame end
    frame[6] = static_cast<std::uint8_t>(frame[6] + 1);  // the payload size's low byte
    const auto actions = feed(st, frame);
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].kind == Kind::protocol_error);
    CHECK(actions[0].ec == errc::malformed_method);
  }
  SECTION("content frames out of place are protocol errors") {
    CHECK(feed(st, amqp::test::header_frame(4, 1)).at(0).kind == Kind::protocol_error);
  }
  SECTION("a method in the middle of a content is a protocol error") {
    auto actions = feed(st, amqp::test::concat({amqp::test::method_frame(4, deliver), amqp::test::header_frame(4, 5),
                                                amqp::test::method_frame(4, amqp::BasicQosOk{})}));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].kind == Kind::protocol_error);
    CHECK(actions[0].ec == errc::unexpected_frame);
  }
}

TEST_CASE("basic.get: get-ok carries a message, get-empty does not", "[amqp][consume]") {
  auto st = open_channel(1);
  std::error_code ec;
  amqp::BasicGet get;
  get.queue = "q";
  amqp::send_method(st, get, ec);
  amqp::send_method(st, get, ec);
  amqp::BasicGetOk ok;
  ok.delivery_tag = 1;
  ok.message_count = 7;
  auto actions = feed(st, amqp::test::concat({amqp::test::method_frame(1, ok), amqp::test::header_frame(1, 3),
                                              amqp::test::body_frame(1, "abc")}));
  REQUIRE(actions.size() == 1);
  CHECK(actions[0].kind == Kind::reply);
  CHECK(std::holds_alternative<amqp::BasicGetOk>(st.reply));
  CHECK(st.delivery.message_count == 7);
  CHECK(st.delivery.body.view() == "abc");
  actions = feed(st, amqp::test::method_frame(1, amqp::BasicGetEmpty{}));
  REQUIRE(actions.size() == 1);
  CHECK(std::holds_alternative<amqp::BasicGetEmpty>(st.reply));
  CHECK(st.pending.empty());
}
