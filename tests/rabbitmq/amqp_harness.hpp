// Test support for the sans-I/O AMQP algorithms: frame builders and a scripted conversation in
// the style of Boost.MySQL's tests (expect_write / expect_read, then check, and
// check_network_errors, which re-runs the script failing the transport at every step).
#pragma once

#include <kincir/rabbitmq/amqp/action.hpp>
#include <kincir/rabbitmq/amqp/codec.hpp>
#include <kincir/rabbitmq/amqp/frame.hpp>

#include "support/catch.hpp"

#include <cstdint>       // std::uint8_t
#include <cstdlib>       // std::getenv
#include <filesystem>    // seed corpus directories
#include <fstream>       // seed files
#include <functional>    // std::function write checks
#include <span>          // byte views
#include <string_view>   // bodies
#include <system_error>  // std::error_code
#include <utility>       // std::move
#include <vector>        // byte vectors, steps

namespace kincir::rabbitmq::amqp::test {

using ByteVector = std::vector<std::uint8_t>;

inline ByteVector to_vector(std::span<const std::uint8_t> s) { return {s.begin(), s.end()}; }

inline ByteVector concat(std::initializer_list<ByteVector> parts) {
  ByteVector out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

template <class M>
ByteVector method_frame(std::uint16_t channel, const M& m) {
  ByteBuffer out;
  std::error_code ec;
  encode_method_frame(out, channel, m, ec);
  REQUIRE_FALSE(ec);
  return to_vector(out.span());
}

inline ByteVector header_frame(std::uint16_t channel, std::uint64_t body_size, const BasicProperties& p = {}) {
  ByteBuffer out;
  const std::size_t start = begin_frame(out, FrameType::header, channel);
  detail::WireWriter w(out);
  encode_content_header(w, body_size, p);
  end_frame(out, start);
  return to_vector(out.span());
}

inline ByteVector body_frame(std::uint16_t channel, std::string_view body) {
  ByteBuffer out;
  const std::size_t start = begin_frame(out, FrameType::body, channel);
  out.append(body.data(), body.size());
  end_frame(out, start);
  return to_vector(out.span());
}

inline ByteVector heartbeat_frame() {
  ByteBuffer out;
  encode_heartbeat(out);
  return to_vector(out.span());
}

/// The frames in `bytes`, which must be whole frames.
inline std::vector<Frame> split_frames(const ByteVector& bytes) {
  std::vector<Frame> frames;
  FrameReader reader(0);
  std::span<const std::uint8_t> rest(bytes);
  while (!rest.empty()) {
    std::error_code ec;
    auto r = reader.parse(rest, ec);
    REQUIRE_FALSE(ec);
    REQUIRE(r.status == ParseStatus::complete);
    frames.push_back(r.frame);
    rest = rest.subspan(r.size);
  }
  return frames;
}

/// With KINCIR_FUZZ_SEEDS set to a directory, saves `bytes` as a seed of fuzz corpus `corpus`
/// (tests/fuzz/corpus/ is filled this way from the unit tests' conversations).
inline void record_seed(const char* corpus, const ByteVector& bytes) {
  const char* dir = std::getenv("KINCIR_FUZZ_SEEDS");  // NOLINT(concurrency-mt-unsafe): tests set no variables
  if (dir == nullptr || bytes.empty()) return;
  std::uint64_t hash = 14695981039346656037ULL;  // FNV-1a names the file after its content
  for (auto b : bytes) hash = (hash ^ b) * 1099511628211ULL;
  const auto path = std::filesystem::path(dir) / corpus;
  std::filesystem::create_directories(path);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string name(16, '0');
  for (int i = 15; i >= 0; --i, hash >>= 4) name[static_cast<std::size_t>(i)] = kHex[hash & 15];
  std::ofstream(path / name, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

/// A frame_reader seed: a first byte choosing frame_max (1: 131072), then the frames.
inline void record_frames_seed(const ByteVector& frames) {
  ByteVector seed{1};
  seed.insert(seed.end(), frames.begin(), frames.end());
  record_seed("frame_reader", seed);
}

/// The transport failure injected by check_network_errors.
inline std::error_code network_error() { return std::make_error_code(std::errc::connection_reset); }

/// A scripted conversation between a coroutine algorithm and a fake server.
class Conversation {
 public:
  Conversation& expect_write(ByteVector bytes) {
    steps_.push_back(Step{Step::Kind::write, std::move(bytes), {}});
    return *this;
  }
  /// A write whose content `check` inspects (for client properties and the like).
  Conversation& expect_write_matching(std::function<void(const ByteVector&)> check) {
    steps_.push_back(Step{Step::Kind::write, {}, std::move(check)});
    return *this;
  }
  /// A read answered with one frame.
  Conversation& expect_read(ByteVector frame) {
    steps_.push_back(Step{Step::Kind::read, std::move(frame), {}});
    return *this;
  }
  /// A read that never completes: the algorithm gets `Event::timeout()`.
  Conversation& expect_timeout() {
    steps_.push_back(Step{Step::Kind::timeout, {}, {}});
    return *this;
  }

  [[nodiscard]] std::size_t steps() const noexcept { return steps_.size(); }

  /// Runs the script; with `fail_at`, the transport fails at that step. Returns the result.
  template <class Algo, class State>
  std::error_code run(Algo& algo, State& st, std::size_t fail_at = static_cast<std::size_t>(-1)) const {
    Event ev = Event::start();
    std::size_t step = 0;
    for (int guard = 0; guard < 10000; ++guard) {
      const Action action = algo.resume(st, ev);
      if (action.kind == Action::Kind::done) {
        if (fail_at >= steps_.size()) {
          CHECK(step == steps_.size());
          record_seeds();
        }
        return action.ec;
      }
      REQUIRE(step < steps_.size());
      const Step& s = steps_[step];
      if (step == fail_at) {
        ev = Event::failed(network_error());
        ++step;
        continue;
      }
      if (action.kind == Action::Kind::write) {
        REQUIRE(s.kind == Step::Kind::write);
        const ByteVector written = st.out.flatten();
        if (s.check)
          s.check(written);
        else
          CHECK(written == s.bytes);
        ev = Event::written();
      } else {
        REQUIRE(action.kind == Action::Kind::read);
        REQUIRE(s.kind != Step::Kind::write);
        if (s.kind == Step::Kind::timeout) {
          ev = Event::timeout();
        } else {
          auto frames = split_frames(s.bytes);
          REQUIRE(frames.size() == 1);
          ev = Event::received(frames[0]);
        }
      }
      ++step;
    }
    FAIL("the algorithm did not finish");
    return {};
  }

  /// Runs the script and checks the result.
  template <class MakeAlgo, class MakeState>
  void check(MakeAlgo make_algo, MakeState make_state, std::error_code expected = {}) const {
    auto algo = make_algo();
    auto st = make_state();
    CHECK(run(algo, st) == expected);
  }

  /// Re-runs the script once per step, failing the transport at that step: the algorithm must
  /// finish with that error, immediately.
  template <class MakeAlgo, class MakeState>
  void check_network_errors(MakeAlgo make_algo, MakeState make_state) const {
    for (std::size_t i = 0; i < steps_.size(); ++i) {
      INFO("transport fails at step " << i);
      auto algo = make_algo();
      auto st = make_state();
      CHECK(run(algo, st, i) == network_error());
    }
  }

 private:
  /// What the server sent, as fuzz seeds for the connection and the frame reader.
  void record_seeds() const {
    ByteVector reads;
    for (const auto& s : steps_)
      if (s.kind == Step::Kind::read) reads.insert(reads.end(), s.bytes.begin(), s.bytes.end());
    record_seed("connection", reads);
    record_frames_seed(reads);
  }

  struct Step {
    enum class Kind { write, read, timeout } kind;
    ByteVector bytes;
    std::function<void(const ByteVector&)> check;
  };
  std::vector<Step> steps_;
};

}  // namespace kincir::rabbitmq::amqp::test
