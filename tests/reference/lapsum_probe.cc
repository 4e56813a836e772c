// lapsum_probe: runs moeserve's LapSum router on given logits, for lapsum_router_test.py.
//
//   lapsum_probe IN.json OUT.json
//
// IN:  {"cases": [{"logits": [...], "k": 1.5, "alpha": 1.0, "c": 1.8, "gamma": 2.0}, ...]}
// OUT: {"cases": [{"p": [...], "tau": τ, "cap": cap, "theta0": θ0, "theta": θ,
//                  "active": [ids ascending], "weights": [p of each active id], "num_active": n}]}
// p is the soft top-k before truncation (fp32 values written exactly); active/weights/num_active
// come from the router itself (MakeRouter with RouterKind::kLapSum), the way the engine calls it.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

#include "engine/moe/lapsum.h"
#include "engine/moe/router.h"
#include "nlohmann/json.hpp"

int main(int argc, char** argv) {
  using moeserve::RouterSpec;
  if (argc != 3) {
    std::cerr << "usage: lapsum_probe IN.json OUT.json\n";
    return 2;
  }
  std::ifstream in(argv[1]);
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.contains("cases")) {
    std::cerr << argv[1] << ": not a JSON object with \"cases\"\n";
    return 2;
  }
  nlohmann::json out = nlohmann::json::array();
  moeserve::RouterScratch scratch;
  for (const auto& c : j["cases"]) {
    const std::vector<float> z = c["logits"].get<std::vector<float>>();
    const int n = static_cast<int>(z.size());
    RouterSpec spec;
    spec.kind = moeserve::RouterKind::kLapSum;
    spec.num_experts = n;
    spec.lapsum_scale = c["alpha"].get<double>();
    spec.threshold_coeff = c.value("c", 1.8);
    spec.cap_coeff = c.value("gamma", 2.0);
    const moeserve::LapSumConstants k =
        moeserve::MakeLapSumConstants(c["k"].get<double>(), n, spec.threshold_coeff, spec.cap_coeff);
    spec.lapsum_k = k.k;
    spec.lapsum_cap = k.cap;
    spec.lapsum_theta0 = k.theta0;

    std::vector<float> p(n), sorted(n);
    std::vector<double> work(3 * static_cast<size_t>(n));
    const double tau = moeserve::LapSumSoftTopK(z.data(), n, k.k, spec.lapsum_scale, p.data(), work.data());
    const float theta = moeserve::LapSumThreshold(p.data(), n, k.cap, k.theta0, sorted.data());

    moeserve::Routing routing;
    moeserve::MakeRouter(spec)->RouteToken(z.data(), scratch, routing);
    std::vector<int> active(routing.experts.begin(), routing.experts.end());
    out.push_back({{"p", p},
                   {"tau", tau},
                   {"cap", k.cap},
                   {"theta0", k.theta0},
                   {"theta", theta},
                   {"active", active},
                   {"weights", routing.weights},
                   {"num_active", routing.num_active[0]}});
  }
  std::ofstream f(argv[2]);
  f << nlohmann::json{{"cases", out}}.dump() << "\n";
  if (!f) {
    std::cerr << argv[2] << ": cannot write\n";
    return 1;
  }
  return 0;
}
