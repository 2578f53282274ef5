#include "train/resume_rules.h"

#include <yaml-cpp/yaml.h>

#include <map>
#include <sstream>

#include "common/errors.h"

namespace hydra::train {
namespace {

// key -> value as text, for every leaf of a config (JSON is YAML, so yaml-cpp reads it).
void flatten(const YAML::Node& node, const std::string& prefix, std::map<std::string, std::string>& out) {
  if (node.IsMap()) {
    for (const auto& item : node) flatten(item.second, prefix + item.first.as<std::string>() + ".", out);
    return;
  }
  const std::string key = prefix.substr(0, prefix.size() - 1);
  if (node.IsSequence()) {
    std::string list = "[";
    for (size_t i = 0; i < node.size(); ++i) list += (i ? ", " : "") + node[i].as<std::string>();
    out[key] = list + "]";
  } else {
    out[key] = node.IsNull() ? "null" : node.as<std::string>();
  }
}

std::map<std::string, std::string> flat_config(const std::string& json, const std::string& what) {
  std::map<std::string, std::string> out;
  try {
    flatten(YAML::Load(json), "", out);
  } catch (const YAML::Exception& e) {
    HYDRA_FAIL(common::InputError, what << ": the stored config cannot be read: " << e.what());
  }
  return out;
}

// Keys added after checkpoints were already being written, whose value in those checkpoints is
// not today's default: such a checkpoint is compared as if it held the value it was made with.
// model.ccqa.compress (2026-12-02) had one layout before it existed, head_dim, and its default
// became heads on 2026-12-06.
void add_values_older_checkpoints_imply(std::map<std::string, std::string>& stored) {
  if (stored.count("model.ccqa.compression") && !stored.count("model.ccqa.compress")) {
    stored["model.ccqa.compress"] = "head_dim";
  }
}

// "\n  key: <stored> in the checkpoint, <current> now (why)" for each key under `prefix` that may not
// change and differs; keys absent from the stored config are skipped (older checkpoints).
std::string fixed_differences(const std::string& stored_json, const std::string& current_json, const std::string& what,
                              const std::string& prefix) {
  auto stored = flat_config(stored_json, what);
  add_values_older_checkpoints_imply(stored);
  const auto current = flat_config(current_json, "this run's config");
  std::ostringstream changed;
  for (const auto& [key, now] : current) {
    if (key.rfind(prefix, 0) != 0) continue;
    const auto then = stored.find(key);
    if (then == stored.end() || then->second == now || resume_rule(key).may_change) continue;
    changed << "\n  " << key << ": " << then->second << " in the checkpoint, " << now << " now ("
            << resume_rule(key).why << ")";
  }
  return changed.str();
}

}  // namespace

const std::vector<ResumeRule>& resume_rules() {
  static const std::vector<ResumeRule> table = {
      {"model.preset", true, "a name only: the model.* values it resolves to are compared"},
      {"model.ccqa.kernel", true, "fused and reference compute the same attention"},
      {"model.", false, "the checkpoint's weights are those of this model"},
      {"parallel.", true, "checkpoints reshard: any dp/tp/pp/ZeRO layout continues any other"},
      {"train.steps", true, "extends or shortens the run (the cosine then ends at the new train.steps)"},
      {"train.micro_batch", true, "splits the same samples of a step into other forwards (memory)"},
      {"train.device", true, "the same math on other hardware (checkpoints hold fp32 master weights)"},
      {"train.activation_checkpointing", true, "recomputation trades time for memory, same results"},
      {"train.on_nonfinite", true, "what to do with a bad step, not what a good one computes"},
      {"train.stop_at_step", true, "where this job stops"},
      {"train.inject_nonfinite_step", true, "a testing aid"},
      {"train.eval_every", true, "evaluation does not change training"},
      {"train.eval_batches", true, "evaluation does not change training"},
      {"train.peak_tflops", true, "only the reported MFU"},
      {"train.cuda_graphs", true, "a captured step computes what the uncaptured one does"},
      {"train.seed", false, "it fixes the data order the consumed-sample counter walks"},
      {"train.global_batch", false, "the data position and the optimizer's dynamics depend on it"},
      {"train.seq_len", false, "the corpus is cut into windows of train.seq_len + 1 tokens"},
      {"train.freeze", false, "frozen parameters have no optimizer state in the checkpoint to continue from"},
      {"train.", false, "the schedule, optimizer and precision the checkpoint's state was made with"},
      {"data.", false, "the consumed-sample counter indexes this corpus with this tokenizer"},
      {"checkpoint.", true, "where and how often to save"},
      {"log.", true, "what is printed and recorded"},
  };
  return table;
}

const ResumeRule& resume_rule(const std::string& key) {
  static const ResumeRule unknown{"", false, "not in the resume table: kept as the checkpoint has it"};
  const ResumeRule* best = &unknown;
  for (const auto& rule : resume_rules()) {
    if (rule.key == key) return rule;
    const bool prefix = rule.key.back() == '.' && key.rfind(rule.key, 0) == 0;
    if (prefix && rule.key.size() > best->key.size()) best = &rule;
  }
  return *best;
}

void check_resume_config(const std::string& stored_json, const std::string& current_json,
                         const std::string& checkpoint_dir) {
  if (stored_json.empty()) return;  // written without a config: nothing to compare
  const std::string changed = fixed_differences(stored_json, current_json, checkpoint_dir + "/index.h5", "");
  if (changed.empty()) return;
  HYDRA_FAIL(common::ConfigError, "--resume: " << checkpoint_dir << " was written with settings a resumed run must keep:"
                                      << changed
                                      << "\nSet them back (docs/INTERFACE.md lists what may change), or start a new run"
                                         " from its weights with --init-from "
                                      << checkpoint_dir);
}

std::string model_differences(const std::string& stored_json, const std::string& current_json,
                              const std::string& source) {
  if (stored_json.empty()) return "";
  return fixed_differences(stored_json, current_json, source, "model.");
}

}  // namespace hydra::train
