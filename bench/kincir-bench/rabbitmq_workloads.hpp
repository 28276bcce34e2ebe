// kincir-bench: the RabbitMQ rows. kincir's adapter and rabbitmq-c (librabbitmq) run the same
// workloads against one local RabbitMQ node in every repetition, in rotating order.
#pragma once

#include <string>  // options, reasons
#include <vector>  // the workload list

#include "workloads.hpp"

namespace kincir_bench {

/// The RabbitMQ workloads (group "rabbitmq", names "rabbitmq/..."). Each repetition sets the
/// iteration time and `cpu_us` (client CPU per message) for kincir, and `rabbitmq-c_s`,
/// `rabbitmq-c_cpu_us` for the peer when it is built in and not turned off.
std::vector<Workload> make_rabbitmq_workloads();

/// How the RabbitMQ rows run: `uri` an existing broker (empty: start a throw-away node with
/// tests/rabbitmq/broker.sh), `peer` also run rabbitmq-c.
struct RabbitMQOptions {
  std::string uri;
  bool peer = true;
};
void set_rabbitmq_options(RabbitMQOptions options);

/// Makes a broker available to the RabbitMQ rows: empty when ready, otherwise the one line that
/// says why they are skipped.
std::string rabbitmq_start();

/// Stops the node `rabbitmq_start` started, if any (also done at exit).
void rabbitmq_stop();

/// Whether the rows also run rabbitmq-c (built in and not turned off).
bool rabbitmq_peer_enabled() noexcept;

/// Whether this build has rabbitmq-c (Debian: librabbitmq-dev).
bool rabbitmq_c_built_in() noexcept;

/// The peer's name in counters and JSON, and its label in the table.
inline constexpr const char* kRabbitMQCName = "rabbitmq-c";
inline constexpr const char* kRabbitMQCLabel = "rabbitmq-c (librabbitmq), same workload";

/// Counter: client CPU time (user + system, every thread of this process) per message, in µs;
/// the peer's is `<peer>` + kCpuSuffix.
inline constexpr const char* kCpuPerMessage = "cpu_us";
inline constexpr const char* kCpuSuffix = "_cpu_us";

}  // namespace kincir_bench
