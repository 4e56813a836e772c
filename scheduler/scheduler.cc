#include "scheduler/scheduler.h"

#include <chrono>

#include "absl/strings/str_cat.h"

namespace moeserve {

Scheduler::Scheduler(Engine* engine, const Tokenizer* tokenizer, const SchedulerOptions& options,
                     SchedulerObserver* observer)
    : engine_(engine),
      options_(options),
      observer_(observer),
      num_blocks_(engine->info().kv.num_blocks),
      block_size_(engine->info().kv.block_size),
      tokenizer_(tokenizer),
      planner_(options, engine->info().kv.num_blocks, engine->info().kv.block_size, PrefixCacheSalt(engine->info())),
      processor_(engine->info(), tokenizer, observer, options.debug_nan_request_prefix) {
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
  if (needed > num_blocks_) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens: prompt (", params.prompt.size(),
                                                   ") + max_new_tokens (", params.max_new_tokens, ") needs ", needed,
                                                   " KV blocks but the cache holds ", num_blocks_));
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
  s.kv_blocks_total = num_blocks_;
  s.kv_blocks_free = stat_free_blocks_.load();
  s.preemptions = stat_preemptions_.load();
  s.spec_draft_tokens = stat_spec_drafted_.load();
  s.spec_accepted_tokens = stat_spec_accepted_.load();
  return s;
}

// Every change of the waiting queue's size (arrivals move from the inbox, admissions,
// preemptions, ends) is followed by this, so queued_ is exact whenever the loop is between
// phases; it is the queue limit's count.
void Scheduler::PublishStats() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queued_ = static_cast<int>(inbox_.size()) + planner_.num_waiting();
  }
  stat_running_.store(planner_.num_running());
  stat_waiting_.store(planner_.num_waiting());
  stat_free_blocks_.store(planner_.blocks().num_free());
  const BatchPlanner::Counters counters = planner_.counters();
  stat_preemptions_.store(counters.preemptions);
  stat_spec_drafted_.store(counters.drafted);
  stat_spec_accepted_.store(counters.accepted);
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
    seq->routing = processor_.NewRoutingTotals();
    seq->max_draft = seq->params.max_draft_tokens >= 0 ? seq->params.max_draft_tokens : options_.speculative_max_draft;
    planner_.AddWaiting(std::move(seq));
  }
  for (const auto& [id, reason] : aborts) Finish(id, reason);
  if (abort_all) {
    for (uint64_t id : planner_.Ids()) Finish(id, all_reason);
  }
}

// Removes the request wherever it is, frees its blocks and sends its final event. Unknown ids
// (already finished) are ignored.
void Scheduler::Finish(uint64_t id, FinishReason reason) {
  std::unique_ptr<Sequence> seq = planner_.Remove(id);
  if (seq != nullptr) processor_.AbortSequence(*seq, reason);
}

void Scheduler::RunOnce() {
  TakeInbox();
  for (uint64_t id : planner_.Expired(Clock::now())) Finish(id, FinishReason::kDeadline);
  const BatchPlanner::Counters before = planner_.counters();
  const std::vector<PlannedChunk> plan = planner_.Plan();
  PublishStats();
  if (!plan.empty()) {
    const Clock::time_point start = Clock::now();
    const ForwardBatch batch = processor_.BuildBatch(plan);
    const absl::Status status = engine_->Forward(batch, &output_);
    StepOutcome outcome = processor_.Process(plan, batch, status, output_);
    for (const StepOutcome::Verification& v : outcome.verified) {
      planner_.AfterVerification(*v.seq, v.drafted, v.accepted);
    }
    if (status.ok()) planner_.PublishComputed(plan);
    // Final events: the last token's event carries the finish reason and the stats. The step
    // reaches the observer first, so a client that reads the metrics on its last event finds
    // that event's tokens counted (the gauges already without the finished sequences).
    std::vector<std::pair<std::unique_ptr<Sequence>, TokenEvent>> ended;
    for (auto& [id, event] : outcome.finished) {
      std::unique_ptr<Sequence> seq = planner_.Remove(id);
      if (seq != nullptr) ended.emplace_back(std::move(seq), std::move(event));
    }
    if (observer_) {
      const StepReport report = processor_.Report(plan, outcome, planner_, before,
                                                  std::chrono::duration<double>(Clock::now() - start).count());
      observer_->OnStep(report);
    }
    for (auto& [seq, event] : ended) processor_.EndSequence(*seq, std::move(event));
  }
  PublishStats();
  if (observer_) observer_->OnState(planner_.num_running(), planner_.num_waiting(), planner_.blocks().usage_ratio());
}

void Scheduler::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || !inbox_.empty() || !aborts_.empty() || abort_all_ || planner_.num_running() > 0 ||
               planner_.num_waiting() > 0;
      });
      if (stop_) break;
    }
    RunOnce();
    if (options_.debug_step_delay_ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(options_.debug_step_delay_ms));
    }
  }
  // Shutdown: whatever is left ends as cancelled.
  TakeInbox();
  for (uint64_t id : planner_.Ids()) Finish(id, FinishReason::kCancelled);
  PublishStats();
}

}  // namespace moeserve
