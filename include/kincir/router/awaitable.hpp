/// @file
/// `kincir::awaitable_handler(fn)`: lets a C++20 coroutine returning `asio::awaitable<R>` be a
/// router handler. Available when standalone Asio is on the include path and supports coroutines
/// (`KINCIR_HAS_AWAITABLE_HANDLERS`).
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/message.hpp>
#include <kincir/router/handler.hpp>

#if KINCIR_HAS_ASIO
#include <asio/detail/config.hpp>  // ASIO_HAS_CO_AWAIT
#endif

/// 1 when `awaitable_handler` exists: Asio is there and supports `co_await` with this compiler
/// (Asio 1.22 does not with Clang on libstdc++).
#if KINCIR_HAS_ASIO && defined(ASIO_HAS_CO_AWAIT)
#define KINCIR_HAS_AWAITABLE_HANDLERS 1
#else
#define KINCIR_HAS_AWAITABLE_HANDLERS 0
#endif

#if KINCIR_HAS_AWAITABLE_HANDLERS

#include <asio/awaitable.hpp>               // asio::awaitable
#include <asio/bind_cancellation_slot.hpp>  // cancelling the coroutine on close
#include <asio/cancellation_signal.hpp>     // asio::cancellation_signal
#include <asio/co_spawn.hpp>                // asio::co_spawn
#include <asio/io_context.hpp>              // the worker's private event loop
#include <asio/post.hpp>                    // emitting the cancellation on the loop's thread

#include <exception>    // std::exception_ptr
#include <functional>   // the stop callback
#include <optional>     // the coroutine's result
#include <stop_token>   // std::stop_callback
#include <type_traits>  // result types
#include <utility>      // std::move

namespace kincir {

namespace detail::router {
/// One event loop per worker thread, reused from message to message.
inline asio::io_context& worker_io_context() {
  thread_local asio::io_context io;
  return io;
}
}  // namespace detail::router

/// Adapts `fn`, a coroutine taking `Message&` (or `const Message&`), optionally followed by
/// `const HandlerContext&`, and returning `asio::awaitable<R>` with `R` any type a plain handler
/// may return (`void`, `Message`, `std::vector<Message>`, `HandlerResult` ...), to a handler the
/// router accepts: `router.add_handler(..., kincir::awaitable_handler(fn))`.
///
/// The coroutine runs to completion on an `asio::io_context` private to the worker thread
/// (`co_await asio::this_coro::executor` gives it: timers and sockets created on it work), so
/// the worker handles one message at a time as with plain handlers; use
/// `HandlerOptions::concurrency` for more. When the router closes, the coroutine's pending
/// operation is cancelled (terminal cancellation: it completes with `operation_aborted`, which
/// `co_await` throws), so the message fails and is nacked for redelivery. An exception fails the
/// message as with plain handlers.
template <class F>
HandlerFunc awaitable_handler(F fn) {
  return [fn = std::move(fn)](Message& message, const HandlerContext& ctx) mutable -> HandlerResult {
    using Awaitable = decltype(detail::router::invoke_user(fn, message, ctx));
    using R = typename Awaitable::value_type;
    asio::io_context& io = detail::router::worker_io_context();
    io.restart();
    asio::cancellation_signal cancel;
    std::optional<HandlerResult> result;
    std::exception_ptr error;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<HandlerResult> {
          if constexpr (std::is_void_v<R>) {
            co_await detail::router::invoke_user(fn, message, ctx);
            co_return HandlerResult();
          } else {
            co_return detail::router::to_result(co_await detail::router::invoke_user(fn, message, ctx));
          }
        },
        asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e, HandlerResult r) {
          error = std::move(e);
          if (!error) result = std::move(r);
        }));
    std::optional<std::stop_callback<std::function<void()>>> on_close;
    on_close.emplace(ctx.stop, [&] { asio::post(io, [&] { cancel.emit(asio::cancellation_type::terminal); }); });
    io.run();
    // A close that came after the coroutine finished may have left its cancellation queued: run it
    // now, while what it refers to exists.
    on_close.reset();
    io.restart();
    io.poll();
    if (error) std::rethrow_exception(error);
    if (!result) return HandlerResult::failure(make_error_code(handler_errc::cancelled), "coroutine did not complete");
    return std::move(*result);
  };
}

}  // namespace kincir

#endif  // KINCIR_HAS_AWAITABLE_HANDLERS
