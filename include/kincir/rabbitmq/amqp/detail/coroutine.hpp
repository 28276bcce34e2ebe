/// @file
/// Explicit resume points for the protocol algorithms: a `switch` on a stored point with one
/// `case` per yield, in the style of Boost.MySQL. Unlike `asio::coroutine`, the points are
/// numbered by hand, so the same header gives the same code in every translation unit.
#pragma once

#include <kincir/config.hpp>

/// Opens an algorithm body; `point` is an int member, 0 at the start.
#define KINCIR_AMQP_CORO_BEGIN(point) \
  switch (point) {                    \
    case 0:

/// Stores resume point `n` (a unique positive literal), returns `action`, and continues here on
/// the next call.
#define KINCIR_AMQP_YIELD(point, n, action) \
  do {                                      \
    (point) = (n);                          \
    return (action);                        \
    case (n):;                              \
  } while (false)

/// Closes an algorithm body.
#define KINCIR_AMQP_CORO_END \
  default:;                  \
    }
