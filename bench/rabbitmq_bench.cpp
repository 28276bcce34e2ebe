// kincir's RabbitMQ adapter against rabbitmq-c (librabbitmq) on a local RabbitMQ node: the same
// workloads through both clients in the same run, 1 KiB bodies on loopback.
//
//   rabbitmq_bench [--uri URI] [--messages N] [--runs R]
//
// Without --uri it starts a throw-away node with tests/rabbitmq/broker.sh (ports from
// KINCIR_RABBITMQ_PORT / _DIST_PORT / _EPMD_PORT, default 5683, 25683, 4383) and stops it at the
// end; when no broker can be started it prints one line and exits 0. Reports the median over R
// runs (alternating the clients) of messages per second and of client CPU time per message
// (getrusage of this process: every thread of the client, not the broker).
#include <kincir/rabbitmq.hpp>

#if KINCIR_BENCH_HAVE_RABBITMQ_C
#include <amqp.h>             // rabbitmq-c
#include <amqp_tcp_socket.h>  // amqp_tcp_socket_new
#endif

#include <sys/resource.h>  // getrusage

#include <algorithm>   // std::sort
#include <chrono>      // wall time
#include <cstdint>     // tags
#include <cstdio>      // std::printf
#include <cstdlib>     // std::system, setenv
#include <ctime>       // timestamps
#include <exception>   // std::exception
#include <functional>  // workloads
#include <stdexcept>   // std::runtime_error
#include <string>      // names
#include <thread>      // publisher and consumer together
#include <utility>     // std::move
#include <vector>      // samples

namespace {

using namespace std::chrono_literals;
namespace rmq = kincir::rabbitmq;

constexpr std::size_t kBodySize = 1024;
constexpr std::uint16_t kPrefetch = 1000;

struct Options {
  std::string uri;
  int messages = 20000;
  int runs = 5;
  std::string only;  // one workload: pub128, pub1024, consume, both
  bool peer = true;  // also run rabbitmq-c
};

struct Sample {
  double msg_per_s = 0;
  double cpu_us_per_msg = 0;
};

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

/// Times `body`, which moves `n` messages.
Sample measure(int n, const std::function<void()>& body) {
  const double cpu0 = cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  body();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = cpu_seconds() - cpu0;
  return Sample{n / wall, cpu * 1e6 / n};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0;
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

std::string unique_queue(const char* base) {
  return std::string("kincir.bench.") + base + "." + kincir::Uuid::new_v4().to_string().substr(0, 8);
}

// ------------------------------------------------------------------------------------------------
// The broker

struct Broker {
  std::string uri;
  bool started = false;
  std::string dir;

  ~Broker() {
    if (!started) return;
    const std::string cmd = "'" + std::string(KINCIR_BENCH_BROKER_SH) + "' stop '" + dir + "' >/dev/null 2>&1";
    (void)std::system(cmd.c_str());  // NOLINT(cert-env33-c,concurrency-mt-unsafe): our own script
  }

  /// Starts a node unless a URI was given; false (and one line on stdout) when none can be had.
  bool start(const Options& o) {
    if (!o.uri.empty()) {
      uri = o.uri;
      return true;
    }
    const auto env = [](const char* name, const char* fallback) {
      const char* v = std::getenv(name);            // NOLINT(concurrency-mt-unsafe): single-threaded here
      if (v == nullptr) setenv(name, fallback, 1);  // NOLINT(concurrency-mt-unsafe)
      return std::string(std::getenv(name));        // NOLINT(concurrency-mt-unsafe)
    };
    const std::string port = env("KINCIR_RABBITMQ_PORT", "5683");
    env("KINCIR_RABBITMQ_DIST_PORT", "25683");
    env("KINCIR_RABBITMQ_EPMD_PORT", "4383");
    dir = KINCIR_BENCH_NODE_DIR;
    const std::string cmd = "'" + std::string(KINCIR_BENCH_BROKER_SH) + "' start '" + dir + "' >'" + dir + ".log' 2>&1";
    if (std::system(cmd.c_str()) != 0) {  // NOLINT(cert-env33-c,concurrency-mt-unsafe): our own script
      std::printf("rabbitmq_bench: skipped: no RabbitMQ broker could be started (see %s.log; or pass --uri)\n",
                  dir.c_str());
      return false;
    }
    started = true;
    uri = "amqp://guest:guest@127.0.0.1:" + port;
    return true;
  }
};

rmq::RabbitMQConfig kincir_config(const std::string& uri, std::size_t window) {
  rmq::RabbitMQConfig c;
  c.apply_uri(uri);
  c.topology.layout = rmq::Layout::queue_per_topic;
  c.topology.durable_queues = false;
  c.max_unconfirmed = window;
  c.max_unconfirmed_bytes = std::size_t{1} << 30;
  c.prefetch = kPrefetch;
  return c;
}

/// Declares (non-durable) and purges `queue`; deletes it with `remove`.
void reset_queue(const std::string& uri, const std::string& queue, bool remove = false) {
  auto conn = rmq::Connection::open(kincir_config(uri, 1));
  auto ch = conn->open_channel();
  if (remove) {
    rmq::amqp::QueueDelete del;
    del.queue = queue;
    ch->call(del);
  } else {
    rmq::amqp::QueueDeclare q;
    q.queue = queue;
    ch->call(q);
    rmq::amqp::QueuePurge purge;
    purge.queue = queue;
    ch->call(purge);
  }
  conn->close();
}

std::vector<kincir::Message> kincir_messages(int n) {
  const kincir::Bytes body = kincir::Bytes::filled(kBodySize, 'x');
  std::vector<kincir::Message> v;
  v.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v.emplace_back(body);
  return v;
}

// ------------------------------------------------------------------------------------------------
// kincir

Sample kincir_publish(const std::string& uri, const std::string& queue, int n, std::size_t window) {
  rmq::RabbitMQPublisher pub(rmq::Connection::open(kincir_config(uri, window)));
  pub.publish(queue, kincir::Message(std::string("warm-up")));  // channel, confirm.select, declare
  auto batch = kincir_messages(n);
  return measure(n, [&] { pub.publish(queue, std::move(batch)); });
}

Sample kincir_consume(const std::string& uri, const std::string& queue, int n) {
  rmq::RabbitMQSubscriber sub(kincir_config(uri, 1024));
  sub.subscribe(queue);
  return measure(n, [&] {
    for (int i = 0; i < n; ++i) (void)sub.receive();
  });
}

Sample kincir_both(const std::string& uri, const std::string& queue, int n) {
  rmq::RabbitMQSubscriber sub(kincir_config(uri, 1024));
  sub.subscribe(queue);
  rmq::RabbitMQPublisher pub(rmq::Connection::open(kincir_config(uri, 1024)));
  pub.publish(queue, kincir::Message(std::string("warm-up")));
  (void)sub.receive();
  auto batch = kincir_messages(n);
  return measure(n, [&] {
    std::thread publisher([&] { pub.publish(queue, std::move(batch)); });
    for (int i = 0; i < n; ++i) (void)sub.receive();
    publisher.join();
  });
}

void kincir_fill(const std::string& uri, const std::string& queue, int n) {
  rmq::RabbitMQPublisher pub(rmq::Connection::open(kincir_config(uri, 1024)));
  pub.publish(queue, kincir_messages(n));
}

// ------------------------------------------------------------------------------------------------
// rabbitmq-c

#if KINCIR_BENCH_HAVE_RABBITMQ_C

void check_reply(amqp_rpc_reply_t r, const char* what) {
  if (r.reply_type != AMQP_RESPONSE_NORMAL) throw std::runtime_error(std::string("rabbitmq-c: ") + what + " failed");
}

/// One rabbitmq-c connection with channel 1 open (heartbeats off: it only runs them inside calls).
struct CConnection {
  amqp_connection_state_t conn = amqp_new_connection();

  explicit CConnection(const std::string& uri) {
    const auto cfg = rmq::RabbitMQConfig::from_uri(uri);
    amqp_socket_t* socket = amqp_tcp_socket_new(conn);
    if (socket == nullptr || amqp_socket_open(socket, cfg.endpoints[0].host.c_str(), cfg.endpoints[0].port) != 0)
      throw std::runtime_error("rabbitmq-c: cannot connect");
    check_reply(amqp_login(conn, cfg.connection.vhost.c_str(), 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                           cfg.connection.username.c_str(), cfg.connection.password.c_str()),
                "login");
    amqp_channel_open(conn, 1);
    check_reply(amqp_get_rpc_reply(conn), "channel.open");
  }
  CConnection(const CConnection&) = delete;
  CConnection& operator=(const CConnection&) = delete;
  ~CConnection() {
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
  }
};

/// The properties kincir sends too: message-id and timestamp.
std::vector<std::string> c_message_ids(int n) {
  std::vector<std::string> ids;
  ids.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) ids.push_back(kincir::Uuid::new_v4().to_string());
  return ids;
}

/// Publishes `n` messages with at most `window` unconfirmed; returns when all are confirmed.
void c_publish_all(CConnection& c, const std::string& queue, int n, std::size_t window,
                   const std::vector<std::string>& ids) {
  static const std::string body(kBodySize, 'x');
  std::uint64_t sent = 0;
  std::uint64_t confirmed = 0;  // every tag <= confirmed is settled (RabbitMQ confirms in order)
  const auto total = static_cast<std::uint64_t>(n);
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
  while (confirmed < total) {
    while (sent < total && sent - confirmed < window) {
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

Sample c_publish(const std::string& uri, const std::string& queue, int n, std::size_t window) {
  CConnection c(uri);
  c_confirm_select(c);
  const auto ids = c_message_ids(n);
  return measure(n, [&] { c_publish_all(c, queue, n, window, ids); });
}

void c_consume_all(CConnection& c, const std::string& queue, int n) {
  amqp_basic_qos(c.conn, 1, 0, kPrefetch, 0);
  check_reply(amqp_get_rpc_reply(c.conn), "basic.qos");
  amqp_basic_consume(c.conn, 1, amqp_cstring_bytes(queue.c_str()), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
  check_reply(amqp_get_rpc_reply(c.conn), "basic.consume");
  for (int i = 0; i < n; ++i) {
    amqp_envelope_t env;
    amqp_maybe_release_buffers(c.conn);
    check_reply(amqp_consume_message(c.conn, &env, nullptr, 0), "consume");
    amqp_basic_ack(c.conn, 1, env.delivery_tag, 0);
    amqp_destroy_envelope(&env);
  }
}

Sample c_consume(const std::string& uri, const std::string& queue, int n) {
  CConnection c(uri);
  return measure(n, [&] { c_consume_all(c, queue, n); });
}

Sample c_both(const std::string& uri, const std::string& queue, int n) {
  CConnection consumer(uri);
  CConnection producer(uri);
  c_confirm_select(producer);
  const auto ids = c_message_ids(n);
  return measure(n, [&] {
    std::thread publisher([&] { c_publish_all(producer, queue, n, 1024, ids); });
    c_consume_all(consumer, queue, n);
    publisher.join();
  });
}

#endif

// ------------------------------------------------------------------------------------------------

struct Row {
  explicit Row(std::string n) : name(std::move(n)) {}
  std::string name;
  std::vector<double> k_rate, k_cpu, c_rate, c_cpu;
};

void print_row(const Row& r, bool have_c) {
  const double kr = median(r.k_rate);
  const double kc = median(r.k_cpu);
  const double cr = have_c ? median(r.c_rate) : 0;
  const double cc = have_c ? median(r.c_cpu) : 0;
  if (!have_c) {
    std::printf("| %-35s | %12.0f | %11s | %5s | %13.2f | %12s | %5s |\n", r.name.c_str(), kr, "-", "-", kc, "-", "-");
    return;
  }
  std::printf("| %-35s | %12.0f | %11.0f | %4.2fx | %13.2f | %12.2f | %4.2fx |\n", r.name.c_str(), kr, cr, kr / cr, kc,
              cc, kc / cc);
}

void print_header() {
  std::printf("| %-35s | %12s | %11s | %5s | %13s | %12s | %5s |\n", "workload", "kincir msg/s", "rmq-c msg/s", "ratio",
              "kincir CPU us", "rmq-c CPU us", "ratio");
  std::printf("|%s|%s|%s|%s|%s|%s|%s|\n", std::string(37, '-').c_str(), std::string(14, '-').c_str(),
              std::string(13, '-').c_str(), std::string(7, '-').c_str(), std::string(15, '-').c_str(),
              std::string(14, '-').c_str(), std::string(7, '-').c_str());
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--uri" && has_value) {
      o.uri = argv[++i];
    } else if (a == "--messages" && has_value) {
      o.messages = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--runs" && has_value) {
      o.runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--only" && has_value) {
      o.only = argv[++i];
    } else if (a == "--kincir-only") {
      o.peer = false;
    } else {
      std::printf(
          "usage: rabbitmq_bench [--uri amqp://...] [--messages N] [--runs R] [--only pub128|pub1024|consume|both] "
          "[--kincir-only]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  Broker broker;
  if (!broker.start(o)) return 0;
  const bool have_c = KINCIR_BENCH_HAVE_RABBITMQ_C != 0 && o.peer;
  if (KINCIR_BENCH_HAVE_RABBITMQ_C == 0)
    std::printf("rabbitmq_bench: built without rabbitmq-c (librabbitmq-dev): kincir rows only\n");
  const int n = o.messages;
  try {
    Row pub128("publish, confirms, 128 unconfirmed");
    Row pub1024("publish, confirms, 1024 unconfirmed");
    Row consume("consume, acks (prefetch 1000)");
    Row both("publish 1024 + consume together");
    const auto add = [](std::vector<double>& rate, std::vector<double>& cpu, Sample s) {
      rate.push_back(s.msg_per_s);
      cpu.push_back(s.cpu_us_per_msg);
    };
    const std::string queue = unique_queue("q");
    const auto wanted = [&o](const char* name) { return o.only.empty() || o.only == name; };
    for (int run = 0; run < o.runs; ++run) {
      // Alternate which client goes first, so a drifting machine favours neither.
      for (int turn = 0; turn < 2; ++turn) {
        const bool kincir_turn = (turn == 0) == (run % 2 == 0);
        if (!kincir_turn && !have_c) continue;
        for (auto [row, window] : {std::pair{&pub128, std::size_t{128}}, std::pair{&pub1024, std::size_t{1024}}}) {
          if (!wanted(window == 128 ? "pub128" : "pub1024")) continue;
          reset_queue(broker.uri, queue);
#if KINCIR_BENCH_HAVE_RABBITMQ_C
          if (!kincir_turn) add(row->c_rate, row->c_cpu, c_publish(broker.uri, queue, n, window));
#endif
          if (kincir_turn) add(row->k_rate, row->k_cpu, kincir_publish(broker.uri, queue, n, window));
        }
        if (wanted("consume")) {
          reset_queue(broker.uri, queue);
          kincir_fill(broker.uri, queue, n);
#if KINCIR_BENCH_HAVE_RABBITMQ_C
          if (!kincir_turn) add(consume.c_rate, consume.c_cpu, c_consume(broker.uri, queue, n));
#endif
          if (kincir_turn) add(consume.k_rate, consume.k_cpu, kincir_consume(broker.uri, queue, n));
        }
        if (!wanted("both")) continue;
        reset_queue(broker.uri, queue);
#if KINCIR_BENCH_HAVE_RABBITMQ_C
        if (!kincir_turn) add(both.c_rate, both.c_cpu, c_both(broker.uri, queue, n));
#endif
        if (kincir_turn) add(both.k_rate, both.k_cpu, kincir_both(broker.uri, queue, n));
      }
    }
    reset_queue(broker.uri, queue, true);
    std::printf(
        "RabbitMQ, loopback, %zu-byte bodies, %d messages per run, median of %d runs; CPU = client "
        "process user+sys per message\n",
        kBodySize, n, o.runs);
    print_header();
    for (const Row* r : {&pub128, &pub1024, &consume, &both})
      if (!r->k_rate.empty()) print_row(*r, have_c);
  } catch (const std::exception& e) {
    std::printf("rabbitmq_bench: failed: %s\n", e.what());
    return 1;
  }
  return 0;
}
