// Helpers shared by the broker's tests: small messages that carry a number, and a config
// without a background maintenance thread.
#pragma once

#include <kincir/core/message.hpp>
#include <kincir/memory/config.hpp>

#include <chrono>  // cleanup_interval
#include <string>  // payloads
#include <vector>  // batches

namespace kincir::test {

inline Message text(const std::string& s) { return Message(std::string(s)); }

/// Messages whose payloads are "first", "first + 1", ... as decimal text.
inline std::vector<Message> numbered(int count, int first = 0) {
  std::vector<Message> batch;
  batch.reserve(static_cast<std::size_t>(count));
  for (int i = first; i < first + count; ++i) batch.push_back(text(std::to_string(i)));
  return batch;
}

inline int number(const Message& m) { return std::stoi(std::string(m.payload.view())); }

/// The default configuration without a maintenance thread (tests run a pass when they want one).
inline memory::BrokerConfig quiet_config() {
  memory::BrokerConfig c;
  c.cleanup_interval = std::chrono::milliseconds(0);
  return c;
}

}  // namespace kincir::test
