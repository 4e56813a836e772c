// moectl: command-line client of moeserve.
//   moectl generate --target host:port --prompt "Experts are" --max_new_tokens 32
//   moectl complete | tokenize | info | health | bench [flags]      (moectl --help for all)
#include <iostream>
#include <string>

#include "clients/moectl/args.h"
#include "clients/moectl/client_options.h"
#include "clients/moectl/commands.h"

int main(int argc, char** argv) {
  using namespace moeserve::moectl;
  auto command = ParseArgs(argc, argv);
  if (!command.ok()) {
    ReportUsageError(command.status());
    std::cerr << "usage: moectl <generate|complete|tokenize|info|health|bench> [flags]  (--help for flags)\n";
    return kExitUsage;
  }
  if (*command == "help") {
    std::cout << UsageText();
    return kExitOk;
  }
  if (*command == "generate") return Generate();
  if (*command == "complete") return Complete();
  if (*command == "tokenize") return Tokenize();
  if (*command == "info") return Info();
  if (*command == "health") return Health();
  if (*command == "bench") return Bench();
  std::cerr << "error: unknown command \"" << *command << "\" (moectl --help lists them)\n";
  return kExitUsage;
}
