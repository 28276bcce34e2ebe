/// @file
/// Umbrella header for batching: `BatchPublisher` and `BatchProcessor`.
#pragma once

#include <kincir/batch/processor.hpp>
#include <kincir/batch/publisher.hpp>
#include <kincir/config.hpp>
