// The one place that includes Catch2. Tests include this, so a move to Catch2 v3 changes only
// this file (v3: <catch2/catch_test_macros.hpp> and friends).
#pragma once

#include <catch2/catch.hpp>  // Catch2 2.13, single header
