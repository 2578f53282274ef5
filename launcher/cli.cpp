#include "launcher/cli.h"

#include <algorithm>
#include <map>

#include "common/errors.h"
#include "launcher/nearest_name.h"

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
      {"train",
       {"train a model (one process, or every rank under mpirun/srun)",
        "hydra train --config FILE [--set key.path=value]... [--resume latest|DIR] [--init-from DIR|FILE] [--overwrite]",
        {"--config", "--set", "--resume", "--init-from", "--overwrite"}}},
      {"eval",
       {"validation loss and perplexity of a checkpoint (causal routing)",
        "hydra eval --config FILE --checkpoint DIR|FILE [--set key.path=value]... [--json]",
        {"--config", "--set", "--checkpoint", "--json"}}},
      {"generate",
       {"continue a prompt with a checkpoint's model: sampled tokens, streamed as text (one process)",
        "hydra generate --config FILE --checkpoint DIR|FILE [--set key.path=value]... (--prompt TEXT | --prompt-file FILE) "
        "[--max-new N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--batch B] [--no-cache] [--json] "
        "[--trace FILE]",
        {"--config", "--set", "--checkpoint", "--prompt", "--prompt-file", "--max-new", "--temperature", "--top-k",
         "--top-p", "--seed", "--batch", "--no-cache", "--json", "--trace"}}},
      {"data prepare",
       {"tokenize .txt/.jsonl files or directories into token shards and a manifest",
        "hydra data prepare --input PATH... --output DIR [--tokenizer gpt2|bytes] [--val-fraction F]",
        {"--input", "--output", "--tokenizer", "--val-fraction"}}},
      {"ckpt consolidate",
       {"one HDF5 file with every parameter whole (for fine-tuning and other tools)",
        "hydra ckpt consolidate DIR --output FILE",
        {"--output"}}},
      {"bench attention",
       {"time the CCQA layer (fused and reference kernels) against GQA+FlashAttention (CUDA build)",
        "hydra bench attention [--json FILE]",
        {"--json"}}},
      {"bench step",
       {"time the training step of a config: tok/s, MFU, peak memory, time per phase",
        "hydra bench step --config FILE [--set key.path=value]... [--steps N] [--warmup N] [--json FILE] "
        "[--trace FILE] [--tp-slice N]",
        {"--config", "--set", "--steps", "--warmup", "--json", "--trace", "--tp-slice"}}},
      {"bench comm",
       {"bandwidth and latency of the collectives on each process group of a layout (run it under mpirun)",
        "hydra bench comm --config FILE [--set key.path=value]... [--sizes 4K,1M,64M] [--repeats N] [--json FILE]",
        {"--config", "--set", "--sizes", "--repeats", "--json"}}},
      {"diagnose",
       {"measure a config's layers and model: speed, memory by layer type, gradient flow",
        "hydra diagnose --config FILE [--set key.path=value]... --out DIR [--sections speed,memory,gradients] "
        "[--batches 1,4,8] [--seqs 256,512,1024] [--repeats N] [--steps N]",
        {"--config", "--set", "--out", "--sections", "--batches", "--seqs", "--repeats", "--steps"}}},
      {"sweep",
       {"time the training step over rank counts and layouts (weak or strong scaling): JSON and plots",
        "hydra sweep --config FILE [--set key.path=value]... --series weak|strong --ranks 1,2,4 [--layouts dp,tp2,pp2,tp2pp2] "
        "[--launcher mpirun|slurm] [--mpirun PATH] [--mpirun-args \"ARGS\"] [--sbatch-args \"ARGS\"] [--steps N] "
        "[--warmup N] --out DIR",
        {"--config", "--set", "--series", "--ranks", "--layouts", "--launcher", "--mpirun", "--mpirun-args",
         "--sbatch-args", "--steps", "--warmup", "--out"}}},
      {"plan",
       {"predict memory per GPU and step time of every layout on a cluster, ranked by tokens/s",
        "hydra plan --config FILE [--set key.path=value]... --cluster FILE [--gpus N] [--top N] "
        "[--calibration FILE[,FILE...]] [--comm FILE] [--json FILE]",
        {"--config", "--set", "--cluster", "--gpus", "--top", "--calibration", "--comm", "--json"}}},
      {"ckpt inspect",
       {"step, tokens, layout, parameters, files and sizes of a checkpoint; verifies every checksum",
        "hydra ckpt inspect DIR [--json]",
        {"--json"}}},
  };
  return table;
}

// --json is a flag, except for `hydra bench ...` and `hydra plan` where it names the output file.
bool takes_value(const std::string& command, const std::string& option) {
  if (option == "--overwrite" || option == "--no-cache") return false;
  return option != "--json" || command.rfind("bench", 0) == 0 || command == "plan";
}

// Commands of two words ("data prepare") take their second word here.
bool has_action(const std::string& word) { return word == "data" || word == "ckpt" || word == "bench"; }

// Commands that take one positional argument (a directory), not a --config.
bool takes_target(const std::string& command) { return command == "ckpt inspect" || command == "ckpt consolidate"; }

// Options that may be given more than once; any other given twice is refused, not overridden.
bool repeatable(const std::string& option) { return option == "--set" || option == "--input"; }

// Every command name and command group, for suggestions.
std::vector<std::string> command_names() {
  std::vector<std::string> names = {"data", "ckpt", "bench"};
  for (const auto& [name, spec] : commands()) names.push_back(name);
  return names;
}

void check_command(const std::string& command) {
  if (!command.empty() && !commands().count(command)) {
    HYDRA_FAIL(ConfigError, "unknown command '" << command << "'" << did_you_mean(command, command_names())
                                                << " (see hydra --help)");
  }
}

// The value of an option: empty, or another option in its place, is a usage error.
void check_value(const std::string& option, const std::string& value, const std::string& where) {
  if (value.empty()) HYDRA_FAIL(ConfigError, option << " needs a value, got an empty one (see " << where << " --help)");
  // (mpirun's and sbatch's own options start with --)
  if (value.rfind("--", 0) == 0 && option != "--mpirun-args" && option != "--sbatch-args") {
    HYDRA_FAIL(ConfigError, option << " needs a value, got the option '" << value << "' (see " << where << " --help)");
  }
}

}  // namespace

std::string help_text(const std::string& command) {
  std::string out;
  if (command.empty()) {
    out += "HYDRA-train: trains HYDRA hybrid-attention language models on CPUs and GPUs.\n\n";
    out += "usage: hydra COMMAND [options]      (one process)\n";
    out += "       mpirun -np N hydra COMMAND [options]   or   srun hydra COMMAND [options]\n\n";
    out += "commands:\n";
    for (const auto& [name, spec] : commands()) {
      out += "  " + name + std::string(name.size() < 14 ? 14 - name.size() : 1, ' ') + spec.summary + "\n";
    }
    out += "\nhydra COMMAND --help shows a command's options. Exit codes: 0 success, 2 usage or config\n";
    out += "error, 3 bad data or checkpoint, 4 runtime failure, 75 checkpointed on SIGTERM/SIGINT/SIGUSR1.\n";
    return out;
  }
  const auto& spec = commands().at(command);
  out += "usage: " + std::string(spec.usage) + "\n\n" + spec.summary + "\n\noptions:\n";
  if (command == "ckpt consolidate") {
    out += "  --output FILE          the HDF5 file to write (through a temporary and a rename)\n";
    out += "  --help                 this text\n";
    return out;
  }
  if (command == "bench attention") {
    out += "  --json FILE            also write every figure as JSON to FILE\n  --help                 this text\n";
    out += "\nNeeds the CUDA build (exit 2 in the CPU build). docs/PERF.md records the results.\n";
    return out;
  }
  if (command == "bench step") {
    out += "  --config FILE          run config (YAML); data.path is read as in hydra train\n";
    out += "  --set key.path=value   override one key (repeatable)\n";
    out += "  --steps N              timed steps (default 10)\n";
    out += "  --warmup N             untimed steps first (default 3)\n";
    out += "  --json FILE            also write the figures as JSON to FILE\n";
    out += "  --trace FILE           then profile 3 more steps into a Chrome trace (CUDA build)\n";
    out += "  --tp-slice N           time one rank of tensor parallelism N in this one process, its\n"
           "                         collectives left out (a calibration run of hydra plan)\n";
    out += "  --help                 this text\n";
    out += "\nNo checkpoint, metrics file or evaluation is written. docs/PERF.md explains the figures.\n";
    return out;
  }
  if (command == "bench comm") {
    out += "  --config FILE          run config (YAML): parallel.dp/tp/pp, parallel.backend, train.device\n";
    out += "  --set key.path=value   override one key (repeatable)\n";
    out += "  --sizes LIST           buffer sizes in bytes, K/M/G for KiB/MiB/GiB (default 4K to 1G by 4x\n";
    out += "                         on cuda, 4K to 16M on cpu)\n";
    out += "  --repeats N            timed calls of each collective at each size (default 10)\n";
    out += "  --json FILE            also write every row as JSON to FILE\n";
    out += "  --help                 this text\n";
    out += "\nEvery rank runs it (mpirun -np N hydra bench comm ...). docs/INTERFACE.md defines the figures.\n";
    return out;
  }
  if (command == "diagnose") {
    out += "  --config FILE          run config (YAML): the model, train.device and train.dtype\n";
    out += "  --set key.path=value   override one key (repeatable)\n";
    out += "  --out DIR              a new (or empty) directory for report.md, report.json and the plots\n";
    out += "  --sections LIST        speed,memory,gradients (default: all three)\n";
    out += "  --batches LIST         batch sizes of the speed grid (default 1,4,8)\n";
    out += "  --seqs LIST            sequence lengths of the speed grid (default 256,512,1024)\n";
    out += "  --repeats N            timed passes per point, median reported (default 3)\n";
    out += "  --steps N              training steps of the gradients section (default 20; data.path or a\n";
    out += "                         built-in sample)\n";
    out += "  --help                 this text\n";
    out += "\nOne process. The plots need python3 with matplotlib; without it the report says so.\n";
    return out;
  }
  if (command == "generate") {
    out += "  --config FILE          run config (YAML): the checkpoint's model, data.tokenizer, train.device,\n";
    out += "                         train.dtype, train.seq_len (the context kept)\n";
    out += "  --checkpoint DIR|FILE  a committed checkpoint of that model (any layout), or its weights\n";
    out += "                         consolidated into one file (hydra ckpt consolidate)\n";
    out += "  --set key.path=value   override one key (repeatable)\n";
    out += "  --prompt TEXT          the text to continue\n";
    out += "  --prompt-file FILE     ... or read it from FILE (an empty file: start a new document)\n";
    out += "  --max-new N            tokens to generate at most (default 64; end-of-text stops early)\n";
    out += "  --temperature T        0 (greedy) to 100 (default 1)\n";
    out += "  --top-k K              sample among the K most likely tokens only (default 0: all)\n";
    out += "  --top-p P              ... among the most likely tokens whose probabilities reach P (default 1)\n";
    out += "  --seed S               the draws' seed (default 0): the same seed gives the same tokens\n";
    out += "  --batch B              B continuations of the prompt (default 1), seeds S .. S+B-1; printed\n";
    out += "                         after the run, one after another (--json: continuations)\n";
    out += "  --no-cache             run the model over the whole context for every token (no KV cache):\n";
    out += "                         the same tokens, slower; for comparison\n";
    out += "  --json                 print one JSON object at the end instead of streaming text\n";
    out += "  --trace FILE           profile the last 8 rounds into a Chrome trace (CUDA build, train.device\n";
    out += "                         cuda; bench/trace_summary.py reads it)\n";
    out += "  --help                 this text\n";
    out += "\nOne process. The prompt is prefilled once, then each new token runs alone against the layers'\n";
    out += "KV caches; when the context exceeds train.seq_len it restarts from its last seq_len/2 tokens.\n";
    return out;
  }
  if (command == "sweep") {
    out += "  --config FILE          run config (YAML); data.path is read as in hydra train\n";
    out += "  --set key.path=value   override one key (repeatable); every point gets them\n";
    out += "  --series weak|strong   weak: the per-rank batch of the 1-rank run (train.global_batch x dp);\n";
    out += "                         strong: train.global_batch fixed, losses compared with the 1-rank run\n";
    out += "  --ranks LIST           process counts, e.g. 1,2,4 (efficiency needs 1)\n";
    out += "  --layouts LIST         dp (every rank data-parallel), tpK or ppK (K-way tensor or pipeline\n";
    out += "                         parallel, dp = ranks / K), tpKppM (both); default dp\n";
    out += "  --launcher mpirun|slurm  how each point starts its ranks: mpirun here (or inside an allocation),\n";
    out += "                         or slurm: one job per point (sbatch --wait slurm/sweep.sbatch, which runs the\n";
    out += "                         same mpirun over the job's tasks); run it from the repository's root\n";
    out += "  --mpirun PATH          the mpirun to call (default: $HYDRA_MPIRUN, else mpirun on PATH)\n";
    out += "  --mpirun-args \"ARGS\"   extra mpirun arguments before -np, split on spaces (e.g. --oversubscribe)\n";
    out += "  --sbatch-args \"ARGS\"   slurm: extra sbatch arguments, split on spaces (e.g. \"--partition=gpu\n";
    out += "                         --ntasks-per-node=8 --gpus-per-node=8\"); --ntasks is the point's ranks\n";
    out += "  --steps N              timed steps of each point (default 5)\n";
    out += "  --warmup N             untimed steps first (default 2)\n";
    out += "  --out DIR              a new (or empty) directory for sweep.json, the plots and each point's files\n";
    out += "  --help                 this text\n";
    out += "\nOne process: it runs `mpirun -np N hydra bench step` per point (slurm: in a job of N tasks each).\n";
    out += "Exit 0 when every point that\n";
    out += "was not skipped ran, 4 when one failed (sweep.json records it). docs/INTERFACE.md has the JSON.\n";
    return out;
  }
  if (command == "plan") {
    out += "  --config FILE          run config (YAML): the model, train.global_batch, seq_len, dtype\n";
    out += "  --set key.path=value   override one key (repeatable)\n";
    out += "  --cluster FILE         the cluster (YAML: configs/clusters/*.yaml; docs/SCALING.md has the keys)\n";
    out += "  --gpus N               GPUs to plan for (default: the cluster's gpus_per_node)\n";
    out += "  --top N                feasible layouts printed (default 5)\n";
    out += "  --calibration F[,F]    1-GPU `hydra bench step --json` outputs of this model: the achieved FLOP\n";
    out += "                         rate, with two batches also the per-micro-batch overhead\n";
    out += "                         (default: the cluster's peak x 0.40)\n";
    out += "  --comm FILE            a `hydra bench comm --json` output: bandwidth and latency of its links\n";
    out += "  --json FILE            write every layout, feasible or not, as JSON\n";
    out += "  --help                 this text\n";
    out += "\nOne process, no MPI, no device. docs/SCALING.md gives the formulas.\n";
    return out;
  }
  if (command == "ckpt inspect") {
    out += "  --json                 print JSON instead of text\n  --help                 this text\n";
    out += "\nExit code 0 when the checkpoint is complete and every checksum verifies, 3 otherwise.\n";
    return out;
  }
  if (command == "data prepare") {
    out += "  --input PATH...        .txt files, .jsonl files (a \"text\" field per line), directories of them\n";
    out += "  --output DIR           where the shards and manifest.json go (data.path of a run)\n";
    out += "  --tokenizer NAME       gpt2 (default; files from scripts/fetch-tokenizer.sh) or bytes\n";
    out += "  --val-fraction F       share of tokens held out for validation (default 0.005)\n";
    out += "  --help                 this text\n";
    return out;
  }
  out += "  --config FILE          run config (YAML; docs/INTERFACE.md lists the keys)\n";
  out += "  --set key.path=value   override one key (repeatable; applied after the file, in order)\n";
  if (command == "info") out += "  --json                 print JSON instead of text\n";
  if (command == "train") {
    out += "  --resume latest|DIR    continue a run: the newest complete checkpoint under\n";
    out += "                         checkpoint.dir, or the checkpoint DIR (exact: same data, same losses)\n";
    out += "  --init-from DIR|FILE   start from the weights of checkpoint DIR (or of a consolidated file)\n";
    out += "                         with a fresh optimizer\n";
    out += "                         and data position (fine-tuning)\n";
    out += "  --overwrite            start a new run although checkpoint.dir or log.jsonl hold an earlier\n";
    out += "                         run's: they are moved aside (replaced_<time>), never deleted\n";
  }
  if (command == "eval") {
    out += "  --checkpoint DIR|FILE  the checkpoint (or consolidated weights file) to evaluate\n";
    out += "  --json                 print one JSON object (full precision) instead of text\n";
  }
  out += "  --help                 this text\n";
  return out;
}

CliArgs parse_cli(int argc, const char* const* argv) {
  CliArgs args;
  int i = 1;
  if (i < argc && argv[i][0] != '-') args.command = argv[i++];
  if (has_action(args.command)) {
    if (i >= argc || argv[i][0] == '-') {
      std::string actions;
      for (const auto& [name, spec] : commands()) {
        if (name.rfind(args.command + " ", 0) == 0) actions += (actions.empty() ? "" : "|") + name.substr(args.command.size() + 1);
      }
      HYDRA_FAIL(ConfigError, "hydra " << args.command << " needs an action: " << actions << " (see hydra --help)");
    }
    args.command += std::string(" ") + argv[i++];
  }
  check_command(args.command);
  std::vector<std::string> given;  // options seen, for the given-twice check
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1), arg = arg.substr(0, eq), has_value = true;  // --config=FILE
    }
    if (arg == "--help" || arg == "-h") { args.help = true; continue; }
    if (arg[0] != '-' && takes_target(args.command) && args.target.empty()) {
      args.target = arg;
      continue;
    }
    if (arg == "--version" && args.command.empty()) { args.version = true; continue; }
    const std::string where = args.command.empty() ? "hydra" : "hydra " + args.command;
    if (args.command.empty()) HYDRA_FAIL(ConfigError, "expected a command before '" << arg << "' (see hydra --help)");
    if (arg[0] != '-') {
      HYDRA_FAIL(ConfigError, "unexpected argument '" << arg << "' for " << where << " (options start with --; see "
                                                      << where << " --help)");
    }
    const auto& allowed = commands().at(args.command).options;
    if (std::find(allowed.begin(), allowed.end(), arg) == allowed.end()) {
      HYDRA_FAIL(ConfigError, "unknown option '" << arg << "' for " << where << did_you_mean(arg, allowed) << " (see "
                                                 << where << " --help)");
    }
    if (!repeatable(arg) && std::find(given.begin(), given.end(), arg) != given.end()) {
      HYDRA_FAIL(ConfigError, arg << " given twice for " << where << "; give it once");
    }
    given.push_back(arg);
    if (takes_value(args.command, arg) && !has_value) {
      if (i + 1 >= argc) HYDRA_FAIL(ConfigError, arg << " needs a value (see " << where << " --help)");
      value = argv[++i];
    } else if (!takes_value(args.command, arg) && has_value) {
      HYDRA_FAIL(ConfigError, arg << " takes no value, got '" << value << "' (see " << where << " --help)");
    }
    if (takes_value(args.command, arg)) check_value(arg, value, where);
    if (arg == "--config") args.config = value;
    if (arg == "--set") args.sets.push_back(value);
    if (arg == "--json") args.json = true, args.json_path = value;
    if (arg == "--resume") args.resume = value;
    if (arg == "--init-from") args.init_from = value;
    if (arg == "--overwrite") args.overwrite = true;
    if (arg == "--no-cache") args.no_cache = true;
    if (arg == "--checkpoint") args.checkpoint = value;
    if (arg == "--output") args.output = value;
    if (arg == "--tokenizer") args.tokenizer = value;
    if (arg == "--val-fraction") args.val_fraction = value;
    if (arg == "--steps") args.steps = value;
    if (arg == "--warmup") args.warmup = value;
    if (arg == "--trace") args.trace = value;
    if (arg == "--tp-slice") args.tp_slice = value;
    if (arg == "--out") args.out = value;
    if (arg == "--sections") args.sections = value;
    if (arg == "--batches") args.batches = value;
    if (arg == "--seqs") args.seqs = value;
    if (arg == "--repeats") args.repeats = value;
    if (arg == "--sizes") args.sizes = value;
    if (arg == "--series") args.series = value;
    if (arg == "--ranks") args.ranks = value;
    if (arg == "--layouts") args.layouts = value;
    if (arg == "--launcher") args.launcher = value;
    if (arg == "--mpirun") args.mpirun = value;
    if (arg == "--mpirun-args") args.mpirun_args = value;
    if (arg == "--sbatch-args") args.sbatch_args = value;
    if (arg == "--prompt") args.prompt = value;
    if (arg == "--prompt-file") args.prompt_file = value;
    if (arg == "--max-new") args.max_new = value;
    if (arg == "--temperature") args.temperature = value;
    if (arg == "--top-k") args.top_k = value;
    if (arg == "--top-p") args.top_p = value;
    if (arg == "--seed") args.seed = value;
    if (arg == "--batch") args.batch = value;
    if (arg == "--cluster") args.cluster = value;
    if (arg == "--gpus") args.gpus = value;
    if (arg == "--top") args.top = value;
    if (arg == "--calibration") args.calibration = value;
    if (arg == "--comm") args.comm = value;
    if (arg == "--input") {
      args.inputs.push_back(value);  // --input takes every following word up to the next option
      while (i + 1 < argc && argv[i + 1][0] != '-') args.inputs.push_back(argv[++i]);
    }
  }
  if (args.version && !args.help) return args;  // needs nothing else
  if (!args.help && args.command.empty()) {
    HYDRA_FAIL(ConfigError, "no command given (see hydra --help)");
  }
  if (takes_target(args.command) && !args.help) {
    if (args.target.empty()) HYDRA_FAIL(ConfigError, "hydra " << args.command << " needs a DIR");
    if (args.command == "ckpt consolidate" && args.output.empty()) {
      HYDRA_FAIL(ConfigError, "hydra ckpt consolidate needs --output FILE");
    }
    return args;
  }
  if (args.command == "bench attention") return args;  // no config: fixed shapes
  if (args.command == "data prepare" && !args.help) {
    if (args.inputs.empty()) HYDRA_FAIL(ConfigError, "hydra data prepare needs --input PATH...");
    if (args.output.empty()) HYDRA_FAIL(ConfigError, "hydra data prepare needs --output DIR");
    return args;
  }
  if (!args.help && args.config.empty()) {
    HYDRA_FAIL(ConfigError, "hydra " << args.command << " needs --config FILE");
  }
  if (!args.help && (args.command == "diagnose" || args.command == "sweep") && args.out.empty()) {
    HYDRA_FAIL(ConfigError, "hydra " << args.command << " needs --out DIR");
  }
  if (!args.help && args.command == "sweep" && (args.series.empty() || args.ranks.empty())) {
    HYDRA_FAIL(ConfigError, "hydra sweep needs --series weak|strong and --ranks LIST (see hydra sweep --help)");
  }
  if (!args.help && args.command == "plan" && args.cluster.empty()) {
    HYDRA_FAIL(ConfigError, "hydra plan needs --cluster FILE (e.g. configs/clusters/h100-8x-ib400.yaml)");
  }
  if (!args.help && (args.command == "eval" || args.command == "generate") && args.checkpoint.empty()) {
    HYDRA_FAIL(ConfigError, "hydra " << args.command << " needs --checkpoint DIR|FILE");
  }
  if (!args.help && args.command == "generate" && args.prompt.empty() == args.prompt_file.empty()) {
    HYDRA_FAIL(ConfigError, "hydra generate needs one of --prompt TEXT and --prompt-file FILE");
  }
  if (args.overwrite && !args.resume.empty()) {
    HYDRA_FAIL(ConfigError, "--resume and --overwrite exclude each other (resume continues the run in "
                            "checkpoint.dir; overwrite sets it aside to start a new one)");
  }
  if (!args.resume.empty() && !args.init_from.empty()) {
    HYDRA_FAIL(ConfigError, "--resume and --init-from exclude each other (resume continues a run; "
                            "init-from starts a new one from its weights)");
  }
  return args;
}

}  // namespace hydra::launcher
