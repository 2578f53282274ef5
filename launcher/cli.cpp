#include "launcher/cli.h"

#include <algorithm>
#include <map>

#include "common/errors.h"

namespace hydra::launcher {
namespace {

using common::ConfigError;

struct CommandSpec {
  const char* summary;
  const char* usage;
  std::vector<std::string> options;  // long options it accepts besides --help
};

// Subcommands appear here when they work (docs/INTERFACE.md lists the full contract).
const std::map<std::string, CommandSpec>& commands() {
  static const std::map<std::string, CommandSpec> table = {
      {"info",
       {"print the resolved config, the process grid and the model's sizes",
        "hydra info --config FILE [--set key.path=value]... [--json]",
        {"--config", "--set", "--json"}}},
  };
  return table;
}

bool takes_value(const std::string& option) { return option == "--config" || option == "--set"; }

}  // namespace

std::string help_text(const std::string& command) {
  std::string out;
  if (command.empty()) {
    out += "HYDRA-train: trains HYDRA hybrid-attention language models on CPUs and GPUs.\n\n";
    out += "usage: hydra COMMAND [options]      (one process)\n";
    out += "       mpirun -np N hydra COMMAND [options]   or   srun hydra COMMAND [options]\n\n";
    out += "commands:\n";
    for (const auto& [name, spec] : commands()) out += "  " + name + std::string(10 - name.size(), ' ') + spec.summary + "\n";
    out += "\nhydra COMMAND --help shows a command's options. Exit codes: 0 success, 2 usage or config\n";
    out += "error, 3 bad data or checkpoint, 4 runtime failure, 75 checkpointed on SIGTERM/SIGUSR1.\n";
    return out;
  }
  const auto& spec = commands().at(command);
  out += "usage: " + std::string(spec.usage) + "\n\n" + spec.summary + "\n\noptions:\n";
  out += "  --config FILE          run config (YAML; docs/INTERFACE.md lists the keys)\n";
  out += "  --set key.path=value   override one key (repeatable; applied after the file, in order)\n";
  if (command == "info") out += "  --json                 print JSON instead of text\n";
  out += "  --help                 this text\n";
  return out;
}

CliArgs parse_cli(int argc, const char* const* argv) {
  CliArgs args;
  int i = 1;
  if (i < argc && argv[i][0] != '-') args.command = argv[i++];
  if (!args.command.empty() && !commands().count(args.command)) {
    HYDRA_FAIL(ConfigError, "unknown command '" << args.command << "' (see hydra --help)");
  }
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1), arg = arg.substr(0, eq), has_value = true;  // --config=FILE
    }
    if (arg == "--help" || arg == "-h") { args.help = true; continue; }
    if (arg == "--version" && args.command.empty()) { args.version = true; continue; }
    const std::string where = args.command.empty() ? "hydra" : "hydra " + args.command;
    if (args.command.empty()) HYDRA_FAIL(ConfigError, "expected a command before '" << arg << "' (see hydra --help)");
    const auto& allowed = commands().at(args.command).options;
    if (std::find(allowed.begin(), allowed.end(), arg) == allowed.end()) {
      HYDRA_FAIL(ConfigError, "unknown option '" << arg << "' for " << where << " (see " << where << " --help)");
    }
    if (takes_value(arg) && !has_value) {
      if (i + 1 >= argc) HYDRA_FAIL(ConfigError, arg << " needs a value (see " << where << " --help)");
      value = argv[++i];
    } else if (!takes_value(arg) && has_value) {
      HYDRA_FAIL(ConfigError, arg << " takes no value");
    }
    if (arg == "--config") args.config = value;
    if (arg == "--set") args.sets.push_back(value);
    if (arg == "--json") args.json = true;
  }
  if (!args.help && !args.version && args.command.empty()) {
    HYDRA_FAIL(ConfigError, "no command given (see hydra --help)");
  }
  if (!args.help && args.command == "info" && args.config.empty()) {
    HYDRA_FAIL(ConfigError, "hydra info needs --config FILE");
  }
  return args;
}

}  // namespace hydra::launcher
