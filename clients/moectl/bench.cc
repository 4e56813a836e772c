// moectl bench: a load generator with vLLM's benchmark definitions.
//   TTFT  = request start -> first streamed chunk carrying a token
//   ITL   = gap between consecutive token-carrying chunks (one value per gap, as vLLM records
//           per streamed chunk; a chunk that carries several tokens counts once)
//   TPOT  = (E2E - TTFT) / (output tokens - 1)
//   E2E   = request start -> end of the stream
// Fixed concurrency (--concurrency N, --num_requests M) or Poisson arrivals (--request_rate R),
// seeded random input/output lengths, token-id prompts with ignore_eos so lengths are exact.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "clients/moectl/client_options.h"
#include "clients/moectl/commands.h"
#include "moeserve/v1/inference.grpc.pb.h"

ABSL_FLAG(int, num_requests, 64, "bench: requests to send");
ABSL_FLAG(int, concurrency, 1, "bench: requests in flight at once (fixed-concurrency mode)");
ABSL_FLAG(double, request_rate, 0, "bench: Poisson arrival rate in requests/s (0 = fixed concurrency)");
ABSL_FLAG(int, input_len, 32, "bench: prompt tokens");
ABSL_FLAG(int, output_len, 128, "bench: generated tokens");
ABSL_FLAG(double, len_jitter, 0, "bench: lengths drawn uniformly within +-this fraction");
ABSL_FLAG(uint64_t, bench_seed, 0, "bench: seed of lengths, prompts and arrivals");
ABSL_FLAG(std::string, out, "", "bench: also write the JSON result here");

namespace moeserve::moectl {
namespace {

using Clock = std::chrono::steady_clock;

struct RequestRecord {
  bool ok = false;
  int output_tokens = 0;
  double ttft = 0, e2e = 0;
  std::vector<double> itl;
};

struct Stats {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0;
};

Stats Summarise(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / v.size();
  auto pct = [&](double p) {  // linear interpolation between closest ranks
    const double pos = p / 100.0 * (v.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(pos)), hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - lo);
  };
  s.p50 = pct(50);
  s.p90 = pct(90);
  s.p99 = pct(99);
  return s;
}

std::string StatsJson(const Stats& s) {
  std::ostringstream o;
  o << "{\"mean\":" << s.mean << ",\"p50\":" << s.p50 << ",\"p90\":" << s.p90 << ",\"p99\":" << s.p99 << "}";
  return o.str();
}

RequestRecord RunOne(v1::Inference::Stub& stub, const v1::GenerateRequest& request) {
  RequestRecord rec;
  grpc::ClientContext context;
  PrepareContext(context);
  const Clock::time_point start = Clock::now();
  Clock::time_point last{};
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse chunk;
  while (reader->Read(&chunk)) {
    if (chunk.token_ids_size() == 0) continue;
    const Clock::time_point now = Clock::now();
    if (rec.output_tokens == 0) {
      rec.ttft = std::chrono::duration<double>(now - start).count();
    } else {
      rec.itl.push_back(std::chrono::duration<double>(now - last).count());
    }
    last = now;
    rec.output_tokens += chunk.token_ids_size();
  }
  rec.ok = reader->Finish().ok();
  rec.e2e = std::chrono::duration<double>(Clock::now() - start).count();
  return rec;
}

}  // namespace

int Bench() {
  auto channel = MakeChannel();
  auto stub = v1::Inference::NewStub(*channel);
  v1::ModelInfo info;
  {
    grpc::ClientContext context;
    PrepareContext(context);
    const grpc::Status status = stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
    if (!status.ok()) return ReportRpcError(status);
  }
  const int n = absl::GetFlag(FLAGS_num_requests);
  const double jitter = absl::GetFlag(FLAGS_len_jitter);
  std::mt19937_64 rng(absl::GetFlag(FLAGS_bench_seed));
  auto draw = [&](int base) {
    std::uniform_real_distribution<double> u(1.0 - jitter, 1.0 + jitter);
    return std::max(1, static_cast<int>(std::lround(base * u(rng))));
  };
  std::vector<v1::GenerateRequest> requests(n);
  for (auto& r : requests) {
    const int in = draw(absl::GetFlag(FLAGS_input_len)), out = draw(absl::GetFlag(FLAGS_output_len));
    r.mutable_token_ids()->add_ids(1);
    for (int i = 1; i < in; ++i) r.mutable_token_ids()->add_ids(3 + static_cast<int32_t>(rng() % (info.vocab_size() - 3)));
    r.set_max_new_tokens(out);
    r.set_ignore_eos(true);
  }
  RunOne(*stub, requests[0]);  // warm-up, not counted

  std::vector<RequestRecord> records(n);
  const Clock::time_point start = Clock::now();
  const double rate = absl::GetFlag(FLAGS_request_rate);
  if (rate > 0) {
    std::exponential_distribution<double> gap(rate);
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([&, i] { records[i] = RunOne(*stub, requests[i]); });
      std::this_thread::sleep_for(std::chrono::duration<double>(gap(rng)));
    }
    for (auto& t : threads) t.join();
  } else {
    std::atomic<int> next{0};
    std::vector<std::thread> workers;
    for (int w = 0; w < std::max(1, absl::GetFlag(FLAGS_concurrency)); ++w) {
      workers.emplace_back([&] {
        for (int i = next++; i < n; i = next++) records[i] = RunOne(*stub, requests[i]);
      });
    }
    for (auto& t : workers) t.join();
  }
  const double duration = std::chrono::duration<double>(Clock::now() - start).count();

  int completed = 0;
  int64_t output_tokens = 0;
  std::vector<double> ttft, itl, tpot, e2e;
  for (const RequestRecord& r : records) {
    if (!r.ok) continue;
    ++completed;
    output_tokens += r.output_tokens;
    ttft.push_back(r.ttft);
    e2e.push_back(r.e2e);
    itl.insert(itl.end(), r.itl.begin(), r.itl.end());
    if (r.output_tokens > 1) tpot.push_back((r.e2e - r.ttft) / (r.output_tokens - 1));
  }
  std::ostringstream json;
  json << "{\"target\":\"" << absl::GetFlag(FLAGS_target) << "\",\"num_requests\":" << n
       << ",\"concurrency\":" << (rate > 0 ? 0 : absl::GetFlag(FLAGS_concurrency)) << ",\"request_rate\":" << rate
       << ",\"input_len\":" << absl::GetFlag(FLAGS_input_len) << ",\"output_len\":" << absl::GetFlag(FLAGS_output_len)
       << ",\"len_jitter\":" << jitter << ",\"seed\":" << absl::GetFlag(FLAGS_bench_seed)
       << ",\"duration_s\":" << duration << ",\"completed\":" << completed << ",\"failed\":" << n - completed
       << ",\"output_tokens\":" << output_tokens << ",\"output_tokens_per_s\":" << output_tokens / duration
       << ",\"requests_per_s\":" << completed / duration << ",\"ttft_s\":" << StatsJson(Summarise(ttft))
       << ",\"itl_s\":" << StatsJson(Summarise(itl)) << ",\"tpot_s\":" << StatsJson(Summarise(tpot))
       << ",\"e2e_s\":" << StatsJson(Summarise(e2e)) << "}";
  std::cout << json.str() << "\n";
  if (!absl::GetFlag(FLAGS_out).empty()) std::ofstream(absl::GetFlag(FLAGS_out)) << json.str() << "\n";
  return completed == n ? 0 : 1;
}

}  // namespace moeserve::moectl
