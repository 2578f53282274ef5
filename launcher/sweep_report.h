// `hydra sweep`: sweep.json from the points' `hydra bench step` JSON files. Each point's
// throughput, time split and memory as bench step measured them; scaling against the 1-rank
// point; for the strong series its loss against the 1-rank loss. docs/INTERFACE.md, "hydra
// sweep", defines every key.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/json.h"
#include "data/json_reader.h"
#include "launcher/sweep_launch.h"
#include "launcher/sweep_plan.h"

namespace hydra::launcher {

struct PointRun {
  SweepPoint point;
  std::vector<std::string> command;     // empty for a skipped point
  ChildOutcome outcome;                 // of the launch (not for a skipped point)
  std::optional<data::JsonValue> bench; // its bench step JSON, when it exited 0 and the file parsed
  std::string json_file, log_file;      // relative to DIR
};

// What the sweep was asked, for the header of sweep.json.
struct SweepHeader {
  std::string version, config, device, dtype;
  std::vector<std::string> sets;
  SweepOptions options;
  int seq_len = 0;
};

// The relative loss difference a strong-series point may have from the 1-rank point: 1e-4 in
// fp32 (the layouts sum in other orders; tests/train holds them to the same), 3e-2 in bf16.
double loss_tolerance(const std::string& dtype);

// sweep.json, without the plot keys (the caller adds them).
common::Json sweep_json(const SweepHeader& header, const std::vector<PointRun>& runs);

// The point's number `key` (a top-level key of its bench JSON), when present and a number.
std::optional<double> bench_number(const PointRun& run, const std::string& key);

}  // namespace hydra::launcher
