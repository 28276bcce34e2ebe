/// @file
/// `kincir::Metadata`: a small flat string→string map carried by every message.
#pragma once

#include <kincir/config.hpp>

#include <algorithm>    // std::lower_bound
#include <optional>     // get's result
#include <string>       // keys and values
#include <string_view>  // lookups without allocating
#include <utility>      // std::pair
#include <vector>       // the flat storage

namespace kincir {

/// A map from string keys to string values, stored as one vector sorted by key: a message
/// usually carries a handful of entries, for which this beats a node-based map in time and
/// memory, iterates in key order, and compares with one pass.
class Metadata {
 public:
  using value_type = std::pair<std::string, std::string>;
  using const_iterator = std::vector<value_type>::const_iterator;

  Metadata() noexcept = default;
  Metadata(std::initializer_list<value_type> entries) {
    for (const auto& [k, v] : entries) set(k, v);
  }

  /// The value for `key`, if present. The view is valid until the entry is changed or erased.
  [[nodiscard]] std::optional<std::string_view> get(std::string_view key) const noexcept {
    auto it = find(key);
    if (it == entries_.end() || it->first != key) return std::nullopt;
    return std::string_view(it->second);
  }

  /// Inserts `key` or replaces its value.
  void set(std::string key, std::string value) {
    auto it = find(key);
    if (it != entries_.end() && it->first == key) {
      entries_[static_cast<std::size_t>(it - entries_.cbegin())].second = std::move(value);
    } else {
      entries_.emplace(it, std::move(key), std::move(value));
    }
  }

  [[nodiscard]] bool contains(std::string_view key) const noexcept { return get(key).has_value(); }

  /// Removes `key`; returns whether it was present.
  bool erase(std::string_view key) {
    auto it = find(key);
    if (it == entries_.end() || it->first != key) return false;
    entries_.erase(it);
    return true;
  }

  /// Removes every entry, keeping the storage for reuse.
  void clear() noexcept { entries_.clear(); }
  void reserve(std::size_t n) { entries_.reserve(n); }

  [[nodiscard]] std::size_t size() const noexcept { return entries_.size(); }
  [[nodiscard]] bool empty() const noexcept { return entries_.empty(); }
  [[nodiscard]] const_iterator begin() const noexcept { return entries_.begin(); }
  [[nodiscard]] const_iterator end() const noexcept { return entries_.end(); }

  friend bool operator==(const Metadata&, const Metadata&) = default;

 private:
  [[nodiscard]] const_iterator find(std::string_view key) const noexcept {
    return std::lower_bound(entries_.begin(), entries_.end(), key,
                            [](const value_type& entry, std::string_view k) { return entry.first < k; });
  }

  std::vector<value_type> entries_;
};

}  // namespace kincir
