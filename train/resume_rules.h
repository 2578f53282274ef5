// Which config keys a resumed run may change (docs/INTERFACE.md, "What a resume may change").
// One table decides it; the checkpoint's index holds the config the run was started with
// (SaveRequest::config_json), and `--resume` compares it with the new one at start.
#pragma once

#include <string>
#include <vector>

namespace hydra::train {

struct ResumeRule {
  std::string key;      // a full key ("train.seed") or a section prefix ending in '.' ("model.")
  bool may_change = false;
  std::string why;      // said in the refusal, and in the docs
};

// The table, most specific entries first within a section.
const std::vector<ResumeRule>& resume_rules();

// The rule of a key: its own entry, else the longest prefix; a key the table does not know
// must not change (the safe side, for keys added later).
const ResumeRule& resume_rule(const std::string& key);

// Compares the config stored in `checkpoint_dir` (stored_json) with this run's
// (current_json): throws ConfigError naming every key that must not change, with both
// values. Keys absent from the stored config (older checkpoints) are not compared, except
// those whose value then was not today's default (model.ccqa.compress: head_dim).
void check_resume_config(const std::string& stored_json, const std::string& current_json,
                         const std::string& checkpoint_dir);

// The model.* keys that differ between a checkpoint's stored config and this run's (fixed ones
// only, as check_resume_config judges them), one "\n  key: X in the checkpoint, Y now (why)"
// each; "" when none differ or nothing is stored. --init-from and `hydra generate` add it to a
// failed weight load, so that "another model shape" names the setting behind it (for example
// model.ccqa.compress, whose default changed). `source` names the checkpoint in read errors.
std::string model_differences(const std::string& stored_json, const std::string& current_json,
                              const std::string& source);

}  // namespace hydra::train
