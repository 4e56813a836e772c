// moectl's command line: one subcommand and absl flags, parsed without absl's exit-on-error so
// that every usage error exits with status 2.
//   --flag=value, --flag value, --flag-name (same as --flag_name), --bool / --nobool,
//   --stop repeatable (and each value a comma list; "\," is a literal comma).
#ifndef MOESERVE_CLIENTS_MOECTL_ARGS_H_
#define MOESERVE_CLIENTS_MOECTL_ARGS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moeserve::moectl {

// Returns the subcommand ("help" for --help / -h / help). Errors are usage errors.
absl::StatusOr<std::string> ParseArgs(int argc, char** argv);

// Whether a flag was given on the command line (as opposed to left at its default).
bool FlagWasSet(absl::string_view name);

// "usage: moectl <command> [flags]" with the commands and moectl's own flags.
std::string UsageText();

}  // namespace moeserve::moectl

#endif  // MOESERVE_CLIENTS_MOECTL_ARGS_H_
