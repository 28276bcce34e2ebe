/// @file
/// {fmt} formatters for kincir's types: `fmt::format("{}", message)` and `fmt::format("{}", uuid)`
/// write what `operator<<` writes (a uuid in its canonical form, with the usual width and alignment
/// options). Include it where you format them; the core and in-memory headers do not include {fmt}
/// (the metrics headers and `kincir/log/fmt_logger.hpp` need it for themselves).
#pragma once

#include <kincir/config.hpp>
#include <kincir/core/message.hpp>
#include <kincir/core/uuid.hpp>

#include <fmt/format.h>  // fmt::formatter

#include <string>  // the message's description

// Specialisations of fmt::formatter: Doxygen cannot place them in a scope.
/// @cond

template <>
struct fmt::formatter<kincir::Uuid> : fmt::formatter<fmt::string_view> {
  template <class FormatContext>
  auto format(const kincir::Uuid& id, FormatContext& ctx) const {
    char buf[kincir::Uuid::kStringLength];
    id.format_to(buf);
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(buf, sizeof buf), ctx);
  }
};

template <>
struct fmt::formatter<kincir::Message> : fmt::formatter<fmt::string_view> {
  template <class FormatContext>
  auto format(const kincir::Message& m, FormatContext& ctx) const {
    const std::string text = kincir::detail::describe(m);
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(text), ctx);
  }
};
/// @endcond
