#include "server/openai/event_queue.h"

#include "server/openai/openai_response.h"

namespace moeserve {

void EventQueue::OnEvent(TokenEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Merging here keeps the queue one event long however slowly the client reads.
    if (pending_) {
      MergeEvent(*pending_, std::move(event));
    } else {
      pending_ = std::move(event);
    }
  }
  ready_.notify_one();
}

std::optional<TokenEvent> EventQueue::Take(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  ready_.wait_for(lock, timeout, [this] { return pending_.has_value(); });
  std::optional<TokenEvent> out = std::move(pending_);
  pending_.reset();
  return out;
}

}  // namespace moeserve
