/// @file
/// Umbrella header: the core types and concepts, and the in-memory broker.
/// Needs only the standard library and Threads.
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/ack.hpp>
#include <kincir/core/bytes.hpp>
#include <kincir/core/concepts.hpp>
#include <kincir/core/error.hpp>
#include <kincir/core/message.hpp>
#include <kincir/core/metadata.hpp>
#include <kincir/core/uuid.hpp>
#include <kincir/memory/broker.hpp>
#include <kincir/memory/config.hpp>
#include <kincir/memory/publisher.hpp>
#include <kincir/memory/stats.hpp>
#include <kincir/memory/subscriber.hpp>
