// Replaces the global allocation functions to count calls (see alloc_counter.hpp).
#include "support/alloc_counter.hpp"

#include <atomic>   // process-wide counters
#include <cstdlib>  // std::malloc, std::free
#include <new>      // std::bad_alloc, the replaced operators

namespace {

thread_local kincir::test::AllocCounts tls_counts;
std::atomic<std::size_t> global_allocations{0};
std::atomic<std::size_t> global_deallocations{0};
std::atomic<std::size_t> global_bytes{0};

void* counted_alloc(std::size_t size) {
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) throw std::bad_alloc();
  ++tls_counts.allocations;
  tls_counts.bytes += size;
  global_allocations.fetch_add(1, std::memory_order_relaxed);
  global_bytes.fetch_add(size, std::memory_order_relaxed);
  return p;
}

void counted_free(void* p) noexcept {
  if (p == nullptr) return;
  ++tls_counts.deallocations;
  global_deallocations.fetch_add(1, std::memory_order_relaxed);
  std::free(p);
}

}  // namespace

namespace kincir::test {

AllocCounts thread_alloc_counts() noexcept { return tls_counts; }

AllocCounts global_alloc_counts() noexcept {
  return {global_allocations.load(std::memory_order_relaxed), global_deallocations.load(std::memory_order_relaxed),
          global_bytes.load(std::memory_order_relaxed)};
}

}  // namespace kincir::test

void* operator new(std::size_t size) { return counted_alloc(size); }
void* operator new[](std::size_t size) { return counted_alloc(size); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }
