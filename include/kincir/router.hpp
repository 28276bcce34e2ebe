/// @file
/// Umbrella header of the router: `kincir::Router`, handlers, and every middleware.
#pragma once

#include <kincir/config.hpp>
#include <kincir/log.hpp>
#include <kincir/router/error.hpp>
#include <kincir/router/handler.hpp>
#include <kincir/router/router.hpp>
