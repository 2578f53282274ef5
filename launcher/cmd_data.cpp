// `hydra data prepare`: corpus files in, token shards and a manifest out (data/prepare.h).
// Under mpirun rank 0 does the work (it uses every core of its node) and the others wait for
// its exit code, so every rank exits the same way.
#include <mpi.h>

#include <cstdlib>

#include "common/errors.h"
#include "data/prepare.h"
#include "launcher/commands.h"

namespace hydra::launcher {
namespace {

double parse_val_fraction(const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(v >= 0.0 && v < 1.0)) {
    HYDRA_FAIL(common::ConfigError, "--val-fraction: expected a number in [0, 1), got '" << text << "'");
  }
  return v;
}

int prepare_on_this_rank(const CliArgs& args) {
  data::PrepareOptions options;
  options.inputs = args.inputs;
  options.output_dir = args.output;
  if (!args.tokenizer.empty()) options.tokenizer = args.tokenizer;
  if (!args.val_fraction.empty()) options.val_fraction = parse_val_fraction(args.val_fraction);
  data::prepare_corpus(options);  // prints its own summary line
  return 0;
}

}  // namespace

int run_data_prepare(const CliArgs& args, const parallel::LaunchInfo& launch) {
  int code = 0;
  std::string message;
  if (launch.rank == 0) {
    try {
      code = prepare_on_this_rank(args);
    } catch (const common::HydraError& e) {
      code = static_cast<int>(e.code());
      message = e.what();
    }
  }
  if (launch.world > 1) MPI_Bcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (launch.rank == 0 && code != 0) std::fprintf(stderr, "hydra: error: %s\n", message.c_str());
  return code;
}

}  // namespace hydra::launcher
