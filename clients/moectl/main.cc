// moectl: command-line client of moeserve.
//   moectl generate --prompt "..." [--max_new_tokens N] [--target host:port] [--json]
//   moectl complete | tokenize | info | health | bench [flags]
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "clients/moectl/commands.h"

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "moectl <generate|complete|tokenize|info|health|bench> [--target host:port] [--json] [flags]");
  // Accept --flag-name as well as --flag_name.
  std::vector<std::string> args(argv, argv + argc);
  std::vector<char*> argp;
  for (std::string& a : args) {
    if (a.rfind("--", 0) == 0) {
      for (size_t i = 2; i < std::min(a.find('='), a.size()); ++i) {
        if (a[i] == '-') a[i] = '_';
      }
    }
    argp.push_back(a.data());
  }
  const std::vector<char*> positional = absl::ParseCommandLine(static_cast<int>(argp.size()), argp.data());
  if (positional.size() != 2) {
    std::cerr << "usage: moectl <generate|complete|tokenize|info|health|bench> [flags]  (--help for flags)\n";
    return 2;
  }
  const std::string command = positional[1];
  using namespace moeserve::moectl;
  if (command == "generate") return Generate();
  if (command == "complete") return Complete();
  if (command == "tokenize") return Tokenize();
  if (command == "info") return Info();
  if (command == "health") return Health();
  if (command == "bench") return Bench();
  std::cerr << "moectl: unknown command \"" << command << "\"\n";
  return 2;
}
