// `hydra generate`: continue a prompt with a checkpoint's model, one token at a time. One
// process; the model is built whole from the config and its weights read from a checkpoint of
// any layout (checkpoint/ reshards them). Every new token runs the model over the whole context
// (the last train.seq_len tokens), with MoD's causal routing as at evaluation: correct and
// simple, quadratic in the length. KV caches per layer type are issue 19's next step.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "common/errors.h"
#include "common/json.h"
#include "data/tokenizer.h"
#include "launcher/commands.h"
#include "launcher/option_values.h"
#include "model/hydra_model.h"
#include "model/sampling.h"
#include "parallel/flat_layout.h"

namespace hydra::launcher {
namespace {

using common::ConfigError;

struct GenerateOptions {
  std::string prompt;
  int max_new = 64;
  uint64_t seed = 0;
  model::SamplingOptions sampling;
};

GenerateOptions parse_generate_options(const CliArgs& args) {
  GenerateOptions o;
  if (!args.prompt_file.empty()) {
    std::ifstream in(args.prompt_file, std::ios::binary);
    if (!in) HYDRA_FAIL(common::InputError, "--prompt-file " << args.prompt_file << ": cannot read it");
    o.prompt.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } else {
    o.prompt = args.prompt;
  }
  o.max_new = count_option("--max-new", args.max_new, o.max_new, 1);
  o.sampling.temperature = real_option("--temperature", args.temperature, 1.0, 0.0, 100.0);
  o.sampling.top_k = count_option("--top-k", args.top_k, 0, 0);
  o.sampling.top_p = real_option("--top-p", args.top_p, 1.0, 1e-9, 1.0);
  o.seed = static_cast<uint64_t>(count_option("--seed", args.seed, 0, 0));
  return o;
}

// The whole model of `config` on its device and dtype, with the weights of checkpoint `dir`.
model::HydraModel load_model(const Config& config, const std::string& dir) {
  torch::manual_seed(0);  // the initial values are overwritten; a fixed seed keeps builds alike
  model::HydraModel m = std::make_shared<model::HydraModelImpl>(config.model);
  parallel::NamedParams params;
  for (const auto& item : m->named_parameters()) params.emplace_back(item.key(), item.value());
  {
    torch::NoGradGuard no_grad;
    checkpoint::load_checkpoint(dir, params, parallel::make_flat_layout(params), nullptr);
  }
  const auto dtype = config.train.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;
  m->to(torch::Device(config.train.device == "cuda" ? torch::kCUDA : torch::kCPU), dtype);
  m->eval();
  return m;
}

// The next token's logits [vocab_size] after `context`.
torch::Tensor next_logits(model::HydraModel& m, const std::vector<int32_t>& context, int64_t vocab_size,
                          const torch::Device& device) {
  torch::NoGradGuard no_grad;
  const torch::Tensor input =
      torch::tensor(std::vector<int64_t>(context.begin(), context.end()), torch::kLong).unsqueeze(0).to(device);
  model::ForwardOptions fwd;
  fwd.causal_routing = true;  // MoD decides per token, as at inference (docs/MODEL.md)
  const model::ModelOutput out = m->forward(input, {}, fwd);
  return out.logits.select(0, 0).select(0, -1).narrow(0, 0, vocab_size);
}

}  // namespace

int run_generate(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch) {
  if (launch.world > 1) {
    HYDRA_FAIL(ConfigError, "hydra generate runs in one process (launched on " << launch.world << " ranks)");
  }
  const GenerateOptions o = parse_generate_options(args);
  const std::unique_ptr<data::Tokenizer> tokenizer = data::load_tokenizer(config.data.tokenizer);
  if (tokenizer->vocab_size() > config.model.vocab_size) {
    HYDRA_FAIL(ConfigError, "data.tokenizer " << config.data.tokenizer << " has " << tokenizer->vocab_size()
                                              << " ids, model.vocab_size " << config.model.vocab_size);
  }
  const checkpoint::LoadedCheckpoint index = checkpoint::read_index(args.checkpoint);
  model::HydraModel m = load_model(config, args.checkpoint);
  const torch::Device device(config.train.device == "cuda" ? torch::kCUDA : torch::kCPU);

  std::vector<int32_t> context = tokenizer->encode(o.prompt);
  const size_t prompt_tokens = context.size();
  if (context.empty()) context.push_back(tokenizer->eot_id());  // a new document
  const size_t window = static_cast<size_t>(config.train.seq_len);
  std::mt19937_64 rng(o.seed);
  std::vector<int32_t> generated;
  std::string stopped = "max_new";
  const auto start = std::chrono::steady_clock::now();
  while (static_cast<int>(generated.size()) < o.max_new) {
    const std::vector<int32_t> recent(context.size() > window ? context.end() - window : context.begin(), context.end());
    const torch::Tensor logits = next_logits(m, recent, tokenizer->vocab_size(), device);
    const auto id = static_cast<int32_t>(model::sample_next_token(logits, o.sampling, rng));
    if (id == tokenizer->eot_id()) {
      stopped = "end_of_text";
      break;
    }
    generated.push_back(id);
    context.push_back(id);
    if (!args.json) {
      const std::string piece = tokenizer->decode(&id, 1);  // bytes: a character may span tokens
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (args.json) {
    common::Json out = common::Json::object();
    out["checkpoint"] = args.checkpoint;
    out["step"] = index.progress.step;
    out["prompt"] = o.prompt;
    out["prompt_tokens"] = static_cast<int64_t>(prompt_tokens);
    common::Json ids = common::Json::array();
    for (const int32_t id : generated) ids.push(static_cast<int64_t>(id));
    out["tokens"] = ids;
    out["text"] = tokenizer->decode(generated);
    out["stopped"] = stopped;
    out["seconds"] = seconds;
    out["tokens_per_s"] = seconds > 0 ? generated.size() / seconds : 0.0;
    common::Json sampling = common::Json::object();
    sampling["temperature"] = o.sampling.temperature;
    sampling["top_k"] = o.sampling.top_k;
    sampling["top_p"] = o.sampling.top_p;
    sampling["seed"] = static_cast<int64_t>(o.seed);
    out["sampling"] = sampling;
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("\n");
    std::fflush(stdout);
    std::fprintf(stderr, "generate: %zu tokens in %.2f s (%.1f tokens/s), stopped at %s\n", generated.size(), seconds,
                 seconds > 0 ? generated.size() / seconds : 0.0, stopped.c_str());
  }
  return 0;
}

}  // namespace hydra::launcher
