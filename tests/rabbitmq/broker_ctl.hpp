// The test's RabbitMQ node (tests/rabbitmq/broker.sh): `node_uri` names it; rabbitmqctl against
// it, for the tests that inject faults: `ctl` runs it (KINCIR_RABBITMQ_CTL names the command,
// broker.sh ctl DIR), `close_connections_named` closes the connections a client named (320
// CONNECTION_FORCED, as a broker restart would).
#pragma once

#include <array>    // command output
#include <cstdio>   // popen
#include <cstdlib>  // std::getenv
#include <sstream>  // output lines
#include <string>   // commands, output

#include "support/catch.hpp"

namespace kincir::test {

/// The test node's AMQP URI: KINCIR_RABBITMQ_URI if set and not empty (`broker.sh run DIR`, the
/// ctest commands, sets it), otherwise amqp://guest:guest@127.0.0.1:PORT with PORT from
/// KINCIR_RABBITMQ_PORT (default 5673), read when the test runs, as broker.sh does.
inline std::string node_uri() {
  const char* uri = std::getenv("KINCIR_RABBITMQ_URI");  // NOLINT(concurrency-mt-unsafe): nothing sets the environment
  if (uri != nullptr && *uri != '\0') return uri;
  const char* port = std::getenv("KINCIR_RABBITMQ_PORT");  // NOLINT(concurrency-mt-unsafe): as above
  return std::string("amqp://guest:guest@127.0.0.1:") + (port != nullptr && *port != '\0' ? port : "5673");
}

/// Runs `rabbitmqctl ARGS` on the test's node and returns what it printed (stdout and stderr).
/// Fails the test when KINCIR_RABBITMQ_CTL is not set.
inline std::string ctl(const std::string& args) {
  const char* ctl = std::getenv("KINCIR_RABBITMQ_CTL");  // NOLINT(concurrency-mt-unsafe): read on the test's thread
  if (ctl == nullptr) FAIL("KINCIR_RABBITMQ_CTL is not set (the ctest fixture sets it: broker.sh ctl DIR)");
  const std::string command = std::string(ctl) + " " + args + " 2>&1";
  std::string out;
  FILE* p = popen(command.c_str(), "r");  // NOLINT(cert-env33-c): the test's own script
  if (p == nullptr) FAIL("cannot run " << command);
  std::array<char, 512> buf{};
  while (std::fgets(buf.data(), static_cast<int>(buf.size()), p) != nullptr) out += buf.data();
  pclose(p);
  return out;
}

/// Closes the broker's connections whose client named itself `name` (the `connection_name`
/// client property) with 320 CONNECTION_FORCED and `reason`; returns how many.
inline int close_connections_named(const std::string& name, const std::string& reason = "kincir test") {
  std::istringstream lines(ctl("list_connections -q pid client_properties"));
  int closed = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.find("\"" + name + "\"") == std::string::npos) continue;
    const auto begin = line.find('<');
    const auto end = line.find('>');
    if (begin == std::string::npos || end == std::string::npos) continue;
    ctl("close_connection '" + line.substr(begin, end - begin + 1) + "' '" + reason + "'");
    ++closed;
  }
  return closed;
}

}  // namespace kincir::test
