// Counts global operator new/delete calls made by the current thread, so a test can prove that
// an operation allocates nothing, or frees everything it allocated. Link support/alloc_counter.cpp.
#pragma once

#include <cstddef>  // std::size_t

namespace kincir::test {

struct AllocCounts {
  std::size_t allocations = 0;
  std::size_t deallocations = 0;
  std::size_t bytes = 0;
};

/// Counts of the calling thread since it started.
AllocCounts thread_alloc_counts() noexcept;

/// Counts of all threads since the process started.
AllocCounts global_alloc_counts() noexcept;

/// Allocations made by the calling thread between construction and `allocations()`.
class AllocScope {
 public:
  AllocScope() noexcept : start_(thread_alloc_counts()) {}
  [[nodiscard]] std::size_t allocations() const noexcept {
    return thread_alloc_counts().allocations - start_.allocations;
  }
  [[nodiscard]] std::size_t deallocations() const noexcept {
    return thread_alloc_counts().deallocations - start_.deallocations;
  }

 private:
  AllocCounts start_;
};

}  // namespace kincir::test
