#include "server/generation_call.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "server/status_mapping.h"

namespace moeserve {

namespace {

// The call a reactor serves, kept alive from the reactor's creation until its OnDone. gRPC runs
// the reactor's callbacks after the handler that created it returned, ordered by gRPC's own
// synchronisation, which ThreadSanitizer cannot see (Debian's gRPC is not instrumented); the
// release store and acquire loads here make that order visible to it. A callback holds its
// own reference for its duration, so its last touch of the call is ordered before whichever
// thread (often the scheduler's) drops the final one.
class CallRef {
 public:
  void Set(std::shared_ptr<GenerationCall> call) { call_.store(std::move(call), std::memory_order_release); }
  std::shared_ptr<GenerationCall> Get() const { return call_.load(std::memory_order_acquire); }
  std::shared_ptr<GenerationCall> Take() { return call_.exchange(nullptr, std::memory_order_acq_rel); }

 private:
  std::atomic<std::shared_ptr<GenerationCall>> call_;
};

}  // namespace

class GenerationCall::StreamReactor : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  void OnWriteDone(bool ok) override { call.Get()->OnWriteDone(ok); }
  void OnCancel() override { call.Get()->OnCancel(); }
  void OnDone() override {
    call.Take()->OnDone();
    delete this;
  }
  CallRef call;
};

class GenerationCall::UnaryReactor : public grpc::ServerUnaryReactor {
 public:
  void OnCancel() override { call.Get()->OnCancel(); }
  void OnDone() override {
    call.Take()->OnDone();
    delete this;
  }
  CallRef call;
};

struct GenerationCall::Action {
  enum Kind { kNone, kWrite, kWriteAndFinish, kFinish } kind = kNone;
  grpc::Status status;
};

GenerationCall::GenerationCall(Mode mode, Scheduler* scheduler, grpc::CallbackServerContext* context,
                               std::string request_id)
    : mode_(mode), scheduler_(scheduler), context_(context), request_id_(std::move(request_id)) {}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerationCall::MakeStreamReactor(
    std::shared_ptr<GenerationCall> self) {
  self->stream_ = new StreamReactor;
  self->stream_->call.Set(self);
  return self->stream_;
}

grpc::ServerUnaryReactor* GenerationCall::MakeUnaryReactor(std::shared_ptr<GenerationCall> self,
                                                           v1::GenerateResponse* response) {
  self->unary_ = new UnaryReactor;
  self->unary_->call.Set(self);
  self->unary_response_ = response;
  return self->unary_;
}

void GenerationCall::Reject(const grpc::Status& status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    finishing_ = true;
  }
  RunOnFinish();
  if (stream_ != nullptr) stream_->Finish(status);
  if (unary_ != nullptr) unary_->Finish(status);
}

void GenerationCall::Start(std::shared_ptr<GenerationCall> self, RequestParams params) {
  const auto deadline = context_->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    params.deadline =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(deadline - std::chrono::system_clock::now());
  }
  auto handle = scheduler_->Enqueue(std::move(params), self);
  if (!handle.ok()) {
    Reject(ToGrpcStatus(handle.status()));
    return;
  }
  bool cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    handle_ = *handle;
    cancelled = cancelled_;
  }
  if (cancelled) scheduler_->Abort(*handle, FinishReason::kCancelled);  // cancel raced the enqueue
}

v1::GenerateResponse GenerationCall::ToResponse(TokenEvent& e) const {
  v1::GenerateResponse r;
  r.set_request_id(request_id_);
  for (int32_t id : e.token_ids) r.add_token_ids(id);
  r.set_text(std::move(e.text));
  r.set_prompt_tokens(e.prompt_tokens);
  r.set_completion_tokens(e.completion_tokens);
  for (const TokenLogprobs& lp : e.logprobs) {
    v1::TokenLogprob* out = r.add_logprobs();
    out->set_token_id(lp.token_id);
    out->set_logprob(lp.logprob);
    for (const auto& [id, logprob] : lp.top) {
      v1::TopLogprob* top = out->add_top();
      top->set_token_id(id);
      top->set_logprob(logprob);
    }
  }
  if (e.finish != FinishReason::kNone) {
    static constexpr v1::FinishReason kMap[] = {v1::FINISH_REASON_UNSPECIFIED, v1::LENGTH, v1::STOP_TOKEN,
                                                v1::STOP_SEQUENCE, v1::CANCELLED, v1::DEADLINE, v1::ERROR};
    r.set_finish_reason(kMap[static_cast<int>(e.finish)]);
    r.set_error(e.error);
    for (const LayerRouting& l : e.moe_stats) {
      v1::LayerMoeStats* s = r.mutable_moe_stats()->add_layers();
      s->set_layer(l.layer);
      s->set_num_experts(l.num_experts);
      s->set_routed_tokens(l.tokens);
      s->set_expert_activations(l.activations);
      s->set_mean_active_experts(l.tokens ? double(l.activations) / double(l.tokens) : 0.0);
    }
  }
  return r;
}

void GenerationCall::Merge(v1::GenerateResponse& into, v1::GenerateResponse&& chunk) {
  into.mutable_token_ids()->MergeFrom(chunk.token_ids());
  into.mutable_text()->append(chunk.text());
  into.mutable_logprobs()->MergeFrom(chunk.logprobs());
  into.set_prompt_tokens(chunk.prompt_tokens());
  into.set_completion_tokens(chunk.completion_tokens());
  into.set_finish_reason(chunk.finish_reason());
  into.set_error(chunk.error());
  if (chunk.has_moe_stats()) *into.mutable_moe_stats() = std::move(*chunk.mutable_moe_stats());
}

void GenerationCall::OnEvent(TokenEvent event) {
  const bool last = event.finish != FinishReason::kNone;
  grpc::Status status = grpc::Status::OK;
  if (event.finish == FinishReason::kDeadline)
    status = grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded");
  v1::GenerateResponse chunk = ToResponse(event);
  Action action;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finishing_) return;
    if (event.finish == FinishReason::kCancelled && cancelled_) status = grpc::Status::CANCELLED;
    if (mode_ == Mode::kUnary) {
      Merge(*unary_response_, std::move(chunk));
      if (last) {
        finishing_ = true;
        action = {Action::kFinish, status};
      }
    } else {
      if (!pending_) {
        pending_ = std::move(chunk);
      } else {
        Merge(*pending_, std::move(chunk));
      }
      if (last) {
        final_ = std::move(pending_);
        pending_.reset();
        final_status_ = status;
      }
      action = NextActionLocked();
    }
  }
  Perform(action);
}

GenerationCall::Action GenerationCall::NextActionLocked() {
  if (writing_ || finishing_ || stream_ == nullptr) return {};
  if (cancelled_) {
    finishing_ = true;
    return {Action::kFinish, grpc::Status::CANCELLED};
  }
  if (pending_) {
    in_flight_ = std::move(*pending_);
    pending_.reset();
    writing_ = true;
    return {Action::kWrite, grpc::Status::OK};
  }
  if (final_) {
    in_flight_ = std::move(*final_);
    final_.reset();
    writing_ = true;
    finishing_ = true;
    return {Action::kWriteAndFinish, final_status_};
  }
  return {};
}

void GenerationCall::Perform(const Action& action) {
  switch (action.kind) {
    case Action::kNone:
      return;
    case Action::kWrite:
      stream_->StartWrite(&in_flight_);
      return;
    case Action::kWriteAndFinish:
      RunOnFinish();
      stream_->StartWriteAndFinish(&in_flight_, grpc::WriteOptions(), action.status);
      return;
    case Action::kFinish:
      RunOnFinish();
      if (stream_ != nullptr) stream_->Finish(action.status);
      if (unary_ != nullptr) unary_->Finish(action.status);
      return;
  }
}

void GenerationCall::OnWriteDone(bool ok) {
  Action action;
  std::optional<uint64_t> abort;
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok && !cancelled_) {
      cancelled_ = true;  // the stream broke: treat as a client cancel
      abort = handle_;
    }
    action = NextActionLocked();
  }
  if (abort) scheduler_->Abort(*abort, FinishReason::kCancelled);
  Perform(action);
}

void GenerationCall::OnCancel() {
  Action action;
  std::optional<uint64_t> abort;
  const bool expired = context_->deadline() <= std::chrono::system_clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    abort = handle_;
    if (mode_ == Mode::kUnary) {
      if (!finishing_) {
        finishing_ = true;
        action = {Action::kFinish, grpc::Status::CANCELLED};
      }
    } else {
      action = NextActionLocked();
    }
  }
  if (abort) scheduler_->Abort(*abort, expired ? FinishReason::kDeadline : FinishReason::kCancelled);
  Perform(action);
}

void GenerationCall::RunOnFinish() {
  std::function<void()> on_finish;
  {
    std::lock_guard<std::mutex> lock(mu_);
    on_finish.swap(on_finish_);
  }
  if (on_finish) on_finish();
}

void GenerationCall::OnDone() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    finishing_ = true;
    stream_ = nullptr;
    unary_ = nullptr;
    unary_response_ = nullptr;
  }
  RunOnFinish();
}

}  // namespace moeserve
