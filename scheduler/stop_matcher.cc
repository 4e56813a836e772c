#include "scheduler/stop_matcher.h"

#include <algorithm>

namespace moeserve {

std::string StopMatcher::Push(const std::string& delta, bool* stopped) {
  *stopped = stopped_;
  if (stopped_) return "";
  text_ += delta;
  // Earliest completed stop string, searching only where a new match can start.
  size_t stop_at = std::string::npos;
  for (const std::string& s : stops_) {
    if (s.empty()) continue;
    const size_t from = released_ >= s.size() ? released_ - s.size() + 1 : 0;
    const size_t pos = text_.find(s, from);
    if (pos != std::string::npos) stop_at = std::min(stop_at, pos);
  }
  if (stop_at != std::string::npos) {
    stopped_ = *stopped = true;
    std::string out = stop_at > released_ ? text_.substr(released_, stop_at - released_) : "";
    released_ = std::max(released_, stop_at);
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stops_) {
    if (s.empty()) continue;
    for (size_t len = std::min(s.size() - 1, text_.size()); len > hold; --len) {
      if (text_.compare(text_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  const size_t end = std::max(released_, text_.size() - hold);
  std::string out = text_.substr(released_, end - released_);
  released_ = end;
  return out;
}

std::string StopMatcher::Flush() {
  if (stopped_) return "";
  std::string out = text_.substr(released_);
  released_ = text_.size();
  return out;
}

}  // namespace moeserve
