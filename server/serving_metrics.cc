#include "server/serving_metrics.h"

#include <algorithm>
#include <exception>

#include <httplib.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/process_collector.h"

#ifndef MOESERVE_VERSION
#define MOESERVE_VERSION "unknown"
#endif

namespace moeserve {
namespace {

using prometheus::Histogram;

// Steps of history behind moeserve_moe_activation_ratio.
constexpr size_t kRatioWindowSteps = 256;

// Latency buckets spanning a Jetson running a 1B model and a data-centre GPU.
const Histogram::BucketBoundaries kTtftBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                                  0.3,   0.4,    0.5,   0.75, 1.0,   1.5,  2.0,   2.5, 5.0,  7.5,
                                                  10.0,  20.0,   40.0,  80.0};
const Histogram::BucketBoundaries kItlBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025,
                                                 0.03,   0.04,  0.05,   0.075, 0.1,    0.15, 0.2,   0.3,  0.4,
                                                 0.5,    0.75,  1.0,    2.5};
const Histogram::BucketBoundaries kE2eBuckets = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5,  1.0,   2.5,   5.0,   10.0,
                                                 15.0, 20.0,  30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0};
const Histogram::BucketBoundaries kLayerBuckets = {1e-5,   2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3,
                                                   2.5e-3, 5e-3,   1e-2, 2.5e-2, 5e-2, 0.1,  0.25};
const Histogram::BucketBoundaries kStepBuckets = {1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
                                                  5e-2, 0.1,    0.25, 0.5,  1.0,    2.5,  5.0};

Histogram::BucketBoundaries PowersOfTwo(int64_t max) {
  Histogram::BucketBoundaries b;
  for (int64_t v = 1; v <= max; v *= 2) b.push_back(static_cast<double>(v));
  return b;
}

// Integers up to 16, then doubling, up to E: exact counts where fan-out is small.
Histogram::BucketBoundaries ActiveExpertBuckets(int num_experts) {
  Histogram::BucketBoundaries b;
  for (int v = 0; v <= std::min(num_experts, 16); ++v) b.push_back(v);
  for (int v = 24; v < num_experts; v = v * 3 / 2) b.push_back(v);
  if (b.back() < num_experts) b.push_back(num_experts);
  return b;
}

const char* PhaseName(StepPhase p) {
  switch (p) {
    case StepPhase::kPrefill: return "prefill";
    case StepPhase::kDecode: return "decode";
    case StepPhase::kMixed: return "mixed";
  }
  return "?";
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServingMetrics>> ServingMetrics::Create(const ServerConfig& config,
                                                                      const Engine& engine) {
  std::unique_ptr<ServingMetrics> m(new ServingMetrics());
  m->registry_ = std::make_shared<prometheus::Registry>();
  m->BuildSeries(config, engine);
  if (!config.metrics.listen.empty()) {
    ServingMetrics* self = m.get();
    ASSIGN_OR_RETURN(m->http_, HttpListener::Start("metrics.listen", config.metrics.listen, [self](httplib::Server& s) {
                       s.Get("/metrics", [self](const httplib::Request&, httplib::Response& res) {
                         res.set_content(self->Scrape(), "text/plain; version=0.0.4; charset=utf-8");
                       });
                     }));
    m->port_ = m->http_->port();
  }
  return m;
}

// Stops the listener first: its handlers read the registry.
ServingMetrics::~ServingMetrics() { http_.reset(); }

std::string ServingMetrics::Scrape() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  std::vector<prometheus::MetricFamily> process = process_->Collect();
  families.insert(families.end(), std::make_move_iterator(process.begin()), std::make_move_iterator(process.end()));
  return prometheus::TextSerializer().Serialize(families);
}

void ServingMetrics::BuildSeries(const ServerConfig& config, const Engine& engine) {
  prometheus::Registry& r = *registry_;
  const EngineInfo& info = engine.info();
  auto& active = prometheus::BuildHistogram()
                     .Name("moeserve_moe_active_experts")
                     .Help("Routed experts active per token, per MoE layer.")
                     .Register(r);
  auto& routed = prometheus::BuildCounter()
                     .Name("moeserve_moe_routed_tokens_total")
                     .Help("Tokens routed through each MoE layer (prefill, decode and recompute).")
                     .Register(r);
  auto& activations = prometheus::BuildCounter()
                          .Name("moeserve_moe_expert_activations_total")
                          .Help("Sum over routed tokens of their active experts, per MoE layer.")
                          .Register(r);
  auto& ratio = prometheus::BuildGauge()
                    .Name("moeserve_moe_activation_ratio")
                    .Help("Active experts / (tokens x experts) over the last 256 steps, per MoE layer.")
                    .Register(r);
  auto& expert_tokens = prometheus::BuildCounter()
                            .Name("moeserve_moe_expert_tokens_total")
                            .Help("Tokens that activated each expert (per-expert load).")
                            .Register(r);
  auto& layer_seconds = prometheus::BuildHistogram()
                            .Name("moeserve_layer_forward_seconds")
                            .Help("Wall time of one layer's attention or FFN/MoE block per engine step.")
                            .Register(r);
  layer_seconds_.resize(info.num_layers);
  for (int i = 0; i < info.num_layers; ++i) {
    const std::string layer = std::to_string(i);
    const bool is_moe = info.ExpertsOfLayer(i) > 0;
    layer_seconds_[i] = {&layer_seconds.Add({{"layer", layer}, {"op", "attention"}}, kLayerBuckets),
                         &layer_seconds.Add({{"layer", layer}, {"op", is_moe ? "moe" : "ffn"}}, kLayerBuckets)};
    if (!is_moe) continue;
    MoeLayerSeries& s = moe_layers_[i];
    s.num_experts = info.ExpertsOfLayer(i);
    s.active_experts = &active.Add({{"layer", layer}}, ActiveExpertBuckets(s.num_experts));
    s.routed_tokens = &routed.Add({{"layer", layer}});
    s.activations = &activations.Add({{"layer", layer}});
    s.activation_ratio = &ratio.Add({{"layer", layer}});
    s.counts.assign(s.num_experts, 0);
    if (config.metrics.per_expert) {
      for (int e = 0; e < s.num_experts; ++e) {
        s.expert_tokens.push_back(&expert_tokens.Add({{"layer", layer}, {"expert", std::to_string(e)}}));
      }
    }
  }
  ttft_ = &prometheus::BuildHistogram()
               .Name("moeserve_time_to_first_token_seconds")
               .Help("Request arrival to its first generated token.")
               .Register(r)
               .Add({}, kTtftBuckets);
  itl_ = &prometheus::BuildHistogram()
              .Name("moeserve_inter_token_latency_seconds")
              .Help("Gap between consecutive generated tokens of a request.")
              .Register(r)
              .Add({}, kItlBuckets);
  e2e_ = &prometheus::BuildHistogram()
              .Name("moeserve_e2e_request_latency_seconds")
              .Help("Request arrival to its end.")
              .Register(r)
              .Add({}, kE2eBuckets);
  queue_ = &prometheus::BuildHistogram()
                .Name("moeserve_request_queue_time_seconds")
                .Help("Request arrival to its first scheduling.")
                .Register(r)
                .Add({}, kTtftBuckets);
  auto& step = prometheus::BuildHistogram()
                   .Name("moeserve_step_duration_seconds")
                   .Help("Engine step wall time (forward pass, sampling, streaming), by phase.")
                   .Register(r);
  for (StepPhase p : {StepPhase::kPrefill, StepPhase::kDecode, StepPhase::kMixed}) {
    step_seconds_.push_back(&step.Add({{"phase", PhaseName(p)}}, kStepBuckets));
  }
  batch_tokens_ = &prometheus::BuildHistogram()
                       .Name("moeserve_batch_tokens")
                       .Help("Tokens processed per engine step.")
                       .Register(r)
                       .Add({}, PowersOfTwo(16384));
  running_ = &prometheus::BuildGauge()
                  .Name("moeserve_num_requests_running")
                  .Help("Requests holding KV blocks.")
                  .Register(r)
                  .Add({});
  waiting_ =
      &prometheus::BuildGauge().Name("moeserve_num_requests_waiting").Help("Requests queued.").Register(r).Add({});
  kv_usage_ = &prometheus::BuildGauge()
                   .Name("moeserve_kv_cache_usage_ratio")
                   .Help("Fraction of KV cache blocks in use.")
                   .Register(r)
                   .Add({});
  prompt_tokens_ = &prometheus::BuildCounter()
                        .Name("moeserve_prompt_tokens_total")
                        .Help("Prompt tokens computed (first computation only).")
                        .Register(r)
                        .Add({});
  generation_tokens_ = &prometheus::BuildCounter()
                            .Name("moeserve_generation_tokens_total")
                            .Help("Tokens generated.")
                            .Register(r)
                            .Add({});
  preemptions_ = &prometheus::BuildCounter()
                      .Name("moeserve_preemptions_total")
                      .Help("Sequences preempted (KV blocks freed, recomputed later).")
                      .Register(r)
                      .Add({});
  prefix_queried_ = &prometheus::BuildCounter()
                        .Name("moeserve_prefix_cache_queried_tokens_total")
                        .Help("Prompt tokens looked up in the prefix cache (first admission).")
                        .Register(r)
                        .Add({});
  prefix_hits_ = &prometheus::BuildCounter()
                      .Name("moeserve_prefix_cache_hit_tokens_total")
                      .Help("Prompt tokens whose KV blocks came from the prefix cache (not computed, not routed).")
                      .Register(r)
                      .Add({});
  prefix_evictions_ = &prometheus::BuildCounter()
                           .Name("moeserve_prefix_cache_evictions_total")
                           .Help("Cached KV blocks evicted to make room.")
                           .Register(r)
                           .Add({});
  prefix_blocks_ = &prometheus::BuildGauge()
                        .Name("moeserve_prefix_cache_blocks")
                        .Help("KV blocks holding cached prefix content (in use or idle).")
                        .Register(r)
                        .Add({});
  spec_drafted_ = &prometheus::BuildCounter()
                       .Name("moeserve_spec_decode_draft_tokens_total")
                       .Help("Speculative decoding: draft tokens verified.")
                       .Register(r)
                       .Add({});
  spec_accepted_ = &prometheus::BuildCounter()
                        .Name("moeserve_spec_decode_accepted_tokens_total")
                        .Help("Speculative decoding: draft tokens accepted.")
                        .Register(r)
                        .Add({});
  requests_ = &prometheus::BuildCounter()
                   .Name("moeserve_requests_total")
                   .Help("Finished requests by finish reason.")
                   .Register(r);
  for (const char* reason : {"length", "stop_token", "stop_sequence", "cancelled", "deadline", "error"}) {
    requests_->Add({{"finish_reason", reason}});  // present at 0 from the start
  }
  prometheus::BuildGauge()
      .Name("moeserve_model_info")
      .Help("The served model (always 1).")
      .Register(r)
      .Add({{"model", config.model.path},
            {"router", info.router},
            {"num_layers", std::to_string(info.num_layers)},
            {"num_moe_layers", std::to_string(info.moe_layers.size())},
            {"num_experts", std::to_string(info.num_experts)},
            {"expert_width", std::to_string(info.expert_width)},
            {"dtype", std::string(ComputeDTypeName(info.dtype))},
            {"kv_dtype", std::string(ComputeDTypeName(info.kv.dtype))},
            {"backend", BackendName(info.backend)}})
      .Set(1);
  prometheus::BuildGauge()
      .Name("moeserve_build_info")
      .Help("moeserve build (always 1).")
      .Register(r)
      .Add({{"version", MOESERVE_VERSION}, {"compiler", __VERSION__}, {"kernels", info.kernels}})
      .Set(1);
  process_ = std::make_shared<ProcessCollector>();
}

void ServingMetrics::OnRouting(int layer, const Routing& routing) {
  auto it = moe_layers_.find(layer);
  if (it == moe_layers_.end()) return;
  MoeLayerSeries& s = it->second;
  const int64_t tokens = routing.num_tokens();
  int64_t total = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    s.active_experts->Observe(routing.num_active[t]);
    total += routing.num_active[t];
  }
  s.routed_tokens->Increment(static_cast<double>(tokens));
  s.activations->Increment(static_cast<double>(total));
  if (!s.expert_tokens.empty()) {
    std::fill(s.counts.begin(), s.counts.end(), 0);
    for (size_t i = 0; i < routing.experts.size(); ++i) {
      if (routing.active[i]) ++s.counts[routing.experts[i]];
    }
    for (int e = 0; e < s.num_experts; ++e) {
      if (s.counts[e] != 0) s.expert_tokens[e]->Increment(static_cast<double>(s.counts[e]));
    }
  }
  s.window.emplace_back(tokens, total);
  s.window_tokens += tokens;
  s.window_activations += total;
  if (s.window.size() > kRatioWindowSteps) {
    s.window_tokens -= s.window.front().first;
    s.window_activations -= s.window.front().second;
    s.window.pop_front();
  }
  if (s.window_tokens > 0) {
    s.activation_ratio->Set(static_cast<double>(s.window_activations) /
                            (static_cast<double>(s.window_tokens) * s.num_experts));
  }
}

void ServingMetrics::OnLayerTime(int layer, LayerOp op, double seconds) {
  if (layer < 0 || layer >= static_cast<int>(layer_seconds_.size())) return;
  layer_seconds_[layer][op == LayerOp::kAttention ? 0 : 1]->Observe(seconds);
}

void ServingMetrics::OnStep(const StepReport& report) {
  step_seconds_[static_cast<int>(report.phase)]->Observe(report.seconds);
  batch_tokens_->Observe(report.batch_tokens);
  if (report.prompt_tokens > 0) prompt_tokens_->Increment(report.prompt_tokens);
  if (report.generated_tokens > 0) generation_tokens_->Increment(report.generated_tokens);
  if (report.preemptions > 0) preemptions_->Increment(report.preemptions);
  if (report.prefix_queried_tokens > 0) prefix_queried_->Increment(static_cast<double>(report.prefix_queried_tokens));
  if (report.prefix_hit_tokens > 0) prefix_hits_->Increment(static_cast<double>(report.prefix_hit_tokens));
  if (report.prefix_evictions > 0) prefix_evictions_->Increment(static_cast<double>(report.prefix_evictions));
  prefix_blocks_->Set(static_cast<double>(report.prefix_cached_blocks));
  if (report.spec_draft_tokens > 0) spec_drafted_->Increment(static_cast<double>(report.spec_draft_tokens));
  if (report.spec_accepted_tokens > 0) spec_accepted_->Increment(static_cast<double>(report.spec_accepted_tokens));
}

void ServingMetrics::OnState(int running, int waiting, double kv_usage) {
  running_->Set(running);
  waiting_->Set(waiting);
  kv_usage_->Set(kv_usage);
}

void ServingMetrics::OnFirstToken(double ttft_seconds, double queue_seconds) {
  ttft_->Observe(ttft_seconds);
  queue_->Observe(queue_seconds);
}

void ServingMetrics::OnInterToken(double seconds) { itl_->Observe(seconds); }

void ServingMetrics::OnRequestFinished(const RequestParams&, const TokenEvent& event, double e2e_seconds) {
  e2e_->Observe(e2e_seconds);
  requests_->Add({{"finish_reason", FinishReasonName(event.finish)}}).Increment();
}

}  // namespace moeserve
