// TLS (amqps): URI options ([unit]) and, against the test node's TLS listener ([broker]; broker.sh
// makes a CA, a server certificate for "localhost" only and a client certificate with openssl):
// verification on by default, the host name check, the CA file, a client certificate, recovery
// over TLS. Built with KINCIR_RABBITMQ_TLS=1 where OpenSSL is found; without it, amqps fails with
// errc::tls_unavailable.
#include <kincir/rabbitmq/publisher.hpp>   // RabbitMQPublisher
#include <kincir/rabbitmq/subscriber.hpp>  // RabbitMQSubscriber

#include <array>       // ctl output
#include <chrono>      // deadlines
#include <cstdio>      // popen
#include <cstdlib>     // std::getenv
#include <functional>  // cleanup
#include <sstream>     // ctl output lines
#include <string>      // names
#include <thread>      // polling

#include "support/catch.hpp"

using namespace std::chrono_literals;
using kincir::Message;
using kincir::rabbitmq::Connection;
using kincir::rabbitmq::RabbitMQConfig;
using kincir::rabbitmq::RabbitMQPublisher;
using kincir::rabbitmq::RabbitMQSubscriber;

// A namespace of its own: the files of this binary may be compiled as one unit.
namespace tls_test {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read once per test
  return v != nullptr ? v : "";
}

/// amqps to the test node's TLS listener on `host`, with `query` appended.
RabbitMQConfig tls_config(const std::string& host, const std::string& query) {
  RabbitMQConfig c = RabbitMQConfig::for_testing();
  c.apply_uri("amqps://guest:guest@" + host + ":" + env("KINCIR_RABBITMQ_TLS_PORT") + "/" +
              (query.empty() ? "" : "?" + query));
  c.connection.vhost = "/";
  return c;
}

std::string cert(const std::string& file) { return env("KINCIR_RABBITMQ_TLS_DIR") + "/" + file; }

std::string open_error(const RabbitMQConfig& c) {
  try {
    Connection::open(c);
  } catch (const std::exception& e) {
    return e.what();
  }
  return {};
}

/// rabbitmqctl list_connections shows a connection of `user`.
bool ctl_output_has_user(const std::string& ctl, const std::string& user) {
  std::string out;
  FILE* p = popen((ctl + " list_connections -q user 2>&1").c_str(), "r");  // NOLINT(cert-env33-c)
  if (p == nullptr) return false;
  std::array<char, 512> buf{};
  while (std::fgets(buf.data(), static_cast<int>(buf.size()), p) != nullptr) out += buf.data();
  pclose(p);
  return out.find(user) != std::string::npos;
}

int close_connections_named(const std::string& name) {
  const std::string ctl = env("KINCIR_RABBITMQ_CTL");
  std::string out;
  FILE* p = popen((ctl + " list_connections -q pid client_properties 2>&1").c_str(), "r");  // NOLINT(cert-env33-c)
  if (p == nullptr) return 0;
  std::array<char, 512> buf{};
  while (std::fgets(buf.data(), static_cast<int>(buf.size()), p) != nullptr) out += buf.data();
  pclose(p);
  std::istringstream lines(out);
  int closed = 0;
  for (std::string line; std::getline(lines, line);) {
    const auto begin = line.find('<');
    const auto end = line.find('>');
    if (line.find("\"" + name + "\"") == std::string::npos || begin == std::string::npos || end == std::string::npos)
      continue;
    const std::string command = ctl + " close_connection '" + line.substr(begin, end - begin + 1) + "' test >/dev/null";
    if (std::system(command.c_str()) == 0) ++closed;  // NOLINT(cert-env33-c,concurrency-mt-unsafe): test script
  }
  return closed;
}

}  // namespace

TEST_CASE("amqps URI: port 5671, TLS options", "[unit][uri][tls]") {
  const auto c = RabbitMQConfig::from_uri(
      "amqps://u:secret@broker/vh?cacertfile=%2Fetc%2Fca.pem&certfile=c.pem&keyfile=k.pem&server_name_indication=mq."
      "example&verify=verify_peer");
  CHECK(c.tls.enabled);
  CHECK(c.endpoints[0].port == 5671);
  CHECK(c.tls.ca_file == "/etc/ca.pem");
  CHECK(c.tls.cert_file == "c.pem");
  CHECK(c.tls.key_file == "k.pem");
  CHECK(c.tls.server_name == "mq.example");
  CHECK(c.tls.verify_peer);
  CHECK(c.to_string().rfind("amqps://u:****@broker:5671/vh", 0) == 0);
  CHECK(c.to_string().find("secret") == std::string::npos);
  CHECK_FALSE(RabbitMQConfig::from_uri("amqps://h?verify=verify_none").tls.verify_peer);
  CHECK(RabbitMQConfig::from_uri("amqps://h").tls.verify_peer);  // on by default
  CHECK_FALSE(RabbitMQConfig::from_uri("amqp://h").tls.enabled);
}

#if KINCIR_RABBITMQ_TLS

TEST_CASE("tls: amqps with the test CA, publish and consume", "[broker][tls]") {
  auto conn = Connection::open(tls_config("localhost", "cacertfile=" + cert("ca.pem")));
  const std::string topic = "tls." + kincir::Uuid::new_v4().to_string().substr(0, 8);
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic);
  RabbitMQPublisher pub(conn);
  std::vector<Message> batch;
  for (int i = 0; i < 200; ++i) batch.push_back(Message(std::string(3000, static_cast<char>('a' + i % 26))));
  pub.publish(topic, std::move(batch));
  for (int i = 0; i < 200; ++i) {
    auto m = sub.receive_for(5s);
    REQUIRE(m);
    CHECK(m->payload.size() == 3000);
    CHECK(m->payload.view()[0] == static_cast<char>('a' + i % 26));
  }
}

TEST_CASE("tls: verification is on by default, an unknown CA is refused", "[broker][tls]") {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string why = open_error(tls_config("localhost", ""));  // the system's CAs only
  INFO(why);
  CHECK(why.find("certificate verify failed") != std::string::npos);
  CHECK(why.find("guest:guest") == std::string::npos);
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
}

TEST_CASE("tls: the host name is checked; server_name_indication names another", "[broker][tls]") {
  // The server certificate names "localhost" only.
  const std::string why = open_error(tls_config("127.0.0.1", "cacertfile=" + cert("ca.pem")));
  INFO(why);
  CHECK(why.find("certificate verify failed") != std::string::npos);
  CHECK_NOTHROW(
      Connection::open(tls_config("127.0.0.1", "cacertfile=" + cert("ca.pem") + "&server_name_indication=localhost")));
  // Without verification anything goes (never the default).
  CHECK_NOTHROW(Connection::open(tls_config("127.0.0.1", "verify=verify_none")));
}

TEST_CASE("tls: a client certificate; a missing file is a clear error", "[broker][tls]") {
  CHECK_NOTHROW(Connection::open(tls_config("localhost", "cacertfile=" + cert("ca.pem") + "&certfile=" +
                                                             cert("client.pem") + "&keyfile=" + cert("client.key"))));
  const std::string why = open_error(tls_config("localhost", "cacertfile=/nonexistent/ca.pem"));
  INFO(why);
  CHECK(why.find("/nonexistent/ca.pem") != std::string::npos);
}

TEST_CASE("tls: a connection recovers over TLS", "[broker][tls][recovery]") {
  auto cfg = tls_config("localhost", "cacertfile=" + cert("ca.pem"));
  cfg.connection.connection_name = "kincir-tls-" + kincir::Uuid::new_v4().to_string().substr(0, 8);
  auto conn = Connection::open(cfg);
  const std::string topic = "tls-recover." + kincir::Uuid::new_v4().to_string().substr(0, 8);
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic, "g");
  RabbitMQPublisher pub(conn);
  REQUIRE(close_connections_named(cfg.connection.connection_name) == 1);
  const auto end = std::chrono::steady_clock::now() + 15s;
  while (conn->recovery_stats().recovered == 0 && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(20ms);
  REQUIRE(conn->recovery_stats().recovered == 1);
  pub.publish(topic, Message(std::string("after")));
  auto m = sub.receive_for(5s);
  REQUIRE(m);
  CHECK(std::string(m->payload.view()) == "after");
}

TEST_CASE("tls: SASL EXTERNAL logs in as the client certificate's common name", "[broker][tls][external]") {
  const std::string ctl = env("KINCIR_RABBITMQ_CTL");
  const auto run = [&ctl](const std::string& args) {
    return std::system((ctl + " " + args + " >/dev/null 2>&1").c_str());  // NOLINT(cert-env33-c,concurrency-mt-unsafe)
  };
  // The certificate's CN; its password is never used.
  REQUIRE(run("add_user kincir-client " + kincir::Uuid::new_v4().to_string()) == 0);
  struct Cleanup {
    std::function<int(const std::string&)> run;
    ~Cleanup() { run("delete_user kincir-client"); }
  } cleanup{run};
  REQUIRE(run("set_permissions -p / kincir-client '.*' '.*' '.*'") == 0);

  const std::string with_cert =
      "cacertfile=" + cert("ca.pem") + "&certfile=" + cert("client.pem") + "&keyfile=" + cert("client.key");
  auto cfg = tls_config("localhost", with_cert + "&auth_mechanism=external");
  cfg.connection.username = "ignored";
  cfg.connection.password = "never-sent";
  CHECK(cfg.connection.mechanism == kincir::rabbitmq::amqp::SaslMechanism::external);
  auto conn = Connection::open(cfg);
  const std::string topic = "external." + kincir::Uuid::new_v4().to_string().substr(0, 8);
  RabbitMQSubscriber sub(conn);
  sub.subscribe(topic);
  RabbitMQPublisher pub(conn);
  pub.publish(topic, Message(std::string("as kincir-client")));
  REQUIRE(sub.receive_for(5s));
  CHECK(ctl_output_has_user(ctl, "kincir-client"));

  // Without a client certificate there is no identity: refused.
  std::error_code ec;
  Connection::open(tls_config("localhost", "cacertfile=" + cert("ca.pem") + "&auth_mechanism=external"), ec);
  CHECK(ec);
}

#else

TEST_CASE("tls: without KINCIR_RABBITMQ_TLS amqps fails clearly", "[broker][tls]") {
  std::error_code ec;
  auto conn = Connection::open(RabbitMQConfig::from_uri("amqps://localhost:1"), ec);
  CHECK(ec == kincir::rabbitmq::errc::tls_unavailable);
}

#endif

}  // namespace tls_test
