// moectl subcommands; each returns the process exit status.
#ifndef MOESERVE_CLIENTS_MOECTL_COMMANDS_H_
#define MOESERVE_CLIENTS_MOECTL_COMMANDS_H_

namespace moeserve::moectl {

int Generate();  // stream a completion to stdout
int Complete();  // one unary completion
int Tokenize();  // text -> token ids and pieces
int Info();      // GetModelInfo
int Health();    // grpc.health.v1 Check: exit 0 when SERVING
int Bench();     // load generator (bench.cc)

}  // namespace moeserve::moectl

#endif  // MOESERVE_CLIENTS_MOECTL_COMMANDS_H_
