/// @file
/// Umbrella header for the async helpers: `AsyncMessageProcessor` (a bounded channel) and
/// `process_messages_parallel` (bounded parallel processing), and, when standalone Asio is on the
/// include path, `InMemorySubscriber::async_receive` (`kincir/memory/async.hpp`).
#pragma once

#include <kincir/async/channel.hpp>
#include <kincir/async/parallel.hpp>
#if KINCIR_HAS_ASIO
#include <kincir/memory/async.hpp>
#endif
#include <kincir/config.hpp>
