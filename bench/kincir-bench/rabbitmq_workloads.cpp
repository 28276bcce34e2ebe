// kincir-bench: the RabbitMQ rows, kincir's adapter against rabbitmq-c on a local node.
//
// Every repetition runs the workload through kincir and through rabbitmq-c, in an order rotated
// from one repetition to the next, on a queue declared (non-durable) and purged before each side:
// 1 KiB bodies on loopback, the default exchange, `message-id` and `timestamp` sent by both.
// Messages (and rabbitmq-c's message ids) are built inside the timed part, as a user builds them.
// CPU time is getrusage(RUSAGE_SELF) around each side: kincir does its socket work on its own I/O
// thread, so the calling thread's RUSAGE_THREAD would miss most of it; nothing else in this process
// runs while a side is timed, and the broker is another process, so RUSAGE_SELF is the client's
// cost.
#include "rabbitmq_workloads.hpp"

#include <sys/resource.h>  // getrusage

#include <algorithm>  // std::rotate
#include <chrono>     // wall time
#include <cstddef>    // std::size_t
#include <cstdint>    // tags
#include <cstdlib>    // std::system, std::getenv
#include <ctime>      // timestamps
#include <stdexcept>  // std::runtime_error
#include <string>     // names
#include <thread>     // publisher and consumer together
#include <utility>    // std::move
#include <vector>     // messages

#if KINCIR_BENCH_HAVE_RABBITMQ
#include <kincir/rabbitmq.hpp>
#endif

#if KINCIR_BENCH_HAVE_RABBITMQ && KINCIR_BENCH_HAVE_RABBITMQ_C
#include <amqp.h>             // rabbitmq-c
#include <amqp_tcp_socket.h>  // amqp_tcp_socket_new
#endif

namespace kincir_bench {
namespace {

RabbitMQOptions& options() {
  static RabbitMQOptions o;
  return o;
}

#if KINCIR_BENCH_HAVE_RABBITMQ

namespace rmq = kincir::rabbitmq;

constexpr std::size_t kBodySize = 1024;
constexpr std::size_t kCount = 20'000;  // messages per side and repetition
constexpr std::uint16_t kPrefetch = 1000;
// From the build (not passed straight to calls: clang-tidy 14 crashes lexing a command-line macro
// as a call argument).
constexpr const char* kBrokerSh = KINCIR_BENCH_BROKER_SH;
constexpr const char* kNodeDir = KINCIR_BENCH_NODE_DIR;

/// What one side of a repetition took.
struct Side {
  double seconds = 0;
  double cpu_us_per_msg = 0;
};

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

/// Times `body`, which moves kCount messages.
template <class Body>
Side measure(Body&& body) {
  const double cpu0 = cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  body();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Side{wall, (cpu_seconds() - cpu0) * 1e6 / static_cast<double>(kCount)};
}

// --- the node ------------------------------------------------------------------------------------

struct Node {
  std::string uri;
  std::string dir;  // non-empty: started here, stopped by stop()
  bool tried = false;
  std::string why_not;

  ~Node() { stop(); }

  void stop() {
    if (dir.empty()) return;
    const std::string cmd = "'" + std::string(kBrokerSh) + "' stop '" + dir + "' >/dev/null 2>&1";
    (void)std::system(cmd.c_str());  // NOLINT(cert-env33-c,concurrency-mt-unsafe): our own script
    dir.clear();
  }

  /// The node's ports come from KINCIR_RABBITMQ_PORT, _DIST_PORT and _EPMD_PORT (broker.sh's
  /// defaults otherwise); it never opens a TLS listener (an exported KINCIR_RABBITMQ_TLS_PORT
  /// belongs to the test node).
  std::string start() {
    if (tried) return why_not;
    tried = true;
    if (!options().uri.empty()) {
      uri = options().uri;
      return {};
    }
    const char* port = std::getenv("KINCIR_RABBITMQ_PORT");  // NOLINT(concurrency-mt-unsafe): single-threaded here
    const std::string amqp_port = port != nullptr && *port != '\0' ? port : "5673";
    const std::string node_dir = kNodeDir;
    const std::string cmd = "KINCIR_RABBITMQ_TLS_PORT= '" + std::string(kBrokerSh) + "' start '" + node_dir + "' >'" +
                            node_dir + ".log' 2>&1";
    if (std::system(cmd.c_str()) != 0) {  // NOLINT(cert-env33-c,concurrency-mt-unsafe): our own script
      why_not = "kincir-bench: RabbitMQ rows skipped: no broker could be started on 127.0.0.1:" + amqp_port + " (see " +
                node_dir + ".log; set KINCIR_RABBITMQ_PORT/_DIST_PORT/_EPMD_PORT or pass --rabbitmq-uri)";
      return why_not;
    }
    dir = node_dir;
    uri = "amqp://guest:guest@127.0.0.1:" + amqp_port;
    return {};
  }
};

Node& node() {
  static Node n;
  return n;
}

rmq::RabbitMQConfig kincir_config(std::size_t window) {
  rmq::RabbitMQConfig c;
  c.apply_uri(node().uri);
  c.topology.layout = rmq::Layout::queue_per_topic;
  c.topology.durable_queues = false;
  c.max_unconfirmed = window;
  c.max_unconfirmed_bytes = std::size_t{1} << 30;
  c.prefetch = kPrefetch;
  return c;
}

const std::string& queue_name() {
  static const std::string q = "kincir.bench." + kincir::Uuid::new_v4().to_string().substr(0, 8);
  return q;
}

/// Declares (non-durable) and purges the queue; deletes it with `remove`.
void reset_queue(bool remove = false) {
  auto conn = rmq::Connection::open(kincir_config(1));
  auto ch = conn->open_channel();
  if (remove) {
    rmq::amqp::QueueDelete del;
    del.queue = queue_name();
    ch->call(del);
  } else {
    rmq::amqp::QueueDeclare q;
    q.queue = queue_name();
    ch->call(q);
    rmq::amqp::QueuePurge purge;
    purge.queue = queue_name();
    ch->call(purge);
  }
  conn->close();
}

std::vector<kincir::Message> kincir_messages() {
  const kincir::Bytes body = kincir::Bytes::filled(kBodySize, 'x');
  std::vector<kincir::Message> v;
  v.reserve(kCount);
  for (std::size_t i = 0; i < kCount; ++i) v.emplace_back(body);
  return v;
}

void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(what);
}

// --- kincir --------------------------------------------------------------------------------------

Side kincir_publish(std::size_t window) {
  rmq::RabbitMQPublisher pub(rmq::Connection::open(kincir_config(window)));
  pub.publish(queue_name(), kincir::Message(std::string("warm-up")));     // channel, confirm.select, declare
  return measure([&] { pub.publish(queue_name(), kincir_messages()); });  // built in the timed part
}

void kincir_fill() {
  rmq::RabbitMQPublisher pub(rmq::Connection::open(kincir_config(1024)));
  pub.publish(queue_name(), kincir_messages());
}

Side kincir_consume() {
  rmq::RabbitMQSubscriber sub(kincir_config(1024));
  sub.subscribe(queue_name());
  std::size_t bad = 0;
  const Side s = measure([&] {
    for (std::size_t i = 0; i < kCount; ++i) bad += sub.receive().payload.size() != kBodySize ? 1 : 0;
  });
  check(bad == 0, "kincir consume: wrong body size");
  return s;
}

Side kincir_both() {
  rmq::RabbitMQSubscriber sub(kincir_config(1024));
  sub.subscribe(queue_name());
  rmq::RabbitMQPublisher pub(rmq::Connection::open(kincir_config(1024)));
  pub.publish(queue_name(), kincir::Message(std::string("warm-up")));
  (void)sub.receive();
  std::size_t bad = 0;
  const Side s = measure([&] {
    std::thread publisher([&] { pub.publish(queue_name(), kincir_messages()); });
    for (std::size_t i = 0; i < kCount; ++i) bad += sub.receive().payload.size() != kBodySize ? 1 : 0;
    publisher.join();
  });
  check(bad == 0, "kincir publish + consume: wrong body size");
  return s;
}

// --- rabbitmq-c ----------------------------------------------------------------------------------

#if KINCIR_BENCH_HAVE_RABBITMQ_C

void check_reply(amqp_rpc_reply_t r, const char* what) {
  if (r.reply_type != AMQP_RESPONSE_NORMAL) throw std::runtime_error(std::string("rabbitmq-c: ") + what + " failed");
}

/// One rabbitmq-c connection with channel 1 open (heartbeats off: it only runs them inside calls).
struct CConnection {
  amqp_connection_state_t conn = amqp_new_connection();

  CConnection() {
    const auto cfg = rmq::RabbitMQConfig::from_uri(node().uri);
    amqp_socket_t* socket = amqp_tcp_socket_new(conn);
    if (socket == nullptr || amqp_socket_open(socket, cfg.endpoints[0].host.c_str(), cfg.endpoints[0].port) != 0) {
      amqp_destroy_connection(conn);
      throw std::runtime_error("rabbitmq-c: cannot connect");
    }
    check_reply(amqp_login(conn, cfg.connection.vhost.c_str(), 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                           cfg.connection.username.c_str(), cfg.connection.password.c_str()),
                "login");
    amqp_channel_open(conn, 1);
    check_reply(amqp_get_rpc_reply(conn), "channel.open");
  }
  CConnection(const CConnection&) = delete;
  CConnection& operator=(const CConnection&) = delete;
  CConnection(CConnection&&) = delete;
  CConnection& operator=(CConnection&&) = delete;
  ~CConnection() {
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
  }
};

/// The properties kincir sends too: a message-id (a UUID's text) and a timestamp.
std::vector<std::string> c_message_ids() {
  std::vector<std::string> ids;
  ids.reserve(kCount);
  for (std::size_t i = 0; i < kCount; ++i) ids.push_back(kincir::Uuid::new_v4().to_string());
  return ids;
}

/// Publishes kCount messages with at most `window` unconfirmed; returns when all are confirmed.
void c_publish_all(CConnection& c, std::size_t window, const std::vector<std::string>& ids) {
  static const std::string body(kBodySize, 'x');
  std::uint64_t sent = 0;
  std::uint64_t confirmed = 0;  // every tag <= confirmed is settled (RabbitMQ confirms in order)
  const auto wait_confirm = [&c, &confirmed] {
    amqp_frame_t frame;
    if (amqp_simple_wait_frame(c.conn, &frame) != AMQP_STATUS_OK) throw std::runtime_error("rabbitmq-c: read failed");
    if (frame.frame_type != AMQP_FRAME_METHOD) return;
    if (frame.payload.method.id == AMQP_BASIC_ACK_METHOD) {
      const auto* ack = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
      confirmed = std::max(confirmed, ack->delivery_tag);
    } else if (frame.payload.method.id == AMQP_BASIC_NACK_METHOD) {
      const auto* nack = static_cast<amqp_basic_nack_t*>(frame.payload.method.decoded);
      confirmed = std::max(confirmed, nack->delivery_tag);
    }
  };
  const std::string& queue = queue_name();
  while (confirmed < kCount) {
    while (sent < kCount && sent - confirmed < window) {
      amqp_basic_properties_t props{};
      props._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
      props.message_id = amqp_cstring_bytes(ids[sent].c_str());
      props.timestamp = static_cast<std::uint64_t>(std::time(nullptr));
      if (amqp_basic_publish(c.conn, 1, amqp_empty_bytes, amqp_cstring_bytes(queue.c_str()), 0, 0, &props,
                             amqp_bytes_t{body.size(), const_cast<char*>(body.data())}) != AMQP_STATUS_OK)
        throw std::runtime_error("rabbitmq-c: publish failed");
      ++sent;
    }
    wait_confirm();
    while (amqp_frames_enqueued(c.conn) != 0 || amqp_data_in_buffer(c.conn) != 0) wait_confirm();
    amqp_maybe_release_buffers(c.conn);
  }
}

void c_confirm_select(CConnection& c) {
  amqp_confirm_select(c.conn, 1);
  check_reply(amqp_get_rpc_reply(c.conn), "confirm.select");
}

Side c_publish(std::size_t window) {
  CConnection c;
  c_confirm_select(c);
  return measure([&] { c_publish_all(c, window, c_message_ids()); });  // built in the timed part
}

/// Consumes kCount messages, acking each one (rabbitmq-c has no coalesced acks of its own).
std::size_t c_consume_all(CConnection& c) {
  amqp_basic_qos(c.conn, 1, 0, kPrefetch, 0);
  check_reply(amqp_get_rpc_reply(c.conn), "basic.qos");
  amqp_basic_consume(c.conn, 1, amqp_cstring_bytes(queue_name().c_str()), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
  check_reply(amqp_get_rpc_reply(c.conn), "basic.consume");
  std::size_t bad = 0;
  for (std::size_t i = 0; i < kCount; ++i) {
    amqp_envelope_t env;
    amqp_maybe_release_buffers(c.conn);
    check_reply(amqp_consume_message(c.conn, &env, nullptr, 0), "consume");
    bad += env.message.body.len != kBodySize ? 1 : 0;
    amqp_basic_ack(c.conn, 1, env.delivery_tag, 0);
    amqp_destroy_envelope(&env);
  }
  return bad;
}

Side c_consume() {
  CConnection c;
  std::size_t bad = 0;
  const Side s = measure([&] { bad = c_consume_all(c); });
  check(bad == 0, "rabbitmq-c consume: wrong body size");
  return s;
}

Side c_both() {
  CConnection consumer;
  CConnection producer;
  c_confirm_select(producer);
  std::size_t bad = 0;
  const Side s = measure([&] {
    std::thread publisher([&] { c_publish_all(producer, 1024, c_message_ids()); });
    bad = c_consume_all(consumer);
    publisher.join();
  });
  check(bad == 0, "rabbitmq-c publish + consume: wrong body size");
  return s;
}

#endif  // KINCIR_BENCH_HAVE_RABBITMQ_C

// --- the rows ------------------------------------------------------------------------------------

enum class Shape : std::uint8_t { publish128, publish1024, consume, both };

/// One side of a repetition, from a purged queue (filled first for `consume`).
Side run_side(Shape shape, bool kincir) {
  reset_queue();
  if (shape == Shape::consume) kincir_fill();
#if KINCIR_BENCH_HAVE_RABBITMQ_C
  if (!kincir) {
    switch (shape) {
      case Shape::publish128: return c_publish(128);
      case Shape::publish1024: return c_publish(1024);
      case Shape::consume: return c_consume();
      case Shape::both: return c_both();
    }
  }
#else
  (void)kincir;
#endif
  switch (shape) {
    case Shape::publish128: return kincir_publish(128);
    case Shape::publish1024: return kincir_publish(1024);
    case Shape::consume: return kincir_consume();
    case Shape::both: return kincir_both();
  }
  return {};
}

void rabbitmq_row(benchmark::State& state, Shape shape) {
  const std::size_t rep = on_repetition_start();
  for (auto _ : state) {
    std::vector<bool> order{true};  // true: kincir
    if (rabbitmq_peer_enabled()) order.push_back(false);
    std::rotate(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(rep % order.size()), order.end());
    for (const bool kincir : order) {
      const Side s = run_side(shape, kincir);
      if (kincir) {
        state.SetIterationTime(s.seconds);
        state.counters[kCpuPerMessage] = s.cpu_us_per_msg;
      } else {
        state.counters[std::string(kRabbitMQCName) + kPeerSecondsSuffix] = s.seconds;
        state.counters[std::string(kRabbitMQCName) + kCpuSuffix] = s.cpu_us_per_msg;
      }
    }
  }
  state.counters[kMessages] = static_cast<double>(kCount);
  state.counters[kDeliveries] = static_cast<double>(kCount);
  state.counters[kPayloadBytes] = static_cast<double>(kCount * kBodySize);
}

#endif  // KINCIR_BENCH_HAVE_RABBITMQ

}  // namespace

void set_rabbitmq_options(RabbitMQOptions o) { options() = std::move(o); }

bool rabbitmq_c_built_in() noexcept { return KINCIR_BENCH_HAVE_RABBITMQ != 0 && KINCIR_BENCH_HAVE_RABBITMQ_C != 0; }

bool rabbitmq_peer_enabled() noexcept { return rabbitmq_c_built_in() && options().peer; }

#if KINCIR_BENCH_HAVE_RABBITMQ

std::string rabbitmq_start() { return node().start(); }

void rabbitmq_stop() {
  if (!node().uri.empty() && node().why_not.empty()) {
    try {
      reset_queue(true);
    } catch (const std::exception&) {  // NOLINT(bugprone-empty-catch): the node is going away anyway
    }
  }
  node().stop();
}

std::vector<Workload> make_rabbitmq_workloads() {
  std::vector<Workload> w;
  const auto add = [&w](const char* name, const char* title, Shape shape) {
    w.push_back(Workload{name, "rabbitmq", title, Unit::messages, kBodySize, Tier::standard,
                         [shape](benchmark::State& s) { rabbitmq_row(s, shape); }});
  };
  add("rabbitmq/publish-128", "RabbitMQ: 1 publisher, confirms, at most 128 unconfirmed, 20 000 x 1 KiB",
      Shape::publish128);
  add("rabbitmq/publish-1024", "RabbitMQ: 1 publisher, confirms, at most 1024 unconfirmed, 20 000 x 1 KiB",
      Shape::publish1024);
  add("rabbitmq/consume", "RabbitMQ: 1 consumer, manual acks, prefetch 1000, 20 000 x 1 KiB waiting in the queue",
      Shape::consume);
  add("rabbitmq/both", "RabbitMQ: publisher (1024 unconfirmed) and consumer together, 20 000 x 1 KiB", Shape::both);
  return w;
}

#else

std::string rabbitmq_start() {
  return "kincir-bench: RabbitMQ rows skipped: built without kincir::rabbitmq (needs standalone Asio)";
}
void rabbitmq_stop() {}
std::vector<Workload> make_rabbitmq_workloads() { return {}; }

#endif

}  // namespace kincir_bench
