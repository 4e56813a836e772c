#include "clients/moectl/args.h"

#include <algorithm>
#include <set>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"
#include "clients/moectl/client_options.h"

namespace moeserve::moectl {
namespace {

std::set<std::string>& SetFlags() {
  static std::set<std::string> names;
  return names;
}

// "a,b\,c" -> {"a", "b,c"}; an empty value is one empty string (the server rejects it by name).
std::vector<std::string> SplitStops(absl::string_view value) {
  std::vector<std::string> out(1);
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i] == '\\' && i + 1 < value.size() && value[i + 1] == ',') {
      out.back() += ',';
      ++i;
    } else if (value[i] == ',') {
      out.emplace_back();
    } else {
      out.back() += value[i];
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> ParseArgs(int argc, char** argv) {
  std::vector<std::string> positional, stops;
  bool only_positional = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (only_positional || arg.size() < 2 || arg[0] != '-') {
      positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    const size_t dashes = arg[1] == '-' ? 2 : 1;
    const size_t eq = arg.find('=');
    std::string name = arg.substr(dashes, eq == std::string::npos ? std::string::npos : eq - dashes);
    std::replace(name.begin(), name.end(), '-', '_');
    if (name == "help" || name == "h" || name == "helpfull") return std::string("help");
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::string value;
    bool has_value = eq != std::string::npos;
    if (has_value) value = arg.substr(eq + 1);
    if (flag == nullptr && name.rfind("no", 0) == 0 && !has_value) {  // --nojson
      flag = absl::FindCommandLineFlag(name.substr(2));
      if (flag != nullptr && flag->IsOfType<bool>()) {
        name = name.substr(2);
        value = "false";
        has_value = true;
      } else {
        flag = nullptr;
      }
    }
    if (flag == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    if (!has_value) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
    }
    SetFlags().insert(name);
    if (name == "stop") {  // repeatable: collect every occurrence
      for (std::string& s : SplitStops(value)) stops.push_back(std::move(s));
      continue;
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, "=", value, ": ", error));
    }
  }
  if (!stops.empty()) absl::SetFlag(&FLAGS_stop, stops);
  if (positional.empty()) return absl::InvalidArgumentError("missing command");
  if (positional.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", positional[1], "\""));
  }
  return positional[0];
}

bool FlagWasSet(absl::string_view name) { return SetFlags().count(std::string(name)) > 0; }

std::string UsageText() {
  std::string text =
      "usage: moectl <command> [flags]\n"
      "commands:\n"
      "  generate   stream a completion to stdout (--prompt TEXT | --token_ids 1,2,3); summary on stderr\n"
      "  complete   the whole completion in one call\n"
      "  tokenize   text -> token ids and pieces (--prompt TEXT)\n"
      "  info       model and scheduler information (GetModelInfo)\n"
      "  health     grpc.health.v1 Check (--service NAME); exit 0 when SERVING, 1 otherwise\n"
      "  bench      load generator: TTFT, ITL, TPOT, E2E (vLLM definitions; see bench.cc)\n"
      "exit status: 0 ok, 1 RPC error (\"error: CODE: message\" on stderr), 2 usage error\n"
      "flags:\n";
  std::vector<absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (flag->Filename().find("clients/moectl/") != std::string::npos) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(), [](auto* a, auto* b) { return a->Name() < b->Name(); });
  for (const absl::CommandLineFlag* f : flags) {
    absl::StrAppend(&text, "  --", f->Name(), "  ", f->Help(), " (default: \"", f->DefaultValue(), "\")\n");
  }
  return text;
}

}  // namespace moeserve::moectl
