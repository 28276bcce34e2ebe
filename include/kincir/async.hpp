/// @file
/// Umbrella header for the async helpers: `AsyncMessageProcessor` (a bounded channel) and
/// `process_messages_parallel` (bounded parallel processing).
#pragma once

#include <kincir/async/channel.hpp>
#include <kincir/async/parallel.hpp>
#include <kincir/config.hpp>
