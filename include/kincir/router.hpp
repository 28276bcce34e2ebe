/// @file
/// Umbrella header of the router: `kincir::Router`, handlers, the logger and every middleware.
/// Coroutine handlers (`kincir/router/awaitable.hpp`) need Asio and are included on their own.
#pragma once

#include <kincir/config.hpp>
#include <kincir/log.hpp>
#include <kincir/router/error.hpp>
#include <kincir/router/handler.hpp>
#include <kincir/router/middleware/circuit_breaker.hpp>
#include <kincir/router/middleware/correlation_id.hpp>
#include <kincir/router/middleware/deduplicator.hpp>
#include <kincir/router/middleware/instant_ack.hpp>
#include <kincir/router/middleware/poison_queue.hpp>
#include <kincir/router/middleware/recoverer.hpp>
#include <kincir/router/middleware/retry.hpp>
#include <kincir/router/middleware/throttle.hpp>
#include <kincir/router/middleware/timeout.hpp>
#include <kincir/router/router.hpp>
#include <kincir/router/signals.hpp>
