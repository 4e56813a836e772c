// moeserve: the gRPC inference server.
//   moeserve --config deploy/config/default.yaml [--set section.key=value ...]
#include <csignal>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "server/model_server.h"
#include "server/server_config.h"

ABSL_FLAG(std::string, config, "", "YAML config file (deploy/config/*.yaml)");
ABSL_FLAG(std::vector<std::string>, set, {}, "comma-separated overrides section.key=value, e.g. model.threads=2");
ABSL_FLAG(std::string, model, "", "shortcut for --set model.path=DIR");
ABSL_FLAG(std::string, listen, "", "shortcut for --set server.listen=ADDR");
ABSL_FLAG(bool, check_config, false, "validate the config (and overrides) and exit: 0 if valid, 1 otherwise");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("moeserve --config FILE [--set section.key=value,...]");
  absl::ParseCommandLine(argc, argv);
  // Signals are taken by sigwait below, so block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::vector<std::string> overrides = absl::GetFlag(FLAGS_set);
  if (!absl::GetFlag(FLAGS_model).empty()) overrides.push_back("model.path=" + absl::GetFlag(FLAGS_model));
  if (!absl::GetFlag(FLAGS_listen).empty()) overrides.push_back("server.listen=" + absl::GetFlag(FLAGS_listen));
  auto config = moeserve::LoadServerConfig(absl::GetFlag(FLAGS_config), overrides);
  if (!config.ok()) {
    std::cerr << "error: " << config.status().message() << "\n";
    return 1;
  }
  if (absl::GetFlag(FLAGS_check_config)) {
    std::cerr << "config OK\n";
    return 0;
  }
  auto server = moeserve::ModelServer::Start(*config);
  if (!server.ok()) {
    std::cerr << "error: " << server.status().message() << "\n";
    return 1;
  }
  std::cerr << "moeserve: serving " << config->model.path << " on port " << (*server)->port() << "\n";
  int signal = 0;
  sigwait(&signals, &signal);
  std::cerr << "moeserve: signal " << signal << ", draining\n";
  (*server)->Shutdown();
  std::cerr << "moeserve: stopped\n";
  return 0;
}
