/// @file
/// `ConfirmTracker`: publisher-confirm bookkeeping for one channel. Delivery tags count from 1
/// after confirm.select; the broker settles them with `basic.ack`/`basic.nack`, singly (in any
/// order) or with `multiple` (every outstanding tag up to and including the one named).
#pragma once

#include <kincir/config.hpp>

#include <algorithm>  // std::lower_bound
#include <cstdint>    // std::uint64_t
#include <deque>      // outstanding tags in publish order
#include <vector>     // settled ranges

namespace kincir::rabbitmq::amqp {

/// Tags `first..last` (inclusive).
struct TagRange {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  [[nodiscard]] std::uint64_t count() const noexcept { return last - first + 1; }
  friend bool operator==(const TagRange&, const TagRange&) = default;
};

/// The outstanding (published, not yet settled) tags of a channel in confirm mode, in publish
/// order. Settling reports exactly the tags that were outstanding, as ranges, so a tag is never
/// reported twice and an unknown tag settles nothing.
class ConfirmTracker {
 public:
  /// Assigns the next delivery tag to a publish and records it as outstanding.
  std::uint64_t next() {
    const std::uint64_t tag = next_tag_++;
    outstanding_.push_back(tag);
    return tag;
  }

  /// Settles `tag` (and with `multiple` every outstanding tag below it); appends the settled
  /// tags to `out` as ranges and returns how many there were.
  std::uint64_t settle(std::uint64_t tag, bool multiple, std::vector<TagRange>& out) {
    std::uint64_t settled = 0;
    if (multiple) {
      while (!outstanding_.empty() && outstanding_.front() <= tag) {
        add(out, outstanding_.front());
        outstanding_.pop_front();
        ++settled;
      }
      return settled;
    }
    auto it = std::lower_bound(outstanding_.begin(), outstanding_.end(), tag);
    if (it == outstanding_.end() || *it != tag) return 0;
    outstanding_.erase(it);
    add(out, tag);
    return 1;
  }

  /// Settles everything outstanding (channel closed: every pending confirm fails).
  std::uint64_t fail_all(std::vector<TagRange>& out) {
    const std::uint64_t n = outstanding_.size();
    for (auto tag : outstanding_) add(out, tag);
    outstanding_.clear();
    return n;
  }

  /// Restarts numbering (a new confirm.select on a reopened channel).
  void reset() noexcept {
    outstanding_.clear();
    next_tag_ = 1;
  }

  [[nodiscard]] std::size_t outstanding() const noexcept { return outstanding_.size(); }
  [[nodiscard]] std::uint64_t next_tag() const noexcept { return next_tag_; }

 private:
  static void add(std::vector<TagRange>& out, std::uint64_t tag) {
    if (!out.empty() && out.back().last + 1 == tag)
      out.back().last = tag;
    else
      out.push_back(TagRange{tag, tag});
  }

  std::deque<std::uint64_t> outstanding_;
  std::uint64_t next_tag_ = 1;
};

}  // namespace kincir::rabbitmq::amqp
