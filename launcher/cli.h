// The command line of docs/INTERFACE.md: `hydra SUBCOMMAND [options]`. Parsing needs no
// MPI, so `--help` and usage errors work anywhere. Usage errors throw ConfigError (exit 2).
#pragma once

#include <string>
#include <vector>

namespace hydra::launcher {

struct CliArgs {
  std::string command;               // "info", "data prepare", ...; empty with --help/--version alone
  bool help = false;
  bool version = false;
  std::string config;                // --config FILE
  std::vector<std::string> sets;     // --set key.path=value, in order
  bool json = false;                 // --json (info, eval, ckpt inspect)
  std::string json_path;             // --json FILE (bench)
  std::string resume;                // --resume latest|DIR (train)
  std::string init_from;             // --init-from DIR (train)
  bool overwrite = false;            // --overwrite (train): set the previous run's outputs aside
  std::string checkpoint;            // --checkpoint DIR (eval)
  std::vector<std::string> inputs;   // --input PATH... (data prepare)
  std::string output;                // --output DIR (data prepare)
  std::string tokenizer;             // --tokenizer gpt2|bytes (data prepare)
  std::string val_fraction;          // --val-fraction F (data prepare), validated by the command
  std::string target;                // the DIR of `ckpt inspect DIR`
  std::string steps;                 // --steps N (bench step), validated by the command
  std::string warmup;                // --warmup N (bench step)
  std::string trace;                 // --trace FILE (bench step)
  std::string tp_slice;              // --tp-slice N (bench step), validated by the command
  std::string out;                   // --out DIR (diagnose)
  std::string sections;              // --sections a,b (diagnose), validated by the command
  std::string batches;               // --batches 1,4,8 (diagnose)
  std::string seqs;                  // --seqs 256,512 (diagnose)
  std::string repeats;               // --repeats N (diagnose, bench comm)
  std::string sizes;                 // --sizes 4K,1M (bench comm), validated by the command
  std::string series;                // --series weak|strong (sweep), validated by the command
  std::string ranks;                 // --ranks 1,2,4 (sweep)
  std::string layouts;               // --layouts dp,tp2,pp2 (sweep)
  std::string launcher;              // --launcher mpirun|slurm (sweep)
  std::string mpirun;                // --mpirun PATH (sweep)
  std::string mpirun_args;           // --mpirun-args "ARGS" (sweep): split on spaces
  std::string sbatch_args;           // --sbatch-args "ARGS" (sweep --launcher slurm): split on spaces
  std::string prompt;                // --prompt TEXT (generate)
  std::string prompt_file;           // --prompt-file FILE (generate)
  std::string max_new;               // --max-new N (generate), validated by the command
  std::string temperature;           // --temperature T (generate)
  std::string top_k;                 // --top-k K (generate)
  std::string top_p;                 // --top-p P (generate)
  std::string seed;                  // --seed S (generate)
  bool no_cache = false;             // --no-cache (generate): the whole context for every token
  std::string batch;                 // --batch B (generate): continuations of the prompt
  std::string cluster;               // --cluster FILE (plan)
  std::string gpus;                  // --gpus N (plan), validated by the command
  std::string top;                   // --top N (plan)
  std::string calibration;           // --calibration FILE (plan): a bench step JSON
  std::string comm;                  // --comm FILE (plan): a bench comm JSON
};

CliArgs parse_cli(int argc, const char* const* argv);

// The text of `hydra --help` (command empty) or `hydra COMMAND --help`.
std::string help_text(const std::string& command);

}  // namespace hydra::launcher
