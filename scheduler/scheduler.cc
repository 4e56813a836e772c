#include "scheduler/scheduler.h"

#include <algorithm>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"

namespace moeserve {

namespace {
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kLength: return "length";
    case FinishReason::kStopToken: return "stop_token";
    case FinishReason::kStopSequence: return "stop_sequence";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kDeadline: return "deadline";
    case FinishReason::kError: return "error";
  }
  return "?";
}

Scheduler::Scheduler(Engine* engine, const Tokenizer* tokenizer, const SchedulerOptions& options,
                     SchedulerObserver* observer)
    : engine_(engine),
      tokenizer_(tokenizer),
      options_(options),
      observer_(observer),
      blocks_(engine->kv_shape().num_blocks),
      block_size_(engine->kv_shape().block_size) {
  PublishStats();
}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Start() { thread_ = std::thread([this] { Loop(); }); }

void Scheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<uint64_t> Scheduler::Enqueue(RequestParams params, std::shared_ptr<RequestSink> sink) {
  const int64_t total = static_cast<int64_t>(params.prompt.size()) + params.max_new_tokens;
  const int64_t needed = (total + block_size_ - 1) / block_size_;
  if (needed > blocks_.num_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens: prompt (", params.prompt.size(),
                                                   ") + max_new_tokens (", params.max_new_tokens, ") needs ", needed,
                                                   " KV blocks but the cache holds ", blocks_.num_blocks()));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_ || stop_) return absl::UnavailableError("server is draining; not accepting new requests");
  if (queued_ >= options_.max_waiting) {
    return absl::ResourceExhaustedError(absl::StrCat("request queue is full (", options_.max_waiting, " waiting)"));
  }
  const uint64_t id = next_id_++;
  ++queued_;
  inbox_.push_back(std::make_unique<Sequence>(id, std::move(params), std::move(sink), tokenizer_));
  wake_.notify_all();
  return id;
}

void Scheduler::Abort(uint64_t handle, FinishReason reason) {
  std::lock_guard<std::mutex> lock(mu_);
  aborts_.emplace_back(handle, reason);
  wake_.notify_all();
}

void Scheduler::Drain() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
}

void Scheduler::AbortAll(FinishReason reason) {
  std::lock_guard<std::mutex> lock(mu_);
  abort_all_ = true;
  abort_all_reason_ = reason;
  wake_.notify_all();
}

bool Scheduler::Idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_ == 0 && stat_running_.load() == 0 && inbox_.empty();
}

SchedulerStats Scheduler::GetStats() const {
  SchedulerStats s;
  s.running = stat_running_.load();
  s.waiting = stat_waiting_.load();
  s.kv_blocks_total = blocks_.num_blocks();
  s.kv_blocks_free = stat_free_blocks_.load();
  s.preemptions = stat_preemptions_.load();
  return s;
}

void Scheduler::PublishStats() {
  stat_running_.store(static_cast<int>(running_.size()));
  stat_waiting_.store(static_cast<int>(waiting_.size()));
  stat_free_blocks_.store(blocks_.num_free());
}

std::vector<LayerRouting> Scheduler::NewRoutingTotals() const {
  std::vector<LayerRouting> totals;
  const auto& layers = engine_->weights().layers;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i].is_moe) totals.push_back({static_cast<int>(i), layers[i].moe.experts.num_experts, 0, 0});
  }
  return totals;
}

void Scheduler::InsertWaiting(std::unique_ptr<Sequence> seq) {
  auto pos = std::find_if(waiting_.begin(), waiting_.end(),
                          [&](const std::unique_ptr<Sequence>& w) { return seq->RunsBefore(*w); });
  waiting_.insert(pos, std::move(seq));
}

void Scheduler::TakeInbox() {
  std::vector<std::unique_ptr<Sequence>> arrivals;
  std::vector<std::pair<uint64_t, FinishReason>> aborts;
  bool abort_all;
  FinishReason all_reason;
  {
    std::lock_guard<std::mutex> lock(mu_);
    arrivals.swap(inbox_);
    aborts.swap(aborts_);
    abort_all = abort_all_;
    all_reason = abort_all_reason_;
    abort_all_ = false;
  }
  for (auto& seq : arrivals) {
    seq->routing = NewRoutingTotals();
    InsertWaiting(std::move(seq));
  }
  for (const auto& [id, reason] : aborts) Finish(id, reason);
  if (abort_all) {
    std::vector<uint64_t> ids;
    for (const auto& s : running_) ids.push_back(s->id);
    for (const auto& s : waiting_) ids.push_back(s->id);
    for (uint64_t id : ids) Finish(id, all_reason);
  }
}

void Scheduler::ExpireDeadlines() {
  const Clock::time_point now = Clock::now();
  std::vector<uint64_t> expired;
  for (const auto& s : running_) {
    if (s->params.deadline && *s->params.deadline <= now) expired.push_back(s->id);
  }
  for (const auto& s : waiting_) {
    if (s->params.deadline && *s->params.deadline <= now) expired.push_back(s->id);
  }
  for (uint64_t id : expired) Finish(id, FinishReason::kDeadline);
}

// Removes the request wherever it is, frees its blocks and sends its final event. Unknown ids
// (already finished) are ignored.
void Scheduler::Finish(uint64_t id, FinishReason reason, std::string error) {
  std::unique_ptr<Sequence> seq;
  auto match = [id](const std::unique_ptr<Sequence>& s) { return s->id == id; };
  if (auto it = std::find_if(running_.begin(), running_.end(), match); it != running_.end()) {
    seq = std::move(*it);
    running_.erase(it);
  } else if (auto wit = std::find_if(waiting_.begin(), waiting_.end(), match); wit != waiting_.end()) {
    seq = std::move(*wit);
    waiting_.erase(wit);
    std::lock_guard<std::mutex> lock(mu_);
    --queued_;
  } else {
    return;
  }
  blocks_.Free(seq->blocks);
  TokenEvent event;
  event.prompt_tokens = seq->prompt_len;
  event.completion_tokens = seq->generated();
  event.finish = reason;
  event.error = std::move(error);
  event.moe_stats = seq->routing;
  event.queued_at = seq->params.arrival;
  event.scheduled_at = seq->scheduled_at;
  if (observer_) observer_->OnRequestFinished(seq->params, event, Seconds(Clock::now() - seq->params.arrival));
  seq->sink->OnEvent(std::move(event));
}

void Scheduler::Preempt(Sequence& victim) {
  blocks_.Free(victim.blocks);
  victim.computed = 0;  // recompute prompt + generated tokens on resume
  ++victim.preemptions;
  stat_preemptions_.fetch_add(1);
  auto it = std::find_if(running_.begin(), running_.end(),
                         [&](const std::unique_ptr<Sequence>& s) { return s.get() == &victim; });
  std::unique_ptr<Sequence> seq = std::move(*it);
  running_.erase(it);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++queued_;
  }
  InsertWaiting(std::move(seq));
}

bool Scheduler::EnsureBlocks(Sequence& seq, int64_t num_tokens) {
  const int64_t needed = (seq.computed + num_tokens + block_size_ - 1) / block_size_ -
                         static_cast<int64_t>(seq.blocks.size());
  return needed <= 0 || blocks_.Allocate(needed, seq.blocks);
}

std::vector<Scheduler::PlannedChunk> Scheduler::Plan() {
  std::vector<PlannedChunk> plan;
  int64_t budget = options_.max_batch_tokens;
  std::sort(running_.begin(), running_.end(),
            [](const std::unique_ptr<Sequence>& a, const std::unique_ptr<Sequence>& b) { return a->RunsBefore(*b); });
  // Running sequences: decodes first, then continuing prefills. When blocks run out, the
  // lowest-precedence running sequence not yet planned is preempted (possibly this one).
  std::vector<Sequence*> order;
  for (const auto& s : running_) {
    if (s->pending() == 1) order.push_back(s.get());
  }
  for (const auto& s : running_) {
    if (s->pending() > 1) order.push_back(s.get());
  }
  std::vector<Sequence*> planned, preempted;
  for (Sequence* seq : order) {
    if (budget == 0) break;
    // Preempted earlier in this loop to make room: it is waiting again, not running.
    if (std::find(preempted.begin(), preempted.end(), seq) != preempted.end()) continue;
    const int64_t n = std::min<int64_t>({seq->pending(), budget, options_.prefill_chunk});
    bool self_preempted = false;
    while (!EnsureBlocks(*seq, n)) {
      Sequence* victim = nullptr;
      for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
        if (std::find(planned.begin(), planned.end(), it->get()) == planned.end()) {
          victim = it->get();
          break;
        }
      }
      if (victim == nullptr) break;  // cannot happen: seq itself is unplanned
      if (victim == seq) self_preempted = true;
      preempted.push_back(victim);
      Preempt(*victim);
      if (self_preempted) break;
    }
    if (self_preempted) continue;
    planned.push_back(seq);
    plan.push_back({seq, n});
    budget -= n;
  }
  // Admit waiting sequences in precedence order while budget, slots and blocks allow.
  while (budget > 0 && !waiting_.empty() && static_cast<int>(running_.size()) < options_.max_running) {
    Sequence& seq = *waiting_.front();
    const int64_t n = std::min<int64_t>({seq.pending(), budget, options_.prefill_chunk});
    if (!EnsureBlocks(seq, n)) break;
    if (seq.scheduled_at == Clock::time_point{}) seq.scheduled_at = Clock::now();
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    {
      std::lock_guard<std::mutex> lock(mu_);
      --queued_;
    }
    plan.push_back({running_.back().get(), n});
    budget -= n;
  }
  return plan;
}

void Scheduler::SampleNext(Sequence& seq, float* logits_ptr, TokenEvent& event) {
  const std::span<float> logits(logits_ptr, engine_->vocab_size());
  if (!options_.debug_nan_request_prefix.empty() &&
      seq.params.request_id.rfind(options_.debug_nan_request_prefix, 0) == 0) {
    logits[0] = std::numeric_limits<float>::quiet_NaN();
  }
  if (!AllFinite(logits)) {
    event.finish = FinishReason::kError;
    event.error = "the model produced non-finite logits for this request";
    return;
  }
  const SampledToken next = seq.sampler.Sample(logits, seq.tokens);
  seq.tokens.push_back(next.id);
  event.token_ids.push_back(next.id);
  if (seq.params.logprobs_top_n > 0) {
    event.logprobs.push_back(ComputeLogprobs(logits, next.id, seq.params.logprobs_top_n));
  }
  const auto& stops = seq.params.stop_token_ids;
  if (std::find(stops.begin(), stops.end(), next.id) != stops.end()) {
    event.finish = FinishReason::kStopToken;  // the stop token is reported, its text is not
    return;
  }
  if (tokenizer_ != nullptr) {
    bool stopped = false;
    event.text = seq.stop.Push(seq.detokenizer.Push(next.id), &stopped);
    if (stopped) {
      event.finish = FinishReason::kStopSequence;
      return;
    }
  }
  if (seq.generated() >= seq.params.max_new_tokens) event.finish = FinishReason::kLength;
}

void Scheduler::RunStep(const std::vector<PlannedChunk>& plan, int preemptions) {
  const Clock::time_point start = Clock::now();
  ForwardBatch batch;
  int prompt_tokens = 0;
  bool any_prefill = false, any_decode = false;
  for (const PlannedChunk& c : plan) {
    Sequence& s = *c.seq;
    const bool samples = s.computed + c.num_tokens == static_cast<int64_t>(s.tokens.size());
    batch.chunks.push_back({std::span<const int32_t>(s.tokens).subspan(s.computed, c.num_tokens),
                            static_cast<int32_t>(s.computed), s.blocks,
                            samples ? LogitsMode::kLast : LogitsMode::kNone, s.params.budget});
    if (s.preemptions == 0 && s.computed < s.prompt_len) {
      prompt_tokens += static_cast<int>(std::min<int64_t>(c.num_tokens, s.prompt_len - s.computed));
    }
    (c.num_tokens == 1 && s.computed >= s.prompt_len ? any_decode : any_prefill) = true;
  }
  const absl::Status status = engine_->Forward(batch, &output_);
  int64_t T = 0;
  for (const PlannedChunk& c : plan) T += c.num_tokens;
  std::vector<std::pair<uint64_t, TokenEvent>> finished;
  int generated = 0;
  int64_t t0 = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    Sequence& s = *plan[i].seq;
    const int64_t n = plan[i].num_tokens;
    if (!status.ok()) {
      finished.push_back({s.id, TokenEvent{}});
      finished.back().second.finish = FinishReason::kError;
      finished.back().second.error = std::string(status.message());
      continue;
    }
    for (LayerRouting& r : s.routing) {
      r.tokens += n;
      for (int64_t t = 0; t < n; ++t) r.activations += output_.active_counts[r.layer * T + t0 + t];
    }
    t0 += n;
    s.computed += n;
    if (batch.chunks[i].logits != LogitsMode::kLast) continue;
    TokenEvent event;
    SampleNext(s, output_.MutableLogits(output_.chunk_logits_begin[i]), event);
    generated += static_cast<int>(event.token_ids.size());
    if (!event.token_ids.empty()) {
      const Clock::time_point now = Clock::now();
      if (observer_ && s.generated() == 1) {
        observer_->OnFirstToken(Seconds(now - s.params.arrival), Seconds(s.scheduled_at - s.params.arrival));
      } else if (observer_) {
        observer_->OnInterToken(Seconds(now - s.last_token_at));
      }
      s.last_token_at = now;
    }
    event.prompt_tokens = s.prompt_len;
    event.completion_tokens = s.generated();
    event.queued_at = s.params.arrival;
    event.scheduled_at = s.scheduled_at;
    if (event.finish != FinishReason::kNone) {
      finished.push_back({s.id, std::move(event)});
    } else {
      s.sink->OnEvent(std::move(event));
    }
  }
  // Final events: the last token's event carries the finish reason and the stats.
  for (auto& [id, event] : finished) {
    auto it = std::find_if(running_.begin(), running_.end(),
                           [id = id](const std::unique_ptr<Sequence>& s) { return s->id == id; });
    if (it == running_.end()) continue;
    Sequence& s = **it;
    blocks_.Free(s.blocks);
    event.moe_stats = s.routing;
    if (tokenizer_ != nullptr && event.finish == FinishReason::kLength) {
      bool stopped = false;
      event.text += s.stop.Push(s.detokenizer.Flush(), &stopped) + s.stop.Flush();
    }
    if (observer_) observer_->OnRequestFinished(s.params, event, Seconds(Clock::now() - s.params.arrival));
    s.sink->OnEvent(std::move(event));
    running_.erase(it);
  }
  if (observer_) {
    StepReport report;
    report.phase = any_prefill && any_decode ? StepPhase::kMixed : any_prefill ? StepPhase::kPrefill : StepPhase::kDecode;
    report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    report.batch_tokens = static_cast<int>(T);
    report.prompt_tokens = prompt_tokens;
    report.generated_tokens = generated;
    report.running = static_cast<int>(running_.size());
    report.waiting = static_cast<int>(waiting_.size());
    report.kv_usage = blocks_.usage_ratio();
    report.preemptions = preemptions;
    observer_->OnStep(report);
  }
}

void Scheduler::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] {
        return stop_ || !inbox_.empty() || !aborts_.empty() || abort_all_ || !running_.empty() || !waiting_.empty();
      });
      if (stop_) break;
    }
    TakeInbox();
    ExpireDeadlines();
    const uint64_t preempted_before = stat_preemptions_.load();
    std::vector<PlannedChunk> plan = Plan();
    PublishStats();
    if (!plan.empty()) RunStep(plan, static_cast<int>(stat_preemptions_.load() - preempted_before));
    PublishStats();
    if (observer_) observer_->OnState(static_cast<int>(running_.size()), static_cast<int>(waiting_.size()),
                                      blocks_.usage_ratio());
    if (options_.debug_step_delay_ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(options_.debug_step_delay_ms));
    }
  }
  // Shutdown: whatever is left ends as cancelled.
  TakeInbox();
  std::vector<uint64_t> ids;
  for (const auto& s : running_) ids.push_back(s->id);
  for (const auto& s : waiting_) ids.push_back(s->id);
  for (uint64_t id : ids) Finish(id, FinishReason::kCancelled);
  PublishStats();
}

}  // namespace moeserve
