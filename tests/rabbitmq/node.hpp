// The test's RabbitMQ node as the I/O tests use it: a config for it, names no earlier run used,
// polling until something holds. The node is named by node_uri() (broker_ctl.hpp).
#pragma once

#include <kincir/core/uuid.hpp>        // unique names
#include <kincir/rabbitmq/config.hpp>  // RabbitMQConfig

#include <chrono>  // deadlines
#include <string>  // names
#include <thread>  // polling

#include "broker_ctl.hpp"

namespace kincir::test {

/// RabbitMQConfig::for_testing() for the test's node.
inline rabbitmq::RabbitMQConfig node() {
  rabbitmq::RabbitMQConfig c = rabbitmq::RabbitMQConfig::for_testing();
  c.apply_uri(node_uri());
  return c;
}

/// `base` with a random suffix: durable leftovers of an earlier run never meet this one.
inline std::string fresh(const std::string& base) { return base + "." + Uuid::new_v4().to_string().substr(0, 8); }

/// Polls `pred` every 20 ms until it holds (true) or `limit` has passed (false).
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

}  // namespace kincir::test
