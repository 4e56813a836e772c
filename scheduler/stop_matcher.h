// Turns a request's growing output text into the part that is safe to stream, given its stop
// strings: text that could still be the start of a stop string is held back, and a completed
// stop string ends the output just before it (the stop string itself is never sent).
#ifndef MOESERVE_SCHEDULER_STOP_MATCHER_H_
#define MOESERVE_SCHEDULER_STOP_MATCHER_H_

#include <string>
#include <vector>

namespace moeserve {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Appends `delta` and returns the newly releasable text. Sets *stopped when a stop string
  // completed; nothing after it is ever released.
  std::string Push(const std::string& delta, bool* stopped);
  // Releases whatever is held back (at the end of generation).
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  std::string text_;
  size_t released_ = 0;
  bool stopped_ = false;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_STOP_MATCHER_H_
