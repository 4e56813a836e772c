// moeserve's Prometheus metrics (names in DESIGN.md §3): per-layer expert activation and
// per-expert load from the engine's routing, per-layer latency, request latencies and
// scheduler figures, model/build info and process metrics, served by prometheus-cpp's
// exposer on its own address.
//
// Thread-safety: the observer callbacks run on the serving loop; prometheus-cpp metrics are
// safe to scrape concurrently.
#ifndef MOESERVE_SERVER_SERVING_METRICS_H_
#define MOESERVE_SERVER_SERVING_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "scheduler/scheduler_observer.h"
#include "server/http_listener.h"
#include "server/server_config.h"

namespace moeserve {

class ServingMetrics final : public EngineObserver, public SchedulerObserver {
 public:
  // Builds every series for `engine`'s model and, when metrics.listen is non-empty, serves
  // GET /metrics there (port 0 picks a free port).
  static absl::StatusOr<std::unique_ptr<ServingMetrics>> Create(const ServerConfig& config, const Engine& engine);
  ~ServingMetrics();

  int port() const { return port_; }
  prometheus::Registry& registry() { return *registry_; }
  // The exposition text of every series (what GET /metrics returns).
  std::string Scrape() const;

  // EngineObserver.
  void OnRouting(int layer, const Routing& routing) override;
  void OnLayerTime(int layer, LayerOp op, double seconds) override;
  // SchedulerObserver.
  void OnStep(const StepReport& report) override;
  void OnState(int running, int waiting, double kv_usage) override;
  void OnFirstToken(double ttft_seconds, double queue_seconds) override;
  void OnInterToken(double seconds) override;
  void OnRequestFinished(const RequestParams& params, const TokenEvent& event, double e2e_seconds) override;

 private:
  struct MoeLayerSeries {
    int num_experts = 0;
    prometheus::Histogram* active_experts = nullptr;
    prometheus::Counter* routed_tokens = nullptr;
    prometheus::Counter* activations = nullptr;
    prometheus::Gauge* activation_ratio = nullptr;
    std::vector<prometheus::Counter*> expert_tokens;  // empty when per-expert series are off
    std::deque<std::pair<int64_t, int64_t>> window;    // recent steps: (tokens, activations)
    int64_t window_tokens = 0, window_activations = 0;
    std::vector<int64_t> counts;                       // per-expert scratch
  };

  ServingMetrics() = default;
  void BuildSeries(const ServerConfig& config, const Engine& engine);

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<HttpListener> http_;  // serves GET /metrics
  int port_ = 0;
  std::map<int, MoeLayerSeries> moe_layers_;
  std::vector<std::vector<prometheus::Histogram*>> layer_seconds_;  // [layer][op]
  prometheus::Histogram *ttft_ = nullptr, *itl_ = nullptr, *e2e_ = nullptr, *queue_ = nullptr;
  prometheus::Histogram *batch_tokens_ = nullptr;
  std::vector<prometheus::Histogram*> step_seconds_;  // by StepPhase
  prometheus::Gauge *running_ = nullptr, *waiting_ = nullptr, *kv_usage_ = nullptr;
  prometheus::Counter *prompt_tokens_ = nullptr, *generation_tokens_ = nullptr, *preemptions_ = nullptr;
  prometheus::Counter *prefix_queried_ = nullptr, *prefix_hits_ = nullptr, *prefix_evictions_ = nullptr;
  prometheus::Gauge* prefix_blocks_ = nullptr;
  prometheus::Counter *spec_drafted_ = nullptr, *spec_accepted_ = nullptr;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  std::shared_ptr<prometheus::Collectable> process_;
};

}  // namespace moeserve

#endif  // MOESERVE_SERVER_SERVING_METRICS_H_
