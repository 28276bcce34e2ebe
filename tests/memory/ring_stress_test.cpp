// Stress tests of BroadcastRing on real threads: P producers x C independent cursors x a group of
// G readers, for each full policy and both producer modes; plus cursors joining and leaving while
// producers run. Every independent cursor must see every element exactly once in per-producer
// order; the group must see each element exactly once in total.
#include <kincir/memory/ring.hpp>

#include "support/catch.hpp"

#include <algorithm>  // std::all_of
#include <atomic>     // start flag, counters
#include <cstdint>    // std::uint64_t
#include <iterator>   // std::back_inserter
#include <optional>   // the group cursor of a scenario
#include <string>     // section names
#include <thread>     // producers and readers
#include <vector>     // batches, per-reader results

#include "memory/ring_test_support.hpp"

using kincir::memory::BroadcastRing;
using kincir::memory::FullPolicy;
using kincir::memory::ProducerMode;
using kincir::memory::PublishStatus;
using kincir::memory::RingOptions;
using kincir::memory::WaitStatus;
using kincir::test::AllocStats;
using kincir::test::CountingAllocator;
using kincir::test::Hinted;
using kincir::test::Stalling;
using kincir::test::Tracked;

namespace {

struct Scenario {
  int producers;
  int cursors;
  int group_readers;
  FullPolicy policy;
  ProducerMode mode;
  std::size_t capacity;
  std::size_t block_size;
};

std::string describe(const Scenario& s) {
  const char* policy = s.policy == FullPolicy::block ? "block" : s.policy == FullPolicy::fail ? "fail" : "overtake";
  return std::to_string(s.producers) + "P x " + std::to_string(s.cursors) + "C x group of " +
         std::to_string(s.group_readers) + ", " + policy + (s.mode == ProducerMode::single ? ", single" : ", multi");
}

constexpr int kProducerShift = 48;  // element = producer << 48 | index within that producer

std::uint64_t value_of(std::uint64_t v) { return v; }
std::uint64_t value_of(const Tracked& t) { return t.value; }

std::uint64_t value_of(const Hinted& h) { return h.tracked.value; }

/// What one reader saw: per producer, the number of elements and whether they came in order.
struct Seen {
  static constexpr std::uint64_t kAny = ~std::uint64_t{0};

  std::vector<std::uint64_t> next;  // per producer: next index expected (exact) or minimum (overtake)
  std::uint64_t count = 0;
  bool ordered = true;
  bool gapless = true;
  std::vector<std::uint64_t> values;  // group readers keep everything for the exactly-once check

  /// `joined_late`: the cursor joined while producers ran, so its first element of each producer
  /// may have any index.
  explicit Seen(int producers, bool joined_late = false)
      : next(static_cast<std::size_t>(producers), joined_late ? kAny : 0) {}

  void add(std::uint64_t v, bool keep) {
    const auto p = static_cast<std::size_t>(v >> kProducerShift);
    const std::uint64_t i = v & ((std::uint64_t{1} << kProducerShift) - 1);
    if (p < next.size() && next[p] == kAny) next[p] = i;
    if (p >= next.size() || i < next[p]) {
      ordered = false;
    } else {
      if (i != next[p]) gapless = false;
      next[p] = i + 1;
    }
    ++count;
    if (keep) values.push_back(v);
  }
};

/// Reads with a mix of the three read functions until the ring is closed and drained.
template <class Cursor, class Elem>
void read_all(Cursor& cursor, Seen& seen, bool keep, unsigned seed) {
  std::vector<Elem> buffer;
  buffer.reserve(512);
  Elem one{};
  unsigned state = seed * 2654435761u + 1;
  for (;;) {
    state = state * 1664525u + 1013904223u;
    const std::size_t max = 1 + (state >> 8) % 300;
    std::size_t n = 0;
    switch ((state >> 20) % 3) {
      case 0:
        buffer.clear();
        n = cursor.read_batch(std::back_inserter(buffer), max);
        for (const auto& e : buffer) seen.add(value_of(e), keep);
        break;
      case 1: n = cursor.poll(max, [&](const Elem& e) { seen.add(value_of(e), keep); }); break;
      default:
        if (cursor.try_read(one)) {
          seen.add(value_of(one), keep);
          n = 1;
        }
        break;
    }
    if (n == 0 && cursor.wait() == WaitStatus::closed) {
      // Closed and drained for this cursor; anything published concurrently with close() is
      // picked up by one last look.
      while (cursor.poll(1024, [&](const Elem& e) { seen.add(value_of(e), keep); }) != 0) {
      }
      return;
    }
  }
}

template <class Elem>
void run(const Scenario& s, std::uint64_t total) {
  RingOptions options;
  options.capacity = s.capacity;
  options.block_size = s.block_size;
  options.full_policy = s.policy;
  options.producer_mode = s.mode;
  BroadcastRing<Elem> ring(options);

  std::vector<typename BroadcastRing<Elem>::Cursor> cursors;
  for (int i = 0; i < s.cursors; ++i) cursors.push_back(ring.add_cursor());
  std::optional<typename BroadcastRing<Elem>::GroupCursor> group;
  if (s.group_readers > 0) group.emplace(ring.add_group_cursor());

  const std::uint64_t per_producer = total / static_cast<std::uint64_t>(s.producers);
  std::vector<Seen> cursor_seen(static_cast<std::size_t>(s.cursors), Seen(s.producers));
  std::vector<Seen> group_seen(static_cast<std::size_t>(s.group_readers), Seen(s.producers));
  std::atomic<bool> publish_error{false};
  std::atomic<std::uint64_t> full_retries{0};

  std::vector<std::thread> threads;
  for (int i = 0; i < s.cursors; ++i) {
    threads.emplace_back([&, i] {
      read_all<typename BroadcastRing<Elem>::Cursor, Elem>(cursors[static_cast<std::size_t>(i)],
                                                           cursor_seen[static_cast<std::size_t>(i)], false,
                                                           static_cast<unsigned>(i));
    });
  }
  for (int i = 0; i < s.group_readers; ++i) {
    threads.emplace_back([&, i] {
      read_all<typename BroadcastRing<Elem>::GroupCursor, Elem>(*group, group_seen[static_cast<std::size_t>(i)], true,
                                                                static_cast<unsigned>(100 + i));
    });
  }
  std::vector<std::thread> producers;
  for (int p = 0; p < s.producers; ++p) {
    producers.emplace_back([&, p] {
      std::vector<Elem> batch;
      unsigned state = static_cast<unsigned>(p) * 7919u + 3;
      std::uint64_t i = 0;
      const std::uint64_t base = static_cast<std::uint64_t>(p) << kProducerShift;
      while (i < per_producer) {
        state = state * 1664525u + 1013904223u;
        const unsigned pick = (state >> 16) % 8;  // mixed batch sizes: mostly small, sometimes large
        const std::uint64_t want = pick < 3 ? 1 : pick < 6 ? 1 + (state >> 4) % 16 : pick < 7 ? 64 : 200;
        const std::uint64_t n = std::min(want, per_producer - i);
        batch.clear();
        for (std::uint64_t k = 0; k < n; ++k) batch.emplace_back(base | (i + k));
        PublishStatus status = PublishStatus::ok;
        if (n == 1 && (state & 1) != 0) {
          status = ring.publish(std::move(batch.front()));
        } else {
          status = ring.publish(batch.begin(), batch.end());
        }
        if (status == PublishStatus::full) {  // fail policy: nothing was published, try again
          full_retries.fetch_add(1, std::memory_order_relaxed);
          std::this_thread::yield();
          continue;
        }
        if (status != PublishStatus::ok) publish_error = true;
        i += n;
      }
    });
  }
  for (auto& t : producers) t.join();
  ring.close();
  for (auto& t : threads) t.join();

  CHECK_FALSE(publish_error);
  const bool exact = s.policy != FullPolicy::overtake;
  for (std::size_t c = 0; c < cursor_seen.size(); ++c) {
    const Seen& seen = cursor_seen[c];
    CHECK(seen.ordered);
    if (exact) {
      CHECK(seen.gapless);
      CHECK(seen.count == per_producer * static_cast<std::uint64_t>(s.producers));
      CHECK(cursors[c].lost() == 0);
    } else {
      CHECK(seen.count + cursors[c].lost() == per_producer * static_cast<std::uint64_t>(s.producers));
    }
  }
  if (group) {
    std::vector<std::uint8_t> hits(static_cast<std::size_t>(per_producer) * static_cast<std::size_t>(s.producers), 0);
    std::uint64_t received = 0;
    bool in_range = true;
    for (const Seen& seen : group_seen) {
      CHECK(seen.ordered);  // each member's claims advance, so per producer its elements increase
      for (std::uint64_t v : seen.values) {
        const auto p = static_cast<std::size_t>(v >> kProducerShift);
        const auto i = static_cast<std::size_t>(v & ((std::uint64_t{1} << kProducerShift) - 1));
        if (p >= static_cast<std::size_t>(s.producers) || i >= per_producer) {
          in_range = false;
          continue;
        }
        ++hits[p * static_cast<std::size_t>(per_producer) + i];
      }
      received += seen.count;
    }
    CHECK(in_range);
    CHECK(std::all_of(hits.begin(), hits.end(), [](std::uint8_t h) { return h <= 1; }));  // never twice
    if (exact) {
      CHECK(std::all_of(hits.begin(), hits.end(), [](std::uint8_t h) { return h == 1; }));
      CHECK(group->lost() == 0);
    } else {
      CHECK(received + group->lost() == per_producer * static_cast<std::uint64_t>(s.producers));
    }
  }
  if (s.policy == FullPolicy::fail) CHECK(full_retries > 0);  // the policy was exercised
}

}  // namespace

TEST_CASE("Stress: producers x cursors x a group, every policy", "[ring][concurrency][stress]") {
  using FP = FullPolicy;
  using PM = ProducerMode;
  const std::uint64_t total = kincir::test::kStressElements;
  // P, C, G, policy, mode, capacity, block size
  const Scenario scenarios[] = {
      {1, 1, 0, FP::block, PM::single, 1024, 64},
      {1, 3, 2, FP::block, PM::single, 4096, 256},
      {2, 2, 2, FP::block, PM::multi, 1024, 64},
      {3, 1, 3, FP::block, PM::multi, 256, 16},
      {4, 0, 2, FP::block, PM::multi, 512, 64},
      {2, 2, 1, FP::fail, PM::multi, 256, 32},
      {1, 2, 2, FP::fail, PM::single, 128, 16},
      {2, 2, 2, FP::overtake, PM::multi, 256, 32},
      {1, 2, 1, FP::overtake, PM::single, 64, 16},
      // Small blocks and a large capacity: the block table grows and shrinks while readers read.
      {2, 2, 2, FP::block, PM::multi, 4096, 4},
      {1, 2, 1, FP::block, PM::single, 4096, 4},
      {2, 1, 1, FP::overtake, PM::multi, 2048, 4},
  };
  for (const Scenario& s : scenarios) {
    SECTION(describe(s)) { run<std::uint64_t>(s, total); }
  }
}

TEST_CASE("Stress with counted elements: lifetime under fan-out, groups and overtaking",
          "[ring][concurrency][stress]") {
  using FP = FullPolicy;
  using PM = ProducerMode;
  const std::uint64_t total = kincir::test::kStressElements / 4;
  const Scenario scenarios[] = {
      {2, 2, 2, FP::block, PM::multi, 512, 64},    {1, 2, 2, FP::overtake, PM::single, 64, 16},
      {2, 1, 2, FP::overtake, PM::multi, 128, 32}, {2, 1, 1, FP::fail, PM::multi, 128, 16},
      {2, 2, 1, FP::block, PM::multi, 4096, 4},    {1, 1, 2, FP::overtake, PM::single, 2048, 4},
  };
  for (const Scenario& s : scenarios) {
    SECTION(describe(s)) {
      Tracked::reset_counts();
      run<Tracked>(s, total);
      CHECK(Tracked::live == 0);  // every element constructed in the ring was destroyed once
      CHECK(Tracked::errors == 0);
    }
  }
}

TEST_CASE("Stress with prefetch hints: readers look ahead only at what they may read", "[ring][concurrency][stress]") {
  using FP = FullPolicy;
  using PM = ProducerMode;
  const std::uint64_t total = kincir::test::kStressElements / 4;
  const Scenario scenarios[] = {
      {2, 2, 2, FP::block, PM::multi, 512, 64},
      {1, 2, 2, FP::block, PM::single, 1024, 32},
      {2, 1, 2, FP::overtake, PM::multi, 128, 32},
      {1, 2, 1, FP::overtake, PM::single, 256, 64},
  };
  for (const Scenario& s : scenarios) {
    SECTION(describe(s)) {
      Tracked::reset_counts();
      Hinted::hints.store(0);
      run<Hinted>(s, total);
      CHECK(Tracked::live == 0);
      CHECK(Tracked::errors == 0);  // no hint (nor anything else) saw a destroyed element
      CHECK(Hinted::hints.load() > 0);
    }
  }
}

TEST_CASE("Stress: cursors join and leave while producers publish", "[ring][concurrency][stress]") {
  const auto mode = GENERATE(ProducerMode::multi, ProducerMode::single);
  const auto policy = GENERATE(FullPolicy::block, FullPolicy::overtake);
  Tracked::reset_counts();
  {
    RingOptions options;
    options.capacity = 256;
    options.block_size = 16;
    options.producer_mode = mode;
    options.full_policy = policy;
    BroadcastRing<Tracked> ring(options);
    auto steady = ring.add_cursor();
    const std::uint64_t total = kincir::test::kStressElements / 2;
    const int producers = mode == ProducerMode::single ? 1 : 2;
    const std::uint64_t per_producer = total / static_cast<std::uint64_t>(producers);
    std::atomic<bool> done{false};
    std::atomic<bool> churn_ok{true};
    std::atomic<unsigned> rounds{0};

    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
      threads.emplace_back([&, p] {
        std::vector<Tracked> batch;
        const std::uint64_t base = static_cast<std::uint64_t>(p) << kProducerShift;
        for (std::uint64_t i = 0; i < per_producer;) {
          const std::uint64_t n = std::min<std::uint64_t>(1 + i % 37, per_producer - i);
          batch.clear();
          for (std::uint64_t k = 0; k < n; ++k) batch.emplace_back(base | (i + k));
          (void)ring.publish(batch.begin(), batch.end());
          i += n;
          if (i % 1024 < n) std::this_thread::yield();  // leave the churn thread some time
          // Halfway, make sure cursors have come and gone while this producer runs.
          if (i >= per_producer / 2 && i - n < per_producer / 2) {
            while (rounds.load(std::memory_order_relaxed) < 20) std::this_thread::yield();
          }
        }
      });
    }
    // Joins and leaves: independent cursors and groups that read a little, then go.
    threads.emplace_back([&] {
      Tracked t;
      unsigned round = 0;
      while (!done.load(std::memory_order_acquire)) {
        rounds.store(++round, std::memory_order_relaxed);
        std::this_thread::yield();  // churn hard, but let the others run on 2 cores
        if (round % 3 == 0) {
          auto g = ring.add_group_cursor();
          for (int k = 0; k < static_cast<int>(round % 50); ++k) (void)g.try_read(t);
        } else {
          auto c = ring.add_cursor();
          Seen seen(producers, true);
          for (int k = 0; k < static_cast<int>(round % 70); ++k) {
            if (c.try_read(t)) seen.add(t.value, false);
          }
          if (!seen.ordered || (policy == FullPolicy::block && !seen.gapless)) churn_ok = false;
        }
      }
    });
    Seen seen(producers);
    threads.emplace_back([&] {
      Tracked t;
      while (seen.count + steady.lost() < total) {
        if (steady.try_read(t)) {
          seen.add(t.value, false);
        } else {
          std::this_thread::yield();
        }
      }
      done = true;
    });
    for (auto& t : threads) t.join();
    CHECK(churn_ok);
    CHECK(rounds >= 20);  // cursors really came and went during the run
    CHECK(seen.ordered);
    if (policy == FullPolicy::block) {
      CHECK(seen.gapless);
      CHECK(seen.count == total);
    }
    CHECK(ring.cursor_count() == 1);
  }
  CHECK(Tracked::live == 0);
  CHECK(Tracked::errors == 0);
}

TEST_CASE("Departed cursors: leaving while a batch is written costs a small record until it is published",
          "[ring][concurrency]") {
  const auto mode = GENERATE(ProducerMode::multi, ProducerMode::single);
  using Alloc = CountingAllocator<Stalling>;
  using Ring = BroadcastRing<Stalling, Alloc>;
  AllocStats stats;
  {
    RingOptions options;
    options.capacity = 1024;
    options.block_size = 64;
    options.producer_mode = mode;
    Ring ring(options, Alloc(&stats));
    auto anchor = ring.add_cursor();
    std::vector<Stalling> batch;
    Stalling out;
    for (std::uint64_t i = 0; i < 100; ++i) {  // blocks allocated and recycled
      batch.clear();
      for (std::uint64_t k = 0; k < 30; ++k) batch.emplace_back(k);
      REQUIRE(ring.publish(batch.begin(), batch.end()) == PublishStatus::ok);
      while (anchor.try_read(out)) {
      }
    }
    { auto c = ring.add_cursor(); }
    const std::size_t before = stats.live_bytes;

    // A producer stops in the middle of a batch; 2000 cursors come and go meanwhile. Each of them
    // may have been counted for that batch (its producer may read the membership at any moment),
    // so each leaves a record behind, not a registry entry.
    batch.clear();
    for (std::uint64_t k = 0; k < 8; ++k) batch.emplace_back(1000 + k);
    Stalling::arm();
    PublishStatus status = PublishStatus::closed;
    std::thread producer([&] { status = ring.publish(batch.begin(), batch.end()); });
    while (!Stalling::paused.load()) std::this_thread::yield();
    constexpr std::size_t kRounds = 2000;
    for (std::size_t i = 0; i < kRounds; ++i) {
      auto c = ring.add_cursor();
      CHECK_FALSE(c.try_read(out));
    }
    CHECK(ring.departed_cursors() == kRounds);
    CHECK(ring.cursor_count() == 1);
    const std::size_t during = stats.live_bytes;
    CHECK(during - before <= kRounds * sizeof(kincir::memory::detail::DepartedCursor));

    // The producer releases them when it has published the batch: no further join is needed.
    Stalling::resume();
    producer.join();
    CHECK(status == PublishStatus::ok);
    CHECK(ring.departed_cursors() == 0);
    std::vector<std::uint64_t> got;
    while (anchor.try_read(out)) got.push_back(out.value);
    CHECK(got.size() == 8);
    CHECK(stats.live_bytes <= before + 64 * (16 + sizeof(Stalling)) + 64);  // at most one more block
  }
  CHECK(stats.live_bytes == 0);
  CHECK(Stalling::live == 0);
}

TEST_CASE("Stress: cursor churn while producers publish leaves no registry memory behind",
          "[ring][concurrency][stress]") {
  const auto mode = GENERATE(ProducerMode::multi, ProducerMode::single);
  using Alloc = CountingAllocator<Tracked>;
  using Ring = BroadcastRing<Tracked, Alloc>;
  Tracked::reset_counts();
  AllocStats stats;
  {
    RingOptions options;
    options.capacity = 4096;
    options.block_size = 64;
    options.producer_mode = mode;
    Ring ring(options, Alloc(&stats));
    auto anchor = ring.add_cursor();
    Tracked t;
    auto settle = [&] {  // the anchor reads everything, then one more cursor comes and goes
      while (anchor.try_read(t)) {
      }
      { auto c = ring.add_cursor(); }
    };
    {
      std::vector<Tracked> warm;
      for (std::uint64_t k = 0; k < std::uint64_t{3} * 64; ++k) warm.emplace_back(k);
      REQUIRE(ring.publish(warm.begin(), warm.end()) == PublishStatus::ok);
      settle();
    }
    const std::size_t before = stats.live_bytes;

    const int producers = mode == ProducerMode::single ? 1 : 2;
    const std::uint64_t per_producer = kincir::test::kStressElements / 4 / static_cast<std::uint64_t>(producers);
    std::atomic<int> running{producers};
    std::atomic<std::uint64_t> churned{0};
    std::atomic<bool> ordered{true};
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
      threads.emplace_back([&, p] {
        std::vector<Tracked> batch;
        const std::uint64_t base = static_cast<std::uint64_t>(p) << kProducerShift;
        for (std::uint64_t i = 0; i < per_producer;) {
          const std::uint64_t n = std::min<std::uint64_t>(i % 5 == 0 ? 64 : 1, per_producer - i);
          batch.clear();
          for (std::uint64_t k = 0; k < n; ++k) batch.emplace_back(base | (i + k));
          (void)ring.publish(batch.begin(), batch.end());
          i += n;
        }
        running.fetch_sub(1);
      });
    }
    threads.emplace_back([&] {  // the long-lived subscriber
      Tracked x;
      Seen seen(producers, false);
      while (running.load() != 0) {
        if (anchor.try_read(x)) {
          seen.add(x.value, false);
        } else {
          std::this_thread::yield();
        }
      }
      if (!seen.ordered || !seen.gapless) ordered = false;
    });
    threads.emplace_back([&] {  // subscribers that come, look and go
      Tracked x;
      while (running.load() != 0) {
        if (churned.load() % 3 == 0) {
          auto g = ring.add_group_cursor();
          (void)g.try_read(x);
        } else {
          auto c = ring.add_cursor();
          (void)c.try_read(x);
        }
        churned.fetch_add(1);
      }
    });
    for (auto& th : threads) th.join();
    settle();
    CHECK(ordered);
    CHECK(churned.load() > 0);
    CHECK(ring.cursor_count() == 1);
    CHECK(ring.departed_cursors() == 0);
    CHECK(Tracked::live == 1);  // t
    // Registry and table as before; the blocks: the one being written and the kept spares.
    CHECK(ring.table_size() <= 64);  // the small table again
    CHECK(stats.live_bytes <= before + 3 * (64 * (16 + sizeof(Tracked)) + 64));
  }
  CHECK(stats.live_bytes == 0);
  CHECK(Tracked::live == 0);
  CHECK(Tracked::errors == 0);
}
