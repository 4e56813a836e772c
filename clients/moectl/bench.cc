// moectl bench: a load generator with vLLM's benchmark definitions (seconds throughout).
//   TTFT  request start -> the first streamed chunk that carries a token.
//   ITL   gaps between consecutive tokens. A chunk that carries k > 1 tokens (the server groups
//         tokens when the reader falls behind) contributes its gap from the previous
//         token-carrying chunk once, followed by k - 1 gaps of 0, so every request yields exactly
//         output_tokens - 1 ITL values and their mean equals the request's mean token gap.
//         ("multi_token_chunks" in the result says how often that happened.)
//   TPOT  (E2E - TTFT) / (output_tokens - 1), requests with more than one output token.
//   E2E   request start -> the last chunk of the stream.
// "Request start" is just before the Generate call (after a free --concurrency slot in rate
// mode). Modes: --concurrency N with --num_requests M (a closed loop of N workers), or
// --request_rate R (open loop, Poisson arrivals, seeded; --concurrency then caps requests in
// flight). Prompts are random token ids (BOS 1 first, then uniform in [1, vocab_size - 1]) and
// every request has ignore_eos, so input and output lengths are exact; lengths are drawn
// uniformly within +-len_jitter of --input_len / --output_len (seeded by --seed, default 0).
// One thread per request in flight, one shared channel.
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <random>
#include <semaphore>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "clients/moectl/args.h"
#include "clients/moectl/bench_stats.h"
#include "clients/moectl/client_options.h"
#include "clients/moectl/commands.h"
#include "moeserve/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(int, num_requests, 64, "bench: requests to measure");
ABSL_FLAG(int, concurrency, 1, "bench: requests in flight (closed loop); with --request_rate: a cap, only when given");
ABSL_FLAG(double, request_rate, 0, "bench: Poisson arrivals at this many requests/s (0 = fixed concurrency)");
ABSL_FLAG(int, input_len, 32, "bench: prompt tokens per request, BOS included");
ABSL_FLAG(int, output_len, 128, "bench: generated tokens per request (exact: ignore_eos)");
ABSL_FLAG(double, len_jitter, 0, "bench: lengths uniform in [len*(1-j), len*(1+j)], 0 <= j < 1");
ABSL_FLAG(int, warmup, 1, "bench: requests sent one by one before the measurement (not counted)");
ABSL_FLAG(std::string, out, "", "bench: also write the JSON result to this file");

namespace moeserve::moectl {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Params {
  int num_requests, concurrency, input_len, output_len, warmup;
  double request_rate, len_jitter;
  uint64_t seed;
  bool capped;  // rate mode with --concurrency given
};

struct Work {
  v1::GenerateRequest request;
  int input_len = 0, output_len = 0;
};

struct Record {
  bool ok = false;
  std::string error;  // status code name, or "finish_reason <NAME>"
  int output_tokens = 0, multi_token_chunks = 0;
  double ttft = 0, e2e = 0;
  std::vector<double> itl;
};

absl::StatusOr<Params> ParamsFromFlags() {
  Params p;
  p.num_requests = absl::GetFlag(FLAGS_num_requests);
  p.concurrency = absl::GetFlag(FLAGS_concurrency);
  p.input_len = absl::GetFlag(FLAGS_input_len);
  p.output_len = absl::GetFlag(FLAGS_output_len);
  p.warmup = absl::GetFlag(FLAGS_warmup);
  p.request_rate = absl::GetFlag(FLAGS_request_rate);
  p.len_jitter = absl::GetFlag(FLAGS_len_jitter);
  p.seed = FlagWasSet("seed") ? absl::GetFlag(FLAGS_seed) : 0;
  p.capped = p.request_rate > 0 && FlagWasSet("concurrency");
  if (p.num_requests < 1) return absl::InvalidArgumentError("--num_requests must be >= 1");
  if (p.concurrency < 1) return absl::InvalidArgumentError("--concurrency must be >= 1");
  if (p.input_len < 1 || p.output_len < 1)
    return absl::InvalidArgumentError("--input_len and --output_len must be >= 1");
  if (p.warmup < 0) return absl::InvalidArgumentError("--warmup must be >= 0");
  if (!(p.request_rate >= 0) || std::isinf(p.request_rate)) {
    return absl::InvalidArgumentError("--request_rate must be finite and >= 0");
  }
  if (!(p.len_jitter >= 0 && p.len_jitter < 1)) return absl::InvalidArgumentError("--len_jitter must be in [0, 1)");
  return p;
}

// Seeded prompts and lengths; a usage error when the longest request would not fit the context.
absl::StatusOr<std::vector<Work>> MakeWorkload(const Params& p, const v1::ModelInfo& info) {
  if (info.vocab_size() < 2) return absl::FailedPreconditionError("the model reports vocab_size < 2");
  auto range = [&](int len) {
    return std::make_pair(std::max(1, static_cast<int>(std::lround(len * (1 - p.len_jitter)))),
                          std::max(1, static_cast<int>(std::lround(len * (1 + p.len_jitter)))));
  };
  const auto [in_lo, in_hi] = range(p.input_len);
  const auto [out_lo, out_hi] = range(p.output_len);
  if (info.max_context() > 0 && static_cast<uint32_t>(in_hi + out_hi) > info.max_context()) {
    return absl::InvalidArgumentError(absl::StrCat("input + output length up to ", in_hi + out_hi,
                                                   " exceeds the model's max_context ", info.max_context()));
  }
  std::mt19937_64 rng(p.seed);
  std::uniform_int_distribution<int> in_len(in_lo, in_hi), out_len(out_lo, out_hi);
  std::uniform_int_distribution<int32_t> token(1, static_cast<int32_t>(info.vocab_size()) - 1);
  std::vector<Work> work(p.num_requests);
  for (size_t i = 0; i < work.size(); ++i) {
    Work& w = work[i];
    w.input_len = in_len(rng);
    w.output_len = out_len(rng);
    auto* ids = w.request.mutable_token_ids()->mutable_ids();
    ids->Add(1);  // BOS
    for (int t = 1; t < w.input_len; ++t) ids->Add(token(rng));
    w.request.set_max_new_tokens(static_cast<uint32_t>(w.output_len));
    w.request.set_ignore_eos(true);
    w.request.set_request_id(absl::StrCat("bench-", i));
  }
  return work;
}

Record RunOne(v1::Inference::Stub& stub, const v1::GenerateRequest& request) {
  Record rec;
  grpc::ClientContext context;
  PrepareContext(context);
  const Clock::time_point start = Clock::now();
  Clock::time_point previous_token{}, last_chunk = start;
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse chunk;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  while (reader->Read(&chunk)) {
    const Clock::time_point now = Clock::now();
    last_chunk = now;
    if (chunk.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) finish = chunk.finish_reason();
    const int k = chunk.token_ids_size();
    if (k == 0) continue;
    if (rec.output_tokens == 0) {
      rec.ttft = Seconds(now - start);
    } else {
      rec.itl.push_back(Seconds(now - previous_token));
    }
    rec.itl.insert(rec.itl.end(), k - 1, 0.0);
    if (k > 1) ++rec.multi_token_chunks;
    previous_token = now;
    rec.output_tokens += k;
  }
  const grpc::Status status = reader->Finish();
  rec.e2e = Seconds(last_chunk - start);
  if (!status.ok()) {
    rec.error = StatusCodeName(status.error_code());
  } else if (finish != v1::LENGTH && finish != v1::STOP_TOKEN && finish != v1::STOP_SEQUENCE) {
    rec.error = absl::StrCat("finish_reason ", v1::FinishReason_Name(finish));
  } else if (rec.output_tokens == 0) {
    rec.error = "no output tokens";
  } else {
    rec.ok = true;
  }
  return rec;
}

// Closed loop: `concurrency` workers, each sends its next request when the previous one ends.
void RunFixed(v1::Inference::Stub& stub, const Params& p, const std::vector<Work>& work, std::vector<Record>& out) {
  std::atomic<size_t> next{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < std::min(p.concurrency, p.num_requests); ++w) {
    workers.emplace_back([&] {
      for (size_t i = next++; i < work.size(); i = next++) out[i] = RunOne(stub, work[i].request);
    });
  }
  for (std::thread& t : workers) t.join();
}

// Open loop: request i arrives at the sum of i exponential gaps (the first at 0).
void RunPoisson(v1::Inference::Stub& stub, const Params& p, const std::vector<Work>& work, std::vector<Record>& out) {
  std::mt19937_64 rng(p.seed ^ 0x9e3779b97f4a7c15ULL);  // a stream apart from the workload's
  std::exponential_distribution<double> gap(p.request_rate);
  std::counting_semaphore<> slots(p.capped ? p.concurrency : static_cast<int>(work.size()));
  std::vector<std::thread> threads;
  const Clock::time_point start = Clock::now();
  double arrival = 0;
  for (size_t i = 0; i < work.size(); ++i) {
    if (i > 0) arrival += gap(rng);
    std::this_thread::sleep_until(start +
                                  std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(arrival)));
    threads.emplace_back([&, i] {
      slots.acquire();
      out[i] = RunOne(stub, work[i].request);
      slots.release();
    });
  }
  for (std::thread& t : threads) t.join();
}

Json DistributionJson(const Distribution& d) {
  Json j;
  j["count"] = d.count;
  for (auto [key, value] :
       {std::pair{"mean", d.mean}, {"p50", d.p50}, {"p90", d.p90}, {"p99", d.p99}, {"max", d.max}}) {
    j[key] = d.count > 0 ? Json(value) : Json(nullptr);
  }
  return j;
}

Json Report(const Params& p, const std::vector<Work>& work, const std::vector<Record>& records, double duration) {
  int completed = 0, multi_token_chunks = 0;
  int64_t input_tokens = 0, output_tokens = 0;
  std::map<std::string, int> errors;
  std::vector<double> ttft, itl, tpot, e2e;
  for (size_t i = 0; i < records.size(); ++i) {
    const Record& r = records[i];
    if (!r.ok) {
      ++errors[r.error];
      continue;
    }
    ++completed;
    input_tokens += work[i].input_len;
    output_tokens += r.output_tokens;
    multi_token_chunks += r.multi_token_chunks;
    ttft.push_back(r.ttft);
    e2e.push_back(r.e2e);
    itl.insert(itl.end(), r.itl.begin(), r.itl.end());
    if (r.output_tokens > 1) tpot.push_back((r.e2e - r.ttft) / (r.output_tokens - 1));
  }
  Json j;
  j["mode"] = p.request_rate > 0 ? "request_rate" : "concurrency";
  j["target"] = absl::GetFlag(FLAGS_target);
  j["num_requests"] = p.num_requests;
  j["concurrency"] = p.request_rate > 0 && !p.capped ? Json(nullptr) : Json(p.concurrency);
  j["request_rate"] = p.request_rate > 0 ? Json(p.request_rate) : Json(nullptr);
  j["input_len"] = p.input_len;
  j["output_len"] = p.output_len;
  j["len_jitter"] = p.len_jitter;
  j["seed"] = p.seed;
  j["warmup"] = p.warmup;
  j["itl_definition"] = "a chunk of k tokens adds its gap once and k-1 zeros";
  j["duration_s"] = duration;
  j["completed"] = completed;
  j["failed"] = p.num_requests - completed;
  j["errors"] = errors;
  j["input_tokens"] = input_tokens;
  j["output_tokens"] = output_tokens;
  j["requests_per_s"] = completed / duration;
  j["output_tokens_per_s"] = output_tokens / duration;
  j["total_tokens_per_s"] = (input_tokens + output_tokens) / duration;
  j["multi_token_chunks"] = multi_token_chunks;
  j["ttft_s"] = DistributionJson(Summarise(ttft));
  j["itl_s"] = DistributionJson(Summarise(itl));
  j["tpot_s"] = DistributionJson(Summarise(tpot));
  j["e2e_s"] = DistributionJson(Summarise(e2e));
  return j;
}

void PrintHuman(const Json& j) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(2);
  o << "mode: " << j["mode"].get<std::string>();
  if (!j["concurrency"].is_null()) o << "  concurrency " << j["concurrency"].get<int>();
  if (!j["request_rate"].is_null()) o << "  request_rate " << j["request_rate"].get<double>() << "/s";
  o << "  input_len " << j["input_len"].get<int>() << "  output_len " << j["output_len"].get<int>() << "\n";
  o << "requests: " << j["completed"].get<int>() << " completed, " << j["failed"].get<int>() << " failed";
  for (const auto& [code, n] : j["errors"].items()) o << "  " << code << " x" << n.get<int>();
  o << "\nduration: " << j["duration_s"].get<double>() << " s  requests/s: " << j["requests_per_s"].get<double>()
    << "  output tokens/s: " << j["output_tokens_per_s"].get<double>() << "  (" << j["output_tokens"].get<int64_t>()
    << " tokens, " << j["multi_token_chunks"].get<int>() << " multi-token chunks)\n";
  o << std::setw(8) << "(ms)" << std::setw(10) << "mean" << std::setw(10) << "p50" << std::setw(10) << "p90"
    << std::setw(10) << "p99" << "\n";
  for (const char* name : {"ttft_s", "itl_s", "tpot_s", "e2e_s"}) {
    const Json& d = j[name];
    o << std::setw(8) << std::string(name).substr(0, std::string(name).size() - 2);
    for (const char* key : {"mean", "p50", "p90", "p99"}) {
      if (d[key].is_null()) {
        o << std::setw(10) << "-";
      } else {
        o << std::setw(10) << 1000 * d[key].get<double>();
      }
    }
    o << "\n";
  }
  std::cout << o.str();
}

}  // namespace

int Bench() {
  auto params = ParamsFromFlags();
  if (!params.ok()) return ReportUsageError(params.status());
  auto channel = MakeChannel();
  if (!channel.ok()) return ReportUsageError(channel.status());
  auto stub = v1::Inference::NewStub(*channel);
  v1::ModelInfo info;
  {
    grpc::ClientContext context;
    PrepareContext(context);
    const grpc::Status status = stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
    if (!status.ok()) return ReportRpcError(status);
  }
  auto work = MakeWorkload(*params, info);
  if (!work.ok()) return ReportUsageError(work.status());

  for (int i = 0; i < params->warmup; ++i) {
    v1::GenerateRequest warm = (*work)[i % work->size()].request;
    warm.set_max_new_tokens(std::min<uint32_t>(warm.max_new_tokens(), 8));
    warm.set_request_id(absl::StrCat("bench-warmup-", i));
    const Record r = RunOne(*stub, warm);
    if (!r.ok) {
      std::cerr << "error: warm-up request failed: " << r.error << "\n";
      return kExitRpcError;
    }
  }

  std::vector<Record> records(work->size());
  const Clock::time_point start = Clock::now();
  if (params->request_rate > 0) {
    RunPoisson(*stub, *params, *work, records);
  } else {
    RunFixed(*stub, *params, *work, records);
  }
  const double duration = Seconds(Clock::now() - start);

  const Json report = Report(*params, *work, records, duration);
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << report.dump() << "\n";
  } else {
    PrintHuman(report);
  }
  if (const std::string path = absl::GetFlag(FLAGS_out); !path.empty()) {
    std::ofstream file(path);
    file << report.dump(1) << "\n";
    if (!file) {
      std::cerr << "error: cannot write --out \"" << path << "\"\n";
      return kExitUsage;
    }
  }
  return report["failed"].get<int>() == 0 ? kExitOk : kExitRpcError;
}

}  // namespace moeserve::moectl
