// moectl subcommands; each returns the process exit status (see client_options.h).
#ifndef MOESERVE_CLIENTS_MOECTL_COMMANDS_H_
#define MOESERVE_CLIENTS_MOECTL_COMMANDS_H_

namespace moeserve::moectl {

int Generate();  // generate.cc: stream a completion to stdout, summary to stderr
int Complete();  // generate.cc: one unary completion
int Tokenize();  // simple_commands.cc: text -> token ids and pieces
int Info();      // simple_commands.cc: GetModelInfo
int Health();    // simple_commands.cc: grpc.health.v1 Check, exit 0 when SERVING
int Bench();     // bench.cc: load generator

}  // namespace moeserve::moectl

#endif  // MOESERVE_CLIENTS_MOECTL_COMMANDS_H_
