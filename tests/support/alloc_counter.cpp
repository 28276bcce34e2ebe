// Replaces the global allocation functions to count calls (see alloc_counter.hpp).
#include "support/alloc_counter.hpp"

#include <atomic>   // process-wide counters
#include <cstddef>  // std::max_align_t
#include <cstdlib>  // std::malloc, std::aligned_alloc, std::free
#include <new>      // std::bad_alloc, the replaced operators

namespace {

thread_local kincir::test::AllocCounts tls_counts;
std::atomic<std::size_t> global_allocations{0};
std::atomic<std::size_t> global_deallocations{0};
std::atomic<std::size_t> global_bytes{0};

void* counted_alloc(std::size_t size, std::size_t alignment = 0) noexcept {
  void* p = alignment <= alignof(std::max_align_t)
                ? std::malloc(size == 0 ? 1 : size)
                : std::aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment);
  if (p == nullptr) return nullptr;
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

namespace {

void* counted_alloc_or_throw(std::size_t size, std::size_t alignment = 0) {
  void* p = counted_alloc(size, alignment);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

// Every form is replaced, so no allocation escapes the count and no pointer is freed by a
// mismatched function.
void* operator new(std::size_t size) { return counted_alloc_or_throw(size); }
void* operator new[](std::size_t size) { return counted_alloc_or_throw(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted_alloc(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return counted_alloc(size); }
void* operator new(std::size_t size, std::align_val_t a) {
  return counted_alloc_or_throw(size, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t size, std::align_val_t a) {
  return counted_alloc_or_throw(size, static_cast<std::size_t>(a));
}
void* operator new(std::size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_alloc(size, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_alloc(size, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { counted_free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { counted_free(p); }
