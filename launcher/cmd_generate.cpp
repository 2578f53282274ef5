// `hydra generate`: continue a prompt with a checkpoint's model, one token at a time. One
// process, or tensor-parallel ranks under mpirun (parallel.tp = the ranks): the model is built
// from the config (whole, or this rank's tp slices) and its weights read from a checkpoint of
// any layout (checkpoint/ reshards them). By default each new token runs through the model
// alone against the layers' KV caches (model/decode.h; under tp each rank holds its heads'
// caches); --no-cache runs the model over the whole context for every token instead (the
// reference the tests compare with; one process only). Both see the same context
// (context_start below), with MoD's and MoR's causal routing as at evaluation.
// --batch B continues B copies of the prompt's state, each with its own seed, their cached
// steps batched.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include "checkpoint/checkpoint.h"
#include "checkpoint/weights_file.h"
#include "common/errors.h"
#include "common/json.h"
#include "data/tokenizer.h"
#include "launcher/commands.h"
#include "launcher/config_load.h"
#include "launcher/option_values.h"
#include "model/decode.h"
#include "model/decode_batch.h"
#include "model/hydra_model.h"
#include "model/model_info.h"
#include "model/sampling.h"
#include "model/sharding.h"
#include "parallel/flat_layout.h"
#include "parallel/parallel_context.h"
#include "parallel/tensor_parallel.h"
#include "train/decode_graphs.h"
#include "train/run_checkpoints.h"
#ifdef HYDRA_CUDA
#include "bench/kineto_trace.h"
#endif

namespace hydra::launcher {
namespace {

using common::ConfigError;

struct GenerateOptions {
  std::string prompt;
  int max_new = 64;
  uint64_t seed = 0;
  bool cache = true;  // --no-cache: the whole context through the model for every token
  int batch = 1;      // --batch: continuations of the prompt, seeds seed .. seed + batch - 1
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
  o.cache = !args.no_cache;
  o.batch = count_option("--batch", args.batch, 1, 1);
  return o;
}

// The model of `config` on its device and dtype (whole, or this rank's tensor-parallel slices
// with `options` from the tp group), with the weights of `source` (a checkpoint directory or a
// consolidated file), its same-input projections packed; `loaded` receives what was read.
model::HydraModel load_model(const Config& config, const std::string& source, const model::ModelOptions& options,
                             checkpoint::LoadedCheckpoint& loaded) {
  torch::manual_seed(0);  // the initial values are overwritten; a fixed seed keeps builds alike
  model::HydraModel m = std::make_shared<model::HydraModelImpl>(config.model, options);
  parallel::NamedParams params;
  // Where each parameter sits in the whole one: in particular the embedding's and head's padded
  // vocabulary rows, which checkpoints do not store (GPT-2's 50,257 rows padded to 50,304), and
  // under tp this rank's slice.
  std::vector<model::ShardInfo> placements;
  for (const auto& item : m->named_parameters()) {
    params.emplace_back(item.key(), item.value());
    placements.push_back(model::placement_of(m->placements, item.key()).shard);
  }
  {
    torch::NoGradGuard no_grad;
    loaded = train::load_weights_explained(source, params, placements, config_to_json(config).dump());
  }
  const auto dtype = config.train.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;
  m->to(torch::Device(config.train.device == "cuda" ? torch::kCUDA : torch::kCPU), dtype);
  m->eval();
  model::pack_same_input_weights(*m);  // after the last `to`: one product per group when decoding
  return m;
}

// Where the context starts, given the tokens so far (`length`), where it started before and
// train.seq_len (`window`): the last `window` tokens of the prompt at first; when a new token
// makes it longer than `window`, it restarts from its last window / 2 tokens (the cached path
// prefills them again: once every window / 2 tokens, not at every step). Both paths use it, so
// they see the same context at every step.
size_t context_start(size_t length, size_t start, size_t window) {
  if (length - start <= window) return start;
  return length - std::max<size_t>(1, window / 2);
}

torch::Tensor token_tensor(std::vector<int32_t>::const_iterator first, std::vector<int32_t>::const_iterator last,
                           const torch::Device& device) {
  return torch::tensor(std::vector<int64_t>(first, last), torch::kLong).to(device);
}

// The next token's logits [vocab_size] after `context`, the whole context through the model.
torch::Tensor full_context_logits(model::HydraModel& m, const torch::Tensor& context, int64_t vocab_size) {
  torch::NoGradGuard no_grad;
  model::ForwardOptions fwd;
  fwd.causal_routing = true;  // MoD and MoR decide per token, as at inference (docs/MODEL.md)
  const model::ModelOutput out = m->forward(context.unsqueeze(0), {}, fwd);
  return out.logits.select(0, 0).select(0, -1).narrow(0, 0, vocab_size);
}

double median_ms(std::vector<double> seconds) {
  if (seconds.empty()) return 0.0;
  const auto mid = seconds.begin() + static_cast<std::ptrdiff_t>(seconds.size() / 2);
  std::nth_element(seconds.begin(), mid, seconds.end());
  return *mid * 1e3;
}

// Where a run's wall time went (`timing` in the JSON): the host's clock around each phase. A
// device's work shows where the host waits for it: in the copy of the step's logits.
struct GenerateTiming {
  double prompt_s = 0;       // the prompt's logits: its prefill (or forward)
  double step_submit_s = 0;  // the batched steps' host work: inputs, graph replay or launches
  double step_wait_s = 0;    // waiting for each step to finish on the device
  double anew_s = 0;         // rows restarted (context windows) and --no-cache forwards
  double sampling_s = 0;     // drawing the next tokens (where the logits are) and copying the ids to the host
  double other_s = 0;        // the rest: bookkeeping, streaming the text, tp agreement
  int steps = 0;             // batched steps
  // Each round's wall time after the prompt's (its step, draws and bookkeeping). Their median is
  // the steady state, as a baseline times its steps after warm-up: the first step of each span
  // (eager) and the second (captured) are a few outliers among them.
  std::vector<double> round_s;

  common::Json json() const {
    common::Json j = common::Json::object();
    j["prompt_s"] = prompt_s;
    j["step_submit_s"] = step_submit_s;
    j["step_wait_s"] = step_wait_s;
    j["anew_s"] = anew_s;
    j["sampling_s"] = sampling_s;
    j["other_s"] = other_s;
    j["steps"] = steps;
    j["round_median_ms"] = median_ms(round_s);
    return j;
  }
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The device's work so far finished, so that `timing` puts it in the phase that queued it.
void wait_for(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

// The next-token logits of every continuation as it grows, by either path. With the cache the
// continuations are the rows of one model::DecodeBatch: a round's cached steps are one batched
// step, a first call and a restart load the row with a prefill of its context.
class NextLogits {
 public:
  // graphs: capture the cached steps in CUDA graphs (train/decode_graphs.h).
  NextLogits(model::HydraModel m, bool cache, size_t window, int64_t vocab_size, torch::Device device, int rows,
             bool graphs)
      : m_(std::move(m)), cache_(cache), window_(window), vocab_size_(vocab_size), device_(device),
        rows_(static_cast<size_t>(rows)), graphs_(graphs && cache) {
    if (cache_) batch_.emplace(*m_, rows, static_cast<int64_t>(window_));
  }

  // The logits after the prompt, for every row: the prompt runs once and each row continues a
  // copy of its cache (a fork). Logits stay on the model's device (sampled there).
  torch::Tensor after_prompt(const std::vector<int32_t>& prompt) {
    for (size_t i = 0; i < rows_.size(); ++i) advance(i, prompt);
    const torch::Tensor context = token_tensor(prompt.begin() + rows_[0].start, prompt.end(), device_);
    if (!cache_) return full_context_logits(m_, context, vocab_size_);
    const model::Decoded d = model::prefill(*m_, context, static_cast<int64_t>(window_));
    for (size_t i = 0; i < rows_.size(); ++i) {
      batch_->load(static_cast<int64_t>(i), d.state);
      rows_[i].prefills = 1;
    }
    return d.logits.narrow(0, 0, vocab_size_);
  }

  // The logits after each listed row's tokens (one more than at its previous call), in order;
  // the rows not listed are left as they are. Rows that continue their cache take one batched
  // step together; a restart and --no-cache run alone.
  std::vector<torch::Tensor> after(const std::vector<size_t>& rows, const std::vector<const std::vector<int32_t>*>& tokens,
                                   GenerateTiming& timing) {
    std::vector<torch::Tensor> logits(rows.size());
    std::vector<int64_t> step_tokens(rows_.size(), 0);
    std::vector<bool> stepping(rows_.size(), false);
    bool any = false;
    for (size_t j = 0; j < rows.size(); ++j) {
      if (advance(rows[j], *tokens[j])) {
        stepping[rows[j]] = any = true;
        step_tokens[rows[j]] = tokens[j]->back();
      } else {
        const auto t0 = std::chrono::steady_clock::now();
        logits[j] = anew(rows[j], *tokens[j]);
        wait_for(device_);
        timing.anew_s += seconds_since(t0);
      }
    }
    if (any) {
      const auto t0 = std::chrono::steady_clock::now();
      const torch::Tensor step = graphs_.step(*batch_, step_tokens, stepping).narrow(1, 0, vocab_size_);
      const auto t1 = std::chrono::steady_clock::now();
      wait_for(device_);
      timing.step_submit_s += std::chrono::duration<double>(t1 - t0).count();
      timing.step_wait_s += seconds_since(t1);
      ++timing.steps;
      for (size_t j = 0; j < rows.size(); ++j) {
        if (stepping[rows[j]]) logits[j] = step[static_cast<int64_t>(rows[j])];
      }
    }
    return logits;
  }

  const std::optional<model::DecodeBatch>& batch() const { return batch_; }
  int graphs_captured() const { return graphs_.captured(); }
  int prefills(size_t row) const { return rows_.at(row).prefills; }

 private:
  // Where one row's context starts and what it has seen.
  struct Row {
    bool first_call = true;
    size_t seen = 0;   // tokens at the previous call
    size_t start = 0;  // where the context starts
    int prefills = 0;
  };

  // Moves row i's context on to `tokens` (context_start); true when its cache continues: the
  // last token is one decode step.
  bool advance(size_t i, const std::vector<int32_t>& tokens) {
    Row& row = rows_.at(i);
    HYDRA_CHECK(row.first_call || tokens.size() == row.seen + 1,
                "NextLogits: " << tokens.size() << " tokens after " << row.seen);
    row.seen = tokens.size();
    const size_t start = row.first_call ? (tokens.size() > window_ ? tokens.size() - window_ : 0)
                                        : context_start(tokens.size(), row.start, window_);
    const bool restart = row.first_call || start != row.start;
    row.first_call = false;
    row.start = start;
    return cache_ && !restart;
  }

  // Row i's logits after its context without a cached step: the context's prefill loaded into
  // the row, or (--no-cache) a forward over all of it.
  torch::Tensor anew(size_t i, const std::vector<int32_t>& tokens) {
    const torch::Tensor context = token_tensor(tokens.begin() + rows_[i].start, tokens.end(), device_);
    if (!cache_) return full_context_logits(m_, context, vocab_size_);
    const model::Decoded d = model::prefill(*m_, context, static_cast<int64_t>(window_));
    batch_->load(static_cast<int64_t>(i), d.state);
    ++rows_[i].prefills;
    return d.logits.narrow(0, 0, vocab_size_);
  }

  model::HydraModel m_;
  bool cache_;
  size_t window_;
  int64_t vocab_size_;
  torch::Device device_;
  std::vector<Row> rows_;
  std::optional<model::DecodeBatch> batch_;  // with the cache
  train::DecodeGraphs graphs_;
};

// What the KV cache costs (docs/MODEL.md "Decoding with caches"): per token, for one layer of
// each type of the pattern and for the whole model (bf16, every effective layer: the worst
// case), and what the run's caches held at the end over all continuations (their dtype; MoD and
// MoR skip entries) and allocated; the first continuation's context and prefills.
common::Json kv_cache_report(const Config& config, const NextLogits& next) {
  common::Json kv = common::Json::object();
  common::Json per_layer = common::Json::object();
  for (const std::string& type : config.model.pattern) {
    per_layer[type] = model::layer_kv_bytes_per_token(config.model, type);
  }
  kv["bf16_bytes_per_token_per_layer"] = per_layer;
  kv["bf16_bytes_per_token"] = model::compute_model_stats(config.model, config.train.seq_len).kv_cache_bytes_per_token;
  if (next.batch()) {
    kv["held_bytes"] = next.batch()->cache_bytes();
    kv["held_entries"] = next.batch()->cache_entries();
    kv["allocated_bytes"] = next.batch()->allocated_bytes();
    kv["context_tokens"] = next.batch()->length(0);
  }
  kv["prefills"] = next.prefills(0);
  return kv;
}

// One continuation of the prompt: its tokens, its draws (--seed + its index), its logits' source.
struct Continuation {
  std::vector<int32_t> context;    // the prompt and the tokens chosen so far
  std::vector<int32_t> generated;  // the tokens chosen so far
  std::string stopped;             // max_new, or end_of_text once it drew that
  uint64_t seed;
  std::mt19937_64 rng;
};

// Under mpirun, the ranks of one tensor-parallel group: each builds its slices of the model and
// holds its heads' caches, all run the same steps (the forward's collectives) and get the whole
// logits row (model/decode.h). One process: no group.
struct TensorParallelGroup {
  std::unique_ptr<parallel::ParallelContext> ctx;  // null: one process
  model::ModelOptions options;                     // this rank's slices

  bool speaks() const { return !ctx || ctx->grid.rank == 0; }  // prints: one process or rank 0
  int size() const { return ctx ? ctx->tp->size() : 1; }

  // Rank 0's ids for every rank. Every rank draws the same ids from the same logits with the
  // same seeds; taking rank 0's makes that a guarantee, so that no rank can stop at an
  // end-of-text another did not draw and leave the others waiting in a collective.
  void agree(std::vector<int32_t>& ids, const torch::Device& device) const {
    if (!ctx || ids.empty()) return;
    // As float64 (the communicators move floating-point tensors; ids below 2^53 are exact).
    torch::Tensor t = torch::tensor(std::vector<double>(ids.begin(), ids.end()), torch::kDouble).to(device);
    ctx->tp->broadcast(t, 0);
    const torch::Tensor host = t.cpu().contiguous();
    const double* p = host.data_ptr<double>();
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(p[i]);
  }
};

// One process, or (world > 1) the tp group of all ranks: parallel.tp must be the world, dp and pp
// 1 (decoding needs every layer on each process; dp would only repeat the same generation).
TensorParallelGroup make_group(const Config& config, const parallel::LaunchInfo& launch, bool cache) {
  TensorParallelGroup g;
  if (launch.world == 1) return g;
  const auto& p = config.parallel;
  if (p.tp != launch.world || p.pp != 1 || p.dp > 1) {  // (dp 0: auto, which is 1 here)
    HYDRA_FAIL(ConfigError, "hydra generate on " << launch.world << " ranks runs tensor-parallel: it needs "
                                                 << "parallel.tp " << launch.world << " (the ranks), dp 1 and pp 1; "
                                                 << "got dp " << (p.dp == 0 ? std::string("auto") : std::to_string(p.dp))
                                                 << ", tp " << p.tp << ", pp " << p.pp);
  }
  if (!cache) HYDRA_FAIL(ConfigError, "--no-cache runs in one process (the reference path); drop it under mpirun");
  g.ctx = build_context(config, launch);
  g.options.tp = g.ctx->tp->size();
  g.options.projection_factory = parallel::make_tp_projection_factory(*g.ctx->tp);
  g.options.tp_hooks = parallel::make_tp_hooks(*g.ctx->tp);
  return g;
}

}  // namespace

// The next token of each continuation, drawing with its own generator. On a GPU the rows are
// drawn where the logits are (model::sample_rows: one copy of the ids to the host, where copying
// 64 rows of logits and drawing from them on the host took longer than the decode step); on the
// CPU each row by itself, the rows in parallel.
std::vector<int32_t> next_tokens(const std::vector<torch::Tensor>& logits, const model::SamplingOptions& sampling,
                                 const std::vector<Continuation*>& going) {
  std::vector<int32_t> ids(going.size());
  if (logits.front().is_cuda()) {
    std::vector<double> uniforms;
    if (sampling.temperature > 0) {
      for (Continuation* row : going) uniforms.push_back(std::uniform_real_distribution<double>(0.0, 1.0)(row->rng));
    }
    const std::vector<int64_t> drawn = model::sample_rows(torch::stack(logits), sampling, uniforms);
    std::copy(drawn.begin(), drawn.end(), ids.begin());
    return ids;
  }
  at::parallel_for(0, static_cast<int64_t>(going.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      ids[i] = static_cast<int32_t>(model::sample_next_token(logits[i], sampling, going[i]->rng));
    }
  });
  return ids;
}

#ifdef HYDRA_CUDA
// --trace FILE profiles the run's last rounds (the spans' first steps and captures are behind
// them by then): at most this many, never the first.
constexpr int kTracedRounds = 8;
#endif

// Refuses --trace where it cannot run, before the model loads.
void check_trace_option(const Config& config, const CliArgs& args) {
  if (args.trace.empty()) return;
#ifndef HYDRA_CUDA
  HYDRA_FAIL(ConfigError, "--trace needs the CUDA build (LibTorch's Kineto profiler); this is the CPU build");
#endif
  if (config.train.device != "cuda") {
    HYDRA_FAIL(ConfigError, "--trace profiles the GPU's decode steps: it needs train.device: cuda (it is "
                                << config.train.device << ")");
  }
}

int run_generate(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch) {
  const GenerateOptions o = parse_generate_options(args);
  check_trace_option(config, args);
#ifdef HYDRA_CUDA
  const int trace_from = args.trace.empty() ? -1 : std::max(1, o.max_new - kTracedRounds);
  bool tracing = false;
#endif
  const TensorParallelGroup group = make_group(config, launch, o.cache);
  const std::unique_ptr<data::Tokenizer> tokenizer = data::load_tokenizer(config.data.tokenizer);
  if (tokenizer->vocab_size() > config.model.vocab_size) {
    HYDRA_FAIL(ConfigError, "data.tokenizer " << config.data.tokenizer << " has " << tokenizer->vocab_size()
                                              << " ids, model.vocab_size " << config.model.vocab_size);
  }
  checkpoint::LoadedCheckpoint index;
  model::HydraModel m = load_model(config, args.checkpoint, group.options, index);
  const torch::Device device(config.train.device == "cuda" ? torch::kCUDA : torch::kCPU);

  std::vector<int32_t> prompt = tokenizer->encode(o.prompt);
  const size_t prompt_tokens = prompt.size();
  if (prompt.empty()) prompt.push_back(tokenizer->eot_id());  // a new document
  const auto start = std::chrono::steady_clock::now();
  // CUDA graphs for the cached steps on a GPU in one process (under tp the collectives are not
  // captured), unless train.cuda_graphs is off.
  const bool graphs = device.is_cuda() && group.size() == 1 && config.train.cuda_graphs != "off";
  NextLogits next(m, o.cache, static_cast<size_t>(config.train.seq_len), tokenizer->vocab_size(), device, o.batch,
                  graphs);
  GenerateTiming timing;
  const torch::Tensor prompt_logits = next.after_prompt(prompt);
  wait_for(device);
  timing.prompt_s = seconds_since(start);
  std::vector<Continuation> rows;
  for (int i = 0; i < o.batch; ++i) {
    rows.push_back(Continuation{prompt, {}, "max_new", o.seed + i, std::mt19937_64(o.seed + i)});
  }
  const bool stream = !args.json && o.batch == 1 && group.speaks();
  // The continuations advance together, one token each per round (their cached steps batched
  // into one), each with its own draws.
  size_t produced = 0;
  for (int round = 0; round < o.max_new; ++round) {
    std::vector<Continuation*> going;
    std::vector<size_t> going_rows;
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i].stopped != "end_of_text") going.push_back(&rows[i]), going_rows.push_back(i);
    }
    if (going.empty()) break;
#ifdef HYDRA_CUDA
    if (round == trace_from && group.speaks()) {
      wait_for(device);
      bench::start_kineto_trace();
      tracing = true;
    }
#endif
    const auto round_start = std::chrono::steady_clock::now();
    std::vector<torch::Tensor> logits(going.size(), prompt_logits);
    if (round > 0) {
      std::vector<const std::vector<int32_t>*> contexts;
      for (Continuation* row : going) contexts.push_back(&row->context);
      logits = next.after(going_rows, contexts, timing);
    }
    const auto sampling_start = std::chrono::steady_clock::now();
    std::vector<int32_t> ids = next_tokens(logits, o.sampling, going);
    timing.sampling_s += seconds_since(sampling_start);
    group.agree(ids, device);
    for (size_t i = 0; i < going.size(); ++i) {
      Continuation& row = *going[i];
      const int32_t id = ids[i];
      if (id == tokenizer->eot_id()) {
        row.stopped = "end_of_text";
        continue;
      }
      row.generated.push_back(id);
      row.context.push_back(id);
      ++produced;
      if (stream) {
        const std::string piece = tokenizer->decode(&id, 1);  // bytes: a character may span tokens
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      }
    }
    if (round > 0) timing.round_s.push_back(seconds_since(round_start));
  }
  const double seconds = seconds_since(start);  // the trace's writing left out
#ifdef HYDRA_CUDA
  if (tracing) {
    wait_for(device);
    bench::stop_kineto_trace(args.trace);
    std::fprintf(stderr, "hydra generate: trace of the rounds from %d on: %s\n", trace_from, args.trace.c_str());
  }
#endif
  timing.other_s = std::max(0.0, seconds - timing.prompt_s - timing.step_submit_s - timing.step_wait_s -
                                     timing.anew_s - timing.sampling_s);
  const double tokens_per_s = seconds > 0 ? produced / seconds : 0.0;
  if (!group.speaks()) return 0;
  if (args.json) {
    common::Json out = common::Json::object();
    out["checkpoint"] = args.checkpoint;
    out["step"] = index.progress.step;
    out["prompt"] = o.prompt;
    out["prompt_tokens"] = static_cast<int64_t>(prompt_tokens);
    const auto ids = [](const std::vector<int32_t>& tokens) {
      common::Json list = common::Json::array();
      for (const int32_t id : tokens) list.push(static_cast<int64_t>(id));
      return list;
    };
    // The first continuation (the one of --seed itself) at the top level; all of them in
    // `continuations` with --batch.
    out["tokens"] = ids(rows[0].generated);
    out["text"] = tokenizer->decode(rows[0].generated);
    out["stopped"] = rows[0].stopped;
    if (o.batch > 1) {
      common::Json list = common::Json::array();
      for (const Continuation& row : rows) {
        common::Json item = common::Json::object();
        item["seed"] = static_cast<int64_t>(row.seed);
        item["tokens"] = ids(row.generated);
        item["text"] = tokenizer->decode(row.generated);
        item["stopped"] = row.stopped;
        list.push(item);
      }
      out["continuations"] = list;
    }
    out["seconds"] = seconds;
    out["tokens_per_s"] = tokens_per_s;
    common::Json sampling = common::Json::object();
    sampling["temperature"] = o.sampling.temperature;
    sampling["top_k"] = o.sampling.top_k;
    sampling["top_p"] = o.sampling.top_p;
    sampling["seed"] = static_cast<int64_t>(o.seed);
    out["sampling"] = sampling;
    out["batch"] = o.batch;
    out["tp"] = group.size();
    out["cache"] = o.cache;
    out["cuda_graphs"] = next.graphs_captured();
    out["timing"] = timing.json();
    out["kv_cache"] = kv_cache_report(config, next);
    std::printf("%s\n", out.dump().c_str());
  } else {
    if (stream) {
      std::printf("\n");
    } else {
      for (size_t i = 0; i < rows.size(); ++i) {
        const std::string text = tokenizer->decode(rows[i].generated);
        std::printf("--- continuation %zu (seed %llu) ---\n", i, static_cast<unsigned long long>(rows[i].seed));
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::printf("\n");
      }
    }
    std::fflush(stdout);
    std::fprintf(stderr, "generate: %zu tokens in %.2f s (%.1f tokens/s, %s), stopped at %s\n", produced, seconds,
                 tokens_per_s, o.cache ? "KV cache" : "no cache", rows[0].stopped.c_str());
  }
  return 0;
}

}  // namespace hydra::launcher
