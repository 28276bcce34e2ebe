/// @file
/// Version, compiler feature checks and the small macros every kincir header relies on.
/// Included first by every other header.
#pragma once

#include <cstddef>  // std::size_t

#define KINCIR_VERSION_MAJOR 0
#define KINCIR_VERSION_MINOR 1
#define KINCIR_VERSION_PATCH 0
/// The version as one number: major * 10000 + minor * 100 + patch.
#define KINCIR_VERSION (KINCIR_VERSION_MAJOR * 10000 + KINCIR_VERSION_MINOR * 100 + KINCIR_VERSION_PATCH)
#define KINCIR_VERSION_STRING "0.1.0"

#if !defined(__cplusplus) || (__cplusplus < 202002L && !(defined(_MSVC_LANG) && _MSVC_LANG >= 202002L))
#error "kincir needs C++20 (-std=c++20 or later)"
#endif

/// Every out-of-class function definition in a header is `KINCIR_DECL` (header-only library).
#define KINCIR_DECL inline

#if defined(__GNUC__) || defined(__clang__)
/// Marks a function that runs rarely (error paths), kept out of line so hot paths stay small.
#define KINCIR_COLD [[gnu::cold, gnu::noinline]]
#else
#define KINCIR_COLD
#endif

/// {fmt} formatters are provided when {fmt} is on the include path, unless KINCIR_NO_FMT is set.
#if !defined(KINCIR_HAS_FMT)
#if !defined(KINCIR_NO_FMT) && defined(__has_include)
#if __has_include(<fmt/format.h>)
#define KINCIR_HAS_FMT 1
#endif
#endif
#endif
#if !defined(KINCIR_HAS_FMT)
#define KINCIR_HAS_FMT 0
#endif

/// Whether standalone Asio is on the include path (unless KINCIR_NO_ASIO is set). Only optional
/// headers look at it (`kincir/async.hpp`, `kincir/metrics/instrumented.hpp`,
/// `kincir/router/awaitable.hpp`); the core and in-memory headers never include Asio, and
/// `InMemorySubscriber::async_receive` needs `#include <kincir/memory/async.hpp>`. The RabbitMQ
/// adapter always needs Asio.
#if !defined(KINCIR_HAS_ASIO)
#if !defined(KINCIR_NO_ASIO) && defined(__has_include)
#if __has_include(<asio/async_result.hpp>)
#define KINCIR_HAS_ASIO 1
#endif
#endif
#endif
#if !defined(KINCIR_HAS_ASIO)
#define KINCIR_HAS_ASIO 0
#endif

namespace kincir {

/// Size of a cache line on the targets we tune for.
inline constexpr std::size_t kCacheLineSize = 64;

/// Distance that keeps two hot atomics from sharing a line *or* an adjacent-line prefetch pair
/// (x86 prefetchers pull lines in pairs, see docs/ring.md).
inline constexpr std::size_t kFalseSharingRange = 128;

}  // namespace kincir
