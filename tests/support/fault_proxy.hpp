// A loopback TCP proxy for fault-injection tests (Asio): clients connect to `port()`, each
// connection is forwarded to 127.0.0.1:`target`. Faults: cut every connection, stall the current
// ones (bytes are held, not lost, until the stall ends or the connection is cut), delay every
// chunk, throttle the bandwidth. One I/O thread; the controls are safe from any thread.
#pragma once

#include <asio/executor_work_guard.hpp>  // keeps the I/O thread alive
#include <asio/io_context.hpp>           // the proxy's I/O
#include <asio/ip/tcp.hpp>               // acceptor, sockets
#include <asio/post.hpp>                 // controls run on the I/O thread
#include <asio/steady_timer.hpp>         // delays, stalls, throttling
#include <asio/write.hpp>                // forwarding a chunk

#include <array>    // chunk buffers
#include <atomic>   // counters read by the test
#include <chrono>   // delays
#include <cstdint>  // ports, byte counts
#include <future>   // waiting for a control to take effect
#include <memory>   // connections shared with their handlers
#include <thread>   // the I/O thread
#include <utility>  // std::move
#include <vector>   // live connections

namespace kincir::test {

class FaultProxy {
 public:
  explicit FaultProxy(std::uint16_t target)
      : target_(target), acceptor_(io_, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    accept();
    thread_ = std::thread([this] { io_.run(); });
  }
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;
  ~FaultProxy() {
    run([this] {
      std::error_code ignored;
      acceptor_.close(ignored);
      for (auto& w : links_)
        if (auto l = w.lock()) l->cut();
    });
    work_.reset();
    io_.stop();
    thread_.join();
  }

  [[nodiscard]] std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

  /// Closes every connection (both sides), as a network failure would.
  void cut_all() {
    run([this] {
      for (auto& w : links_)
        if (auto l = w.lock()) l->cut();
      cuts_.fetch_add(1, std::memory_order_relaxed);
    });
  }
  /// Holds every byte of the connections open now for `d` (new connections are not stalled).
  void stall(std::chrono::milliseconds d) {
    run([this, d] {
      const auto until = std::chrono::steady_clock::now() + d;
      for (auto& w : links_)
        if (auto l = w.lock()) l->stalled_until = until;
      stalls_.fetch_add(1, std::memory_order_relaxed);
    });
  }
  /// Every chunk waits `d` before it is forwarded (0: off).
  void set_delay(std::chrono::milliseconds d) {
    run([this, d] { delay_ = d; });
  }
  /// While refusing, new connections are accepted and closed at once (the broker seems down).
  void set_refuse(bool refuse) {
    run([this, refuse] { refuse_ = refuse; });
  }
  /// At most `bytes_per_second` per direction and connection (0: unlimited).
  void set_throttle(std::size_t bytes_per_second) {
    run([this, bytes_per_second] { throttle_ = bytes_per_second; });
  }

  [[nodiscard]] std::uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t cuts() const { return cuts_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t stalls() const { return stalls_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }

 private:
  struct Link;

  /// One direction of a connection: read a chunk, wait (stall, delay, throttle), write it.
  struct Pipe : std::enable_shared_from_this<Pipe> {
    Pipe(FaultProxy& p, std::shared_ptr<Link> l, asio::ip::tcp::socket& f, asio::ip::tcp::socket& t)
        : proxy(p), link(std::move(l)), from(f), to(t), timer(p.io_) {}
    FaultProxy& proxy;
    std::shared_ptr<Link> link;
    asio::ip::tcp::socket& from;
    asio::ip::tcp::socket& to;
    asio::steady_timer timer;
    std::array<char, 16384> buf{};
    std::size_t n = 0;

    void read() {
      from.async_read_some(asio::buffer(buf), [self = shared_from_this()](std::error_code ec, std::size_t got) {
        if (ec) return self->link->cut();
        self->n = got;
        self->proxy.bytes_.fetch_add(got, std::memory_order_relaxed);
        self->hold();
      });
    }
    void hold() {
      auto wait = proxy.delay_;
      if (proxy.throttle_ != 0)
        wait += std::chrono::milliseconds(static_cast<std::int64_t>(n * 1000 / proxy.throttle_));
      const auto now = std::chrono::steady_clock::now();
      auto until = now + wait;
      if (link->stalled_until > until) until = link->stalled_until;
      if (until <= now) return write();
      timer.expires_at(until);
      timer.async_wait([self = shared_from_this()](std::error_code ec) {
        if (ec || self->link->dead) return;
        // A stall begun meanwhile holds the chunk longer.
        if (self->link->stalled_until > std::chrono::steady_clock::now()) return self->hold();
        self->write();
      });
    }
    void write() {
      asio::async_write(to, asio::buffer(buf.data(), n), [self = shared_from_this()](std::error_code ec, std::size_t) {
        if (ec) return self->link->cut();
        self->read();
      });
    }
  };

  struct Link : std::enable_shared_from_this<Link> {
    explicit Link(asio::io_context& io) : client(io), server(io) {}
    asio::ip::tcp::socket client;
    asio::ip::tcp::socket server;
    std::chrono::steady_clock::time_point stalled_until{};
    bool dead = false;
    void cut() {
      if (dead) return;
      dead = true;
      std::error_code ignored;
      client.close(ignored);
      server.close(ignored);
    }
  };

  template <class F>
  void run(F f) {
    if (std::this_thread::get_id() == thread_.get_id()) return f();
    std::promise<void> done;
    asio::post(io_, [&] {
      f();
      done.set_value();
    });
    done.get_future().wait();
  }

  void accept() {
    auto link = std::make_shared<Link>(io_);
    acceptor_.async_accept(link->client, [this, link](std::error_code ec) {
      if (ec) return;
      accepted_.fetch_add(1, std::memory_order_relaxed);
      if (refuse_) {
        link->cut();
        return accept();
      }
      std::erase_if(links_, [](const auto& w) { return w.expired(); });
      links_.push_back(link);
      const asio::ip::tcp::endpoint target(asio::ip::make_address("127.0.0.1"), target_);
      link->server.async_connect(target, [this, link](std::error_code cec) {
        if (cec) return link->cut();
        std::error_code ignored;
        link->client.set_option(asio::ip::tcp::no_delay(true), ignored);
        link->server.set_option(asio::ip::tcp::no_delay(true), ignored);
        std::make_shared<Pipe>(*this, link, link->client, link->server)->read();
        std::make_shared<Pipe>(*this, link, link->server, link->client)->read();
      });
      accept();
    });
  }

  std::uint16_t target_;
  asio::io_context io_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_{asio::make_work_guard(io_)};
  asio::ip::tcp::acceptor acceptor_;
  std::thread thread_;
  std::vector<std::weak_ptr<Link>> links_;
  std::chrono::milliseconds delay_{0};
  std::size_t throttle_ = 0;
  bool refuse_ = false;
  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::uint64_t> cuts_{0};
  std::atomic<std::uint64_t> stalls_{0};
  std::atomic<std::uint64_t> bytes_{0};
};

}  // namespace kincir::test
