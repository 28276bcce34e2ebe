// Unit tests of BroadcastRing: options, cursors and groups, full policies, element lifetime,
// memory on demand, waiting and wake-ups.
#include <kincir/memory/ring.hpp>

#include "support/catch.hpp"

#include <atomic>       // prefetch hints
#include <chrono>       // deadlines
#include <cstdint>      // std::uint64_t
#include <future>       // std::async (bounded waits on a blocked thread)
#include <iterator>     // std::back_inserter
#include <numeric>      // std::iota
#include <optional>     // rings built inside a test
#include <stdexcept>    // a throwing handler
#include <string>       // a counted element type
#include <thread>       // waiters and wakers
#include <type_traits>  // std::is_rvalue_reference_v
#include <utility>      // std::forward
#include <vector>       // batches

#include <kincir/core/message.hpp>

#include "memory/ring_test_support.hpp"
#include "support/alloc_counter.hpp"

using kincir::memory::BroadcastRing;
using kincir::memory::FullPolicy;
using kincir::memory::ProducerMode;
using kincir::memory::PublishStatus;
using kincir::memory::RingOptions;
using kincir::memory::WaitStatus;
using kincir::test::Hinted;
using kincir::test::Tracked;
using namespace std::chrono_literals;

namespace {

RingOptions small(FullPolicy policy = FullPolicy::block, ProducerMode mode = ProducerMode::multi) {
  RingOptions o;
  o.capacity = 16;
  o.block_size = 4;
  o.full_policy = policy;
  o.producer_mode = mode;
  return o;
}

std::vector<std::uint64_t> iota(std::uint64_t from, std::size_t n) {
  std::vector<std::uint64_t> v(n);
  std::iota(v.begin(), v.end(), from);
  return v;
}

std::vector<Tracked> tracked(std::uint64_t from, std::size_t n) {
  std::vector<Tracked> v;
  v.reserve(n);
  for (std::size_t i = 0; i < n; ++i) v.emplace_back(from + i);
  return v;
}

template <class Cursor>
std::vector<std::uint64_t> drain_values(Cursor& c) {
  std::vector<std::uint64_t> out;
  std::uint64_t v = 0;
  while (c.try_read(v)) out.push_back(v);
  return out;
}

template <class Cursor>
std::vector<std::uint64_t> drain_tracked(Cursor& c) {
  std::vector<std::uint64_t> out;
  Tracked t;
  while (c.try_read(t)) out.push_back(t.value);
  return out;
}

static_assert(kincir::memory::detail::RingPrefetchable<Hinted>);
static_assert(!kincir::memory::detail::RingPrefetchable<Tracked>);

}  // namespace

TEST_CASE("Options are validated and the capacity rounded up", "[ring]") {
  using Ring = BroadcastRing<std::uint64_t>;
  auto rejected = [](RingOptions o) {
    std::error_code ec;
    (void)Ring::normalize(o, ec);
    return ec == kincir::errc::invalid_argument;
  };
  RingOptions o;
  o.capacity = 0;
  CHECK(rejected(o));
  o = {};
  o.block_size = 0;
  CHECK(rejected(o));
  o = {};
  o.block_size = 48;
  CHECK(rejected(o));
  o = {};
  o.capacity = 100;
  o.block_size = 256;
  CHECK(rejected(o));
  o = {};
  o.capacity = 1000;
  o.block_size = 8;
  CHECK_FALSE(rejected(o));
  o.capacity = Ring::kMaxCapacity;
  CHECK_FALSE(rejected(o));
  o.capacity = Ring::kMaxCapacity + 1;
  CHECK(rejected(o));

  o.capacity = 0;
  CHECK_THROWS_AS(Ring(o), kincir::Error);
  try {
    Ring bad(o);
  } catch (const kincir::Error& e) {
    CHECK(e.code() == kincir::errc::invalid_argument);
  }

  o.capacity = 1000;
  Ring ring(o);
  CHECK(ring.capacity() == 1024);
  CHECK(ring.block_size() == 8);
  CHECK(ring.allocated_blocks() == 0);  // nothing before the first publish
  CHECK(ring.table_size() == 64);       // a small table (1 KiB), whatever the capacity
}

TEST_CASE("Every cursor sees every element published after it joined, in order", "[ring]") {
  const auto mode = GENERATE(ProducerMode::multi, ProducerMode::single);
  BroadcastRing<std::uint64_t> ring(small(FullPolicy::block, mode));
  auto early = ring.add_cursor();
  auto first = iota(0, 5);
  REQUIRE(ring.publish(first.begin(), first.end()) == PublishStatus::ok);

  auto late = ring.add_cursor();  // joins after 0..4
  CHECK(ring.cursor_count() == 2);
  CHECK(late.position() == 5);
  CHECK(late.lag() == 0);
  CHECK(early.lag() == 5);

  auto second = iota(5, 5);
  REQUIRE(ring.publish(second.begin(), second.end()) == PublishStatus::ok);
  REQUIRE(ring.publish(std::uint64_t{10}) == PublishStatus::ok);
  CHECK(ring.tail() == 11);

  CHECK(drain_values(early) == iota(0, 11));
  CHECK(drain_values(late) == iota(5, 6));
  CHECK(early.position() == 11);
  std::uint64_t v = 0;
  CHECK_FALSE(early.try_read(v));
  CHECK(early.lost() == 0);
}

TEST_CASE("consume hands elements over in place: the last reader may move them", "[ring]") {
  Tracked::reset_counts();
  {
    BroadcastRing<Tracked> ring(small());
    auto a = ring.add_cursor();
    auto g = ring.add_group_cursor();
    {
      auto batch = tracked(0, 6);
      REQUIRE(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);
    }
    std::vector<std::uint64_t> seen;
    std::vector<std::uint64_t> moved;
    auto take = [&](auto&& t) {
      if constexpr (std::is_rvalue_reference_v<decltype(t)>) {
        const Tracked mine = std::forward<decltype(t)>(t);  // the last reader owns it
        moved.push_back(mine.value);
      } else {
        seen.push_back(t.value);
      }
    };
    CHECK(a.consume(100, take) == 6);  // g still has to read them: a sees them in place
    CHECK(g.consume(4, take) == 4);    // the last share: moved out
    CHECK(g.consume(100, take) == 2);
    CHECK(g.consume(100, take) == 0);
    CHECK(seen == iota(0, 6));
    CHECK(moved == iota(0, 6));
    CHECK(Tracked::copies == 0);
    CHECK(Tracked::live == 0);  // the ring destroyed each slot after handing it over
  }
  CHECK(Tracked::errors == 0);
}

TEST_CASE("Readers prefetch ahead only elements they may look at", "[ring]") {
  const auto mode = GENERATE(ProducerMode::multi, ProducerMode::single);
  Tracked::reset_counts();
  Hinted::hints.store(0);
  {
    RingOptions o;
    o.capacity = 1024;
    o.block_size = 64;
    o.producer_mode = mode;
    BroadcastRing<Hinted> ring(o);
    auto a = ring.add_cursor();
    auto g = ring.add_group_cursor();
    auto publish = [&](std::uint64_t from, std::size_t n) {
      std::vector<Hinted> batch;
      batch.reserve(n);
      for (std::size_t i = 0; i < n; ++i) batch.emplace_back(from + i);
      REQUIRE(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);
    };
    publish(0, 300);
    auto late = ring.add_cursor();  // joins after: nothing of the first batch is counted for it
    publish(300, 300);
    std::uint64_t expected = 0;
    while (a.consume(50, [&](const Hinted& h) { CHECK(h.tracked.value == expected++); }) != 0) {
    }
    CHECK(expected == 600);
    std::uint64_t group_seen = 0;
    while (g.poll(37, [&](const Hinted&) { ++group_seen; }) != 0) {
    }
    CHECK(group_seen == 600);
    std::vector<std::uint64_t> late_seen;
    while (late.consume(1, [&](const Hinted& h) { late_seen.push_back(h.tracked.value); }) != 0) {
    }
    CHECK(late_seen == iota(300, 300));
    CHECK(Hinted::hints.load() > 0);
    CHECK(Tracked::live == 0);
  }
  CHECK(Tracked::errors == 0);
}

TEST_CASE("read_batch and poll read many elements at once", "[ring]") {
  BroadcastRing<std::uint64_t> ring(small());
  auto c = ring.add_cursor();
  auto batch = iota(100, 12);
  REQUIRE(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);

  std::vector<std::uint64_t> out;
  CHECK(c.read_batch(std::back_inserter(out), 5) == 5);
  CHECK(out == iota(100, 5));
  std::vector<std::uint64_t> seen;
  CHECK(c.poll(4, [&](const std::uint64_t& x) { seen.push_back(x); }) == 4);
  CHECK(seen == iota(105, 4));
  out.clear();
  CHECK(c.read_batch(std::back_inserter(out), 100) == 3);
  CHECK(out == iota(109, 3));
  CHECK(c.read_batch(std::back_inserter(out), 100) == 0);
  CHECK(c.read_batch(std::back_inserter(out), 0) == 0);
}

TEST_CASE("A ring without cursors drops what is published", "[ring]") {
  const auto mode = GENERATE(ProducerMode::multi, ProducerMode::single);
  BroadcastRing<Tracked> ring(small(FullPolicy::block, mode));
  {
    auto batch = tracked(0, 40);  // more than the capacity: nobody gates
    CHECK(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);
    CHECK(Tracked::live == 40);  // left unmoved in the caller's batch
  }
  CHECK(Tracked::live == 0);
  CHECK(ring.cursor_count() == 0);
  CHECK(ring.tail() == 40);
  auto c = ring.add_cursor();
  Tracked t;
  CHECK_FALSE(c.try_read(t));
  CHECK(ring.allocated_blocks() <= 3);  // retired as the producer wrapped around
}

TEST_CASE("A group hands each element to one of its readers", "[ring]") {
  BroadcastRing<std::uint64_t> ring(small());
  auto group = ring.add_group_cursor();
  auto solo = ring.add_cursor();
  auto batch = iota(0, 12);
  REQUIRE(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);

  std::vector<std::uint64_t> got;
  std::uint64_t v = 0;
  REQUIRE(group.try_read(v));
  got.push_back(v);
  CHECK(group.read_batch(std::back_inserter(got), 4) == 4);
  CHECK(group.poll(3, [&](const std::uint64_t& x) { got.push_back(x); }) == 3);
  CHECK(group.position() == 8);
  CHECK(group.lag() == 4);
  CHECK(group.read_batch(std::back_inserter(got), 100) == 4);
  CHECK(got == iota(0, 12));
  CHECK_FALSE(group.try_read(v));
  CHECK(drain_values(solo) == iota(0, 12));  // the independent cursor still sees everything
  CHECK(ring.cursor_count() == 2);
  group.reset();
  CHECK_FALSE(group.valid());
  CHECK(ring.cursor_count() == 1);
}

TEST_CASE("Fail policy: all of a batch or nothing", "[ring]") {
  const auto mode = GENERATE(ProducerMode::multi, ProducerMode::single);
  BroadcastRing<Tracked> ring(small(FullPolicy::fail, mode));
  auto c = ring.add_cursor();
  {
    auto fill = tracked(0, 14);
    REQUIRE(ring.publish(fill.begin(), fill.end()) == PublishStatus::ok);
    auto three = tracked(14, 3);
    CHECK(ring.publish(three.begin(), three.end()) == PublishStatus::full);  // only 2 free
    for (const auto& t : three) CHECK(t.value >= 14);                        // not moved from
    CHECK(ring.tail() == 14);
    auto two = tracked(14, 2);
    CHECK(ring.publish(two.begin(), two.end()) == PublishStatus::ok);
    CHECK(ring.publish(Tracked(99)) == PublishStatus::full);
    auto huge = tracked(0, 17);
    CHECK(ring.publish(huge.begin(), huge.end()) == PublishStatus::full);  // larger than the capacity
  }
  CHECK(Tracked::live == 16 + 0);  // the ring holds 16; every rejected element is gone with its batch
  std::vector<std::uint64_t> out;
  Tracked t;
  for (int i = 0; i < 4 && c.try_read(t); ++i) out.push_back(t.value);
  CHECK(ring.publish(Tracked(16)) == PublishStatus::ok);  // room again
  auto rest = drain_tracked(c);
  out.insert(out.end(), rest.begin(), rest.end());
  CHECK(out == iota(0, 17));
}

TEST_CASE("Block policy: publish_until times out on a full ring, close ends the wait", "[ring]") {
  const auto mode = GENERATE(ProducerMode::multi, ProducerMode::single);
  BroadcastRing<std::uint64_t> ring(small(FullPolicy::block, mode));
  auto c = ring.add_cursor();
  auto fill = iota(0, 16);
  REQUIRE(ring.publish(fill.begin(), fill.end()) == PublishStatus::ok);
  const auto before = std::chrono::steady_clock::now();
  CHECK(ring.publish_until(std::uint64_t{16}, before + 20ms) == PublishStatus::timeout);
  CHECK(std::chrono::steady_clock::now() - before >= 20ms);
  CHECK(ring.tail() == 16);
  std::uint64_t v = 0;
  REQUIRE(c.try_read(v));
  CHECK(ring.publish_until(std::uint64_t{16}, std::chrono::system_clock::now() + 1s) == PublishStatus::ok);

  auto blocked = std::async(std::launch::async, [&] { return ring.publish(std::uint64_t{17}); });
  CHECK(blocked.wait_for(30ms) == std::future_status::timeout);  // still full
  ring.close();
  REQUIRE(blocked.wait_for(5s) == std::future_status::ready);
  CHECK(blocked.get() == PublishStatus::closed);
  CHECK(ring.publish(std::uint64_t{18}) == PublishStatus::closed);
  // Readers drain what is left, then learn that the ring is closed.
  CHECK(drain_values(c) == iota(1, 16));
  CHECK(c.wait() == WaitStatus::closed);
}

TEST_CASE("A batch larger than the capacity is published in pieces while readers keep up", "[ring][concurrency]") {
  BroadcastRing<std::uint64_t> ring(small());
  auto c = ring.add_cursor();
  std::vector<std::uint64_t> got;
  std::thread reader([&] {
    while (c.wait() == WaitStatus::ready) c.read_batch(std::back_inserter(got), 3);
  });
  auto batch = iota(0, 1000);
  CHECK(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);
  ring.close();
  reader.join();
  CHECK(got == iota(0, 1000));
}

TEST_CASE("Overtake policy: a lagging cursor is pushed forward and counts what it lost", "[ring]") {
  const auto mode = GENERATE(ProducerMode::multi, ProducerMode::single);
  BroadcastRing<Tracked> ring(small(FullPolicy::overtake, mode));
  auto slow = ring.add_cursor();
  auto fast = ring.add_cursor();
  auto group = ring.add_group_cursor();
  std::vector<std::uint64_t> fast_seen;
  for (std::uint64_t i = 0; i < 40; ++i) {
    REQUIRE(ring.publish(Tracked(i)) == PublishStatus::ok);
    Tracked t;
    REQUIRE(fast.try_read(t));
    fast_seen.push_back(t.value);
  }
  CHECK(fast_seen == iota(0, 40));
  CHECK(fast.lost() == 0);
  CHECK(slow.lost() == 24);
  CHECK(group.lost() == 24);
  CHECK(Tracked::live == 16);  // overtaken elements were destroyed
  CHECK(drain_tracked(slow) == iota(24, 16));
  CHECK(drain_tracked(group) == iota(24, 16));
  CHECK(Tracked::live == 0);
  CHECK(Tracked::errors == 0);
}

TEST_CASE("Element lifetime: the last reader moves, the others copy, nothing stays alive", "[ring]") {
  Tracked::reset_counts();
  {
    BroadcastRing<Tracked> ring(small());
    auto a = ring.add_cursor();
    {
      auto batch = tracked(0, 10);
      REQUIRE(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);
    }
    CHECK(Tracked::live == 10);
    CHECK(drain_tracked(a) == iota(0, 10));
    CHECK(Tracked::copies == 0);  // a single cursor never copies
    CHECK(Tracked::live == 0);    // a consumed slot holds nothing alive

    auto b = ring.add_cursor();
    auto g = ring.add_group_cursor();
    {
      auto batch = tracked(10, 10);
      REQUIRE(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);
    }
    CHECK(drain_tracked(a) == iota(10, 10));
    CHECK(drain_tracked(g) == iota(10, 10));
    CHECK(Tracked::live == 10);
    std::vector<std::uint64_t> in_place;
    CHECK(b.poll(100, [&](const Tracked& t) { in_place.push_back(t.value); }) == 10);
    CHECK(in_place == iota(10, 10));
    CHECK(Tracked::copies == 20);  // a and g copied; b read in place and released last
    CHECK(Tracked::live == 0);
  }
  CHECK(Tracked::live == 0);
  CHECK(Tracked::errors == 0);
}

TEST_CASE("Element lifetime: removing a cursor releases what it was holding", "[ring]") {
  const auto mode = GENERATE(ProducerMode::multi, ProducerMode::single);
  {
    BroadcastRing<Tracked> ring(small(FullPolicy::block, mode));
    auto a = ring.add_cursor();
    std::optional<BroadcastRing<Tracked>::Cursor> b(ring.add_cursor());
    auto g = ring.add_group_cursor();
    {
      auto batch = tracked(0, 12);
      REQUIRE(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);
    }
    std::vector<Tracked> out;
    CHECK(a.read_batch(std::back_inserter(out), 5) == 5);
    CHECK(b->read_batch(std::back_inserter(out), 8) == 8);
    out.clear();
    CHECK(Tracked::live == 12);  // g has read nothing
    g.reset();                   // mid-stream: a and b still need some
    CHECK(Tracked::live == 7);   // 0..4 were read by a and b
    b.reset();
    CHECK(Tracked::live == 7);  // a still needs 5..11
    CHECK(drain_tracked(a) == iota(5, 7));
    CHECK(Tracked::live == 0);

    // A full ring destroyed: its cursors go first, the ring releases the rest.
    auto c = ring.add_cursor();
    auto d = ring.add_cursor();
    auto batch = tracked(100, 16);
    REQUIRE(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);
    Tracked t;
    REQUIRE(c.try_read(t));
  }
  CHECK(Tracked::live == 0);
  CHECK(Tracked::errors == 0);
}

TEST_CASE("Element lifetime: a throwing handler consumes its element", "[ring]") {
  {
    BroadcastRing<Tracked> ring(small());
    auto c = ring.add_cursor();
    auto g = ring.add_group_cursor();
    {
      auto batch = tracked(0, 6);
      REQUIRE(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);
    }
    auto thrower = [](const Tracked& t) {
      if (t.value == 2) throw std::runtime_error("poison");
    };
    CHECK_THROWS_AS(c.poll(10, thrower), std::runtime_error);
    CHECK(c.position() == 3);  // 0, 1 and the poison one are read
    CHECK(drain_tracked(c) == iota(3, 3));
    CHECK_THROWS_AS(g.poll(10, thrower), std::runtime_error);
    CHECK(g.lost() == 3);  // the rest of the group's claim is dropped
    CHECK(Tracked::live == 0);
  }
  CHECK(Tracked::errors == 0);
}

TEST_CASE("clear() makes every cursor skip what was published before it", "[ring]") {
  {
    BroadcastRing<Tracked> ring(small());
    auto a = ring.add_cursor();
    auto g = ring.add_group_cursor();
    {
      auto batch = tracked(0, 10);
      REQUIRE(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);
    }
    Tracked t;
    REQUIRE(a.try_read(t));
    ring.clear();
    {
      auto batch = tracked(10, 3);
      REQUIRE(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);
    }
    CHECK(drain_tracked(a) == iota(10, 3));
    CHECK(Tracked::live == 14);  // 0..12 wait for g (a released its share), plus t
    CHECK(drain_tracked(g) == iota(10, 3));
    CHECK(a.lost() == 0);
    CHECK(Tracked::live == 1);  // t
  }
  CHECK(Tracked::live == 0);
}

namespace {

/// Heap a ring takes through its allocator with one cursor, before and after one element is
/// published (which allocates the one block it lives in).
struct IdleCost {
  std::size_t with_cursor = 0;
  std::size_t first_block = 0;
  std::size_t table_entries = 0;
};

template <class T>
IdleCost idle_cost(std::size_t capacity, T element) {
  using Alloc = kincir::test::CountingAllocator<T>;
  kincir::test::AllocStats stats;
  IdleCost cost;
  {
    RingOptions o;
    o.capacity = capacity;
    o.block_size = 256;  // what the broker uses
    BroadcastRing<T, Alloc> ring(o, Alloc(&stats));
    auto c = ring.add_cursor();
    cost.with_cursor = stats.live_bytes;
    const PublishStatus published = ring.publish(std::move(element));
    REQUIRE(published == PublishStatus::ok);
    CHECK(ring.allocated_blocks() == 1);
    cost.first_block = stats.live_bytes - cost.with_cursor;
    cost.table_entries = ring.table_size();
    T out{};
    CHECK(c.try_read(out));
  }
  CHECK(stats.live_bytes == 0);
  return cost;
}

}  // namespace

TEST_CASE("Memory on demand: an idle ring costs a few kilobytes whatever its capacity", "[ring]") {
  // The ring object itself, the block table and the registry (one chunk of entries, plus the
  // record a counted cursor keeps for leaving): at most 8 KiB, the same for every capacity.
  constexpr std::size_t kBudget = std::size_t{8} * 1024;
  const std::size_t capacity = GENERATE(std::size_t{1} << 16, std::size_t{1} << 20, std::size_t{1} << 32,
                                        std::size_t{1} << 40, BroadcastRing<std::uint64_t>::kMaxCapacity);
  CAPTURE(capacity);

  const IdleCost small = idle_cost<std::uint64_t>(capacity, 7);
  CHECK(small.with_cursor + sizeof(BroadcastRing<std::uint64_t>) <= kBudget);
  CHECK(small.first_block <= 256 * 16 + 64);  // the element's block: {seq, element} slots
  CHECK(small.table_entries == 64);

  const IdleCost message = idle_cost<kincir::Message>(capacity, kincir::Message(std::string(24, 'x')));
  CHECK(message.with_cursor + sizeof(BroadcastRing<kincir::Message>) <= kBudget);
  CHECK(message.first_block <= 256 * (16 + sizeof(kincir::Message)) + 64);
  CHECK(message.table_entries == 64);

  // Exactly what a ring of 65536 elements costs.
  CHECK(small.with_cursor == idle_cost<std::uint64_t>(1 << 16, 7).with_cursor);
  CHECK(message.with_cursor == idle_cost<kincir::Message>(1 << 16, kincir::Message()).with_cursor);
}

TEST_CASE("Memory on demand: a burst costs about a slot per element and is given back", "[ring]") {
  using Alloc = kincir::test::CountingAllocator<std::uint64_t>;
  kincir::test::AllocStats stats;
  RingOptions o;
  o.capacity = 1u << 20;
  o.block_size = 256;
  {
    BroadcastRing<std::uint64_t, Alloc> ring(o, Alloc(&stats));
    auto c = ring.add_cursor();
    const std::size_t idle_bytes = stats.live_bytes;
    // A small block table and one registry chunk.
    CHECK(idle_bytes < std::size_t{8} * 1024);

    const std::uint64_t total = 1'000'000;
    std::vector<std::uint64_t> batch(1000);
    for (std::uint64_t sent = 0; sent < total; sent += batch.size()) {
      std::iota(batch.begin(), batch.end(), sent);
      REQUIRE(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);
    }
    const std::size_t backlog_blocks = ring.allocated_blocks();
    CHECK(backlog_blocks >= total / 256);
    CHECK(backlog_blocks <= total / 256 + 2);
    CHECK(ring.table_size() >= total / 256);  // the table grew with the backlog
    const std::size_t slot_bytes = (stats.live_bytes - idle_bytes) / total;
    CHECK(slot_bytes <= 2 * sizeof(std::uint64_t) + 1);  // a sequence and the element

    std::uint64_t expected = 0;
    bool in_order = true;
    std::vector<std::uint64_t> out;
    out.reserve(4096);
    while (expected < total) {
      out.clear();
      const std::size_t n = c.read_batch(std::back_inserter(out), 4096);
      REQUIRE(n > 0);
      for (auto v : out) in_order = in_order && v == expected++;
    }
    CHECK(in_order);
    CHECK(ring.allocated_blocks() <= 3);  // the block being written plus kept spares
    CHECK(ring.table_size() == 64);       // and the table is small again
    CHECK(stats.live_bytes <= idle_bytes + std::size_t{3} * (256 * 16 + 64));
  }
  CHECK(stats.live_bytes == 0);
}

TEST_CASE("The registry gives its memory back when cursors leave", "[ring]") {
  using Alloc = kincir::test::CountingAllocator<Tracked>;
  kincir::test::AllocStats stats;
  {
    BroadcastRing<Tracked, Alloc> ring(small(), Alloc(&stats));
    auto first = ring.add_cursor();
    const std::size_t one_cursor = stats.live_bytes;
    {
      std::vector<BroadcastRing<Tracked, Alloc>::Cursor> many;
      std::vector<BroadcastRing<Tracked, Alloc>::GroupCursor> groups;
      for (int i = 0; i < 100; ++i) many.push_back(ring.add_cursor());
      for (int i = 0; i < 20; ++i) groups.push_back(ring.add_group_cursor());
      CHECK(stats.live_bytes > one_cursor + 100 * sizeof(kincir::memory::detail::CursorState));
      auto batch = tracked(0, 10);
      REQUIRE(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);
      std::vector<Tracked> out;
      CHECK(many.front().read_batch(std::back_inserter(out), 5) == 5);
    }
    CHECK(ring.cursor_count() == 1);
    CHECK(ring.departed_cursors() == 0);
    // Back to the first chunk (with the records its entries keep for leaving) and the blocks that
    // still hold the first cursor's elements.
    CHECK(stats.live_bytes <=
          one_cursor + (kincir::memory::detail::kCursorsPerChunk - 1) * sizeof(kincir::memory::detail::DepartedCursor) +
              ring.allocated_blocks() * (4 * 32 + 64));
    CHECK(drain_tracked(first) == iota(0, 10));
    // A cursor that joins afterwards reuses the first chunk.
    const std::size_t now = stats.live_bytes;
    for (int i = 0; i < 1000; ++i) {
      auto c = ring.add_cursor();
      auto g = ring.add_group_cursor();
    }
    CHECK(stats.live_bytes == now);
  }
  CHECK(stats.live_bytes == 0);
  CHECK(Tracked::live == 0);
}

TEST_CASE("Steady traffic allocates nothing", "[ring]") {
  RingOptions o;
  o.capacity = 1024;
  o.block_size = 64;
  BroadcastRing<kincir::Message> ring(o);
  auto c = ring.add_cursor();
  auto warm = [&](int rounds) {
    kincir::Message out;
    for (int i = 0; i < rounds; ++i) {
      REQUIRE(ring.publish(kincir::Message()) == PublishStatus::ok);
      REQUIRE(c.try_read(out));
    }
  };
  warm(2000);  // blocks allocated and recycled once
  kincir::test::AllocScope scope;
  warm(5000);
  CHECK(scope.allocations() == 0);
}

TEST_CASE("A parked reader is woken by a publish and by close", "[ring][concurrency]") {
  RingOptions o = small();
  o.wait.spin_iterations = 0;  // park at once: a missing notify would hang the reader
  o.wait.yield_iterations = 0;
  const auto mode = GENERATE(ProducerMode::multi, ProducerMode::single);
  o.producer_mode = mode;
  BroadcastRing<std::uint64_t> ring(o);
  auto c = ring.add_cursor();
  auto g = ring.add_group_cursor();

  auto waiting = std::async(std::launch::async, [&] { return c.wait(); });
  auto group_waiting = std::async(std::launch::async, [&] { return g.wait(); });
  CHECK(waiting.wait_for(50ms) == std::future_status::timeout);
  REQUIRE(ring.publish(std::uint64_t{7}) == PublishStatus::ok);
  REQUIRE(waiting.wait_for(5s) == std::future_status::ready);
  CHECK(waiting.get() == WaitStatus::ready);
  REQUIRE(group_waiting.wait_for(5s) == std::future_status::ready);
  CHECK(group_waiting.get() == WaitStatus::ready);

  std::uint64_t v = 0;
  REQUIRE(c.try_read(v));
  REQUIRE(g.try_read(v));
  CHECK(c.wait_for(20ms) == WaitStatus::timeout);
  CHECK(g.wait_until(std::chrono::system_clock::now() + 20ms) == WaitStatus::timeout);

  waiting = std::async(std::launch::async, [&] { return c.wait(); });
  group_waiting = std::async(std::launch::async, [&] { return g.wait(); });
  CHECK(waiting.wait_for(50ms) == std::future_status::timeout);
  ring.close();
  REQUIRE(waiting.wait_for(5s) == std::future_status::ready);
  CHECK(waiting.get() == WaitStatus::closed);
  REQUIRE(group_waiting.wait_for(5s) == std::future_status::ready);
  CHECK(group_waiting.get() == WaitStatus::closed);
}

TEST_CASE("A producer parked on a full ring is woken by a reader", "[ring][concurrency]") {
  RingOptions o = small();
  o.wait.spin_iterations = 0;
  o.wait.yield_iterations = 0;
  BroadcastRing<std::uint64_t> ring(o);
  auto c = ring.add_cursor();
  auto fill = iota(0, 16);
  REQUIRE(ring.publish(fill.begin(), fill.end()) == PublishStatus::ok);
  auto blocked = std::async(std::launch::async, [&] { return ring.publish(std::uint64_t{16}); });
  CHECK(blocked.wait_for(50ms) == std::future_status::timeout);
  std::uint64_t v = 0;
  REQUIRE(c.try_read(v));
  REQUIRE(blocked.wait_for(5s) == std::future_status::ready);
  CHECK(blocked.get() == PublishStatus::ok);
  CHECK(ring.tail() == 17);
}

TEST_CASE("No lost wake-ups: ping-pong between two parked threads", "[ring][concurrency]") {
  RingOptions o = small();
  o.wait.spin_iterations = 0;  // every wait parks
  o.wait.yield_iterations = 0;
  const auto mode = GENERATE(ProducerMode::multi, ProducerMode::single);
  o.producer_mode = mode;
  BroadcastRing<std::uint64_t> ping(o);
  BroadcastRing<std::uint64_t> pong(o);
  auto ping_reader = ping.add_cursor();
  auto pong_reader = pong.add_cursor();
#if defined(KINCIR_TEST_TSAN)
  constexpr std::uint64_t kRounds = 2'000;
#else
  constexpr std::uint64_t kRounds = 20'000;
#endif
  auto echo = std::async(std::launch::async, [&] {
    std::uint64_t v = 0;
    std::uint64_t n = 0;
    while (ping_reader.wait() == WaitStatus::ready) {
      while (ping_reader.try_read(v)) {
        if (v != n++) return false;
        if (pong.publish(std::uint64_t{v}) != PublishStatus::ok) return false;
      }
    }
    return n == kRounds;
  });
  auto rounds = std::async(std::launch::async, [&] {
    std::uint64_t v = 0;
    for (std::uint64_t i = 0; i < kRounds; ++i) {
      if (ping.publish(std::uint64_t{i}) != PublishStatus::ok) return false;
      if (pong_reader.wait() != WaitStatus::ready || !pong_reader.try_read(v) || v != i) return false;
    }
    return true;
  });
  const bool finished = rounds.wait_for(60s) == std::future_status::ready;
  CHECK(finished);  // a lost wake-up would leave both threads parked
  ping.close();
  pong.close();
  CHECK(rounds.get());
  CHECK(echo.get());
}
