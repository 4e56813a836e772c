// The hand-over between the serving loop and one HTTP worker: the scheduler's RequestSink
// side only appends and notifies (never blocks on the client), the worker side waits.
//
// Thread-safety: OnEvent from the serving-loop thread, Take from one worker thread.
#ifndef MOESERVE_SERVER_OPENAI_EVENT_QUEUE_H_
#define MOESERVE_SERVER_OPENAI_EVENT_QUEUE_H_

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "scheduler/request.h"

namespace moeserve {

class EventQueue : public RequestSink {
 public:
  void OnEvent(TokenEvent event) override;

  // Waits up to `timeout` for events and returns them merged into one (MergeEvent), or
  // nothing when none came. Events after the final one never arrive (the scheduler's contract).
  std::optional<TokenEvent> Take(std::chrono::milliseconds timeout);

 private:
  std::mutex mu_;
  std::condition_variable ready_;
  std::optional<TokenEvent> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moeserve

#endif  // MOESERVE_SERVER_OPENAI_EVENT_QUEUE_H_
