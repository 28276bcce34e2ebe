#include <kincir/core/bytes.hpp>

#include <cstdlib>    // std::abort
#include <limits>     // an impossible size
#include <new>        // std::bad_alloc
#include <span>       // Bytes::build
#include <stdexcept>  // a throwing writer
#include <string>     // adoption from std::string
#include <thread>     // sharing across threads
#include <vector>     // adoption from std::vector

#include "support/alloc_counter.hpp"
#include "support/catch.hpp"

using kincir::Bytes;
using kincir::test::AllocScope;

TEST_CASE("Bytes adopts a vector without copying its bytes", "[bytes]") {
  std::vector<std::uint8_t> v(1024, 7);
  const auto* original = v.data();
  AllocScope scope;
  Bytes b(std::move(v));
  CHECK(b.data() == original);
  CHECK(b.size() == 1024);
  CHECK(scope.allocations() <= 1);  // at most a slab of shared owners, never the 1 KiB
}

TEST_CASE("Adopted payloads share slabs of owners: one allocation per 31 payloads", "[bytes]") {
  using kincir::detail::ControlSlab;
  std::size_t allocations = 0;
  std::size_t deallocations = 0;
  std::thread([&] {  // a thread of its own: its slab is released when it ends
    const std::size_t count = std::size_t{10} * ControlSlab::kCells;
    std::vector<Bytes> kept;
    kept.reserve(count);
    std::vector<std::vector<std::uint8_t>> sources;
    for (std::size_t i = 0; i < count; ++i) sources.emplace_back(300, static_cast<std::uint8_t>(i));
    {
      const AllocScope scope;
      for (auto& source : sources) kept.emplace_back(std::move(source));
      allocations = scope.allocations();
    }
    for (std::size_t i = 0; i < kept.size(); ++i) {
      if (kept[i].size() != 300 || kept[i][299] != static_cast<std::uint8_t>(i)) std::abort();
    }
    const AllocScope scope;
    kept.clear();  // 310 buffers and the 10 full slabs
    deallocations = scope.deallocations();
  })
      .join();
  CHECK(allocations <= 11);  // 10 slabs, or 11 when the thread's first slab started mid-way
  CHECK(deallocations >= 310 + 9);
}

TEST_CASE("A slab of owners outlives the thread that carved it", "[bytes][concurrency]") {
  const auto before = kincir::test::global_alloc_counts();
  Bytes survivor;
  std::thread([&] { survivor = Bytes(std::vector<std::uint8_t>(400, 5)); }).join();
  CHECK(survivor.size() == 400);
  CHECK(survivor[399] == 5);
  Bytes copy = survivor;  // NOLINT(performance-unnecessary-copy-initialization): the copy is the test
  survivor = Bytes();
  CHECK(copy.use_count() == 1);
  copy = Bytes();  // the last owner: the buffer, then the slab (its other cells went with the thread)
  const auto after = kincir::test::global_alloc_counts();
  CHECK(after.allocations - before.allocations == after.deallocations - before.deallocations);
}

namespace {

/// Adopts and drops a payload when its thread ends, after the thread's slab guard (constructed
/// later, so destroyed earlier) has released the thread's slab.
struct LateAdopter {
  bool armed = false;
  LateAdopter() = default;
  LateAdopter(const LateAdopter&) = delete;
  LateAdopter& operator=(const LateAdopter&) = delete;
  ~LateAdopter() {
    if (armed) {
      const Bytes late(std::vector<std::uint8_t>(500, 9));
      if (late.size() != 500) std::abort();
    }
  }
};

}  // namespace

TEST_CASE("A payload adopted while its thread ends leaks no slab", "[bytes][concurrency]") {
  const auto before = kincir::test::global_alloc_counts();
  for (int i = 0; i < 3; ++i) {
    std::thread([] {
      thread_local LateAdopter late;  // first: destroyed last
      late.armed = true;
      const Bytes early(std::vector<std::uint8_t>(400, 1));  // the thread's first slab, and its guard
      if (early.size() != 400) std::abort();
    }).join();
  }
  const auto after = kincir::test::global_alloc_counts();
  CHECK(after.allocations - before.allocations == after.deallocations - before.deallocations);
}

TEST_CASE("A payload too large to allocate throws instead of overflowing the size", "[bytes]") {
  const std::size_t huge = std::numeric_limits<std::size_t>::max() - 4;
  CHECK_THROWS_AS(Bytes::filled(huge, 1), std::bad_alloc);
  CHECK_THROWS_AS(Bytes::build(huge, [](std::span<std::uint8_t>) {}), std::bad_alloc);
}

TEST_CASE("Bytes adopts a heap string without copying its bytes", "[bytes]") {
  std::string s(Bytes::kCopyAtMost + 1, 'x');
  const auto* original = reinterpret_cast<const std::uint8_t*>(s.data());
  Bytes b(std::move(s));
  CHECK(b.data() == original);
  CHECK(b.view() == std::string(Bytes::kCopyAtMost + 1, 'x'));
}

TEST_CASE("Bytes copies a small container into one allocation and releases the container", "[bytes]") {
  std::string s(Bytes::kCopyAtMost, 's');
  std::vector<std::uint8_t> v(26, 9);
  AllocScope scope;
  Bytes from_string(std::move(s));
  Bytes from_vector(std::move(v));
  CHECK(scope.allocations() == 2);    // one block each: count and bytes together
  CHECK(scope.deallocations() == 2);  // the containers' blocks, at once
  CHECK(s.empty());                   // NOLINT(bugprone-use-after-move): left empty, as adoption leaves it
  CHECK(v.empty());                   // NOLINT(bugprone-use-after-move)
  CHECK(from_string.view() == std::string(Bytes::kCopyAtMost, 's'));
  CHECK(from_vector.size() == 26);
  CHECK(from_vector[25] == 9);
  const Bytes shared = from_vector;  // NOLINT(performance-unnecessary-copy-initialization): sharing is the test
  CHECK(from_vector.use_count() == 2);
}

TEST_CASE("Bytes::filled and Bytes::build make a payload in one allocation", "[bytes]") {
  AllocScope scope;
  const Bytes zeros = Bytes::filled(1024, 0);
  const Bytes built = Bytes::build(5, [](std::span<std::uint8_t> out) {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>('a' + i);
  });
  CHECK(scope.allocations() == 2);
  CHECK(zeros.size() == 1024);
  CHECK(zeros[0] == 0);
  CHECK(zeros[1023] == 0);
  CHECK(built.view() == "abcde");
  CHECK(Bytes::filled(0, 1).empty());
  CHECK(Bytes::build(0, [](std::span<std::uint8_t>) {}).empty());
}

TEST_CASE("Bytes::build releases the buffer when the writer throws", "[bytes]") {
  AllocScope scope;
  CHECK_THROWS_AS(Bytes::build(64, [](std::span<std::uint8_t>) { throw std::runtime_error("no"); }),
                  std::runtime_error);
  CHECK(scope.allocations() == scope.deallocations());
}

TEST_CASE("Bytes keeps a short string's content", "[bytes]") {
  Bytes b(std::string("hi"));
  CHECK(b.view() == "hi");
  CHECK(b.size() == 2);
}

TEST_CASE("Bytes::from_static neither allocates nor counts references", "[bytes]") {
  static constexpr char kText[] = "static payload";
  AllocScope scope;
  Bytes b = Bytes::from_static(kText);
  Bytes copy = b;  // NOLINT(performance-unnecessary-copy-initialization): the copy is the test
  CHECK(scope.allocations() == 0);
  CHECK(reinterpret_cast<const char*>(b.data()) == kText);
  CHECK(copy.data() == b.data());
  CHECK(b.use_count() == 0);
}

TEST_CASE("Bytes::copy_from copies into one allocation", "[bytes]") {
  std::string source = "copied bytes";
  AllocScope scope;
  Bytes b = Bytes::copy_from(source);
  CHECK(scope.allocations() == 1);
  CHECK(b.view() == source);
  CHECK(static_cast<const void*>(b.data()) != static_cast<const void*>(source.data()));
  CHECK(Bytes::copy_from(std::string_view{}).empty());
}

TEST_CASE("Copies share the buffer and release it once", "[bytes]") {
  AllocScope scope;
  {
    Bytes a = Bytes::copy_from(std::string_view("shared"));
    Bytes b = a;  // NOLINT(performance-unnecessary-copy-initialization): the copy is the test
    Bytes c;
    c = b;
    CHECK(a.use_count() == 3);
    CHECK(b.data() == a.data());
    Bytes d = std::move(c);
    CHECK(c.empty());  // NOLINT(bugprone-use-after-move): moved-from state is documented empty
    CHECK(a.use_count() == 3);
  }
  CHECK(scope.allocations() == scope.deallocations());
}

TEST_CASE("slice is a zero-copy view that keeps the buffer alive", "[bytes]") {
  Bytes slice;
  {
    Bytes whole = Bytes::copy_from(std::string_view("hello world"));
    slice = whole.slice(6, 5);
    CHECK(slice.data() == whole.data() + 6);
    CHECK(whole.use_count() == 2);
  }
  CHECK(slice.view() == "world");
  CHECK(slice.use_count() == 1);
  CHECK(slice.slice(3).view() == "ld");
  CHECK(slice.slice(10).empty());              // offset clamped
  CHECK(slice.slice(1, 99).view() == "orld");  // count clamped
}

TEST_CASE("Bytes equality compares contents", "[bytes]") {
  CHECK(Bytes::copy_from(std::string_view("abc")) == Bytes(std::string("abc")));
  CHECK_FALSE(Bytes::copy_from(std::string_view("abc")) == Bytes::copy_from(std::string_view("abd")));
  CHECK(Bytes() == Bytes::from_static(std::string_view{}));
}

TEST_CASE("Bytes shared across threads is freed exactly once", "[bytes][concurrency]") {
  const auto before = kincir::test::global_alloc_counts();
  {
    Bytes original = Bytes::copy_from(std::string_view("shared across threads"));
    std::vector<std::thread> threads;
    threads.reserve(4);
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([original] {
        for (int i = 0; i < 10'000; ++i) {
          Bytes copy = original;  // NOLINT(performance-unnecessary-copy-initialization): the copy is the test
          Bytes piece = copy.slice(7, 6);
          if (piece.view() != "across") std::abort();
        }
      });
    }
    for (auto& t : threads) t.join();
    CHECK(original.use_count() == 1);
  }
  const auto after = kincir::test::global_alloc_counts();
  // Every allocation made above (the buffer, thread state) has been freed again.
  CHECK(after.allocations - before.allocations == after.deallocations - before.deallocations);
}

TEST_CASE("The last owner frees, whichever thread drops its copy last", "[bytes][concurrency]") {
  // A sole owner releases without a read-modify-write; when copies are dropped concurrently, the
  // counting path must still free exactly once (a double or missing free shows in the counts, and
  // under the sanitizers).
  const auto before = kincir::test::global_alloc_counts();
  std::thread([] {  // adopted on a thread of its own, whose slab of owners goes when it ends
    for (int round = 0; round < 200; ++round) {
      Bytes original(std::vector<std::uint8_t>(1024, 3));
      Bytes first = original;   // NOLINT(performance-unnecessary-copy-initialization): the copy is the test
      Bytes second = original;  // NOLINT(performance-unnecessary-copy-initialization): the copy is the test
      std::thread a([b = std::move(first)]() mutable { b = Bytes(); });
      std::thread b([b = std::move(second)]() mutable { b = Bytes(); });
      original = Bytes();
      a.join();
      b.join();
    }
  })
      .join();
  const auto after = kincir::test::global_alloc_counts();
  CHECK(after.allocations - before.allocations == after.deallocations - before.deallocations);
}

TEST_CASE("prefetch changes nothing", "[bytes]") {
  const Bytes none;
  const Bytes fixed = Bytes::from_static(std::string_view("static"));
  const Bytes owned(std::vector<std::uint8_t>(512, 9));
  const Bytes piece = owned.slice(100, 10);
  none.prefetch();
  fixed.prefetch();
  owned.prefetch();
  piece.prefetch();
  CHECK(none.empty());
  CHECK(fixed.view() == "static");
  CHECK(owned.use_count() == 2);
  CHECK(piece.size() == 10);
  CHECK(piece[0] == 9);
}
