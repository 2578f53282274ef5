#include "launcher/plan_files.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "common/errors.h"
#include "launcher/yaml_file.h"

namespace hydra::launcher {
namespace {

using common::ConfigError;

const std::vector<std::string>& cluster_keys() {
  static const std::vector<std::string> keys = {
      "name",           "gpus_per_node",      "peak_bf16_flops",      "hbm_bytes",
      "intra_node_bandwidth", "intra_node_latency", "inter_node_bandwidth", "inter_node_latency"};
  return keys;
}

double positive(const std::string& path, const YAML::Node& root, const std::string& key) {
  const YAML::Node node = root[key];
  double v = 0;
  try {
    v = node.as<double>();
  } catch (const YAML::Exception&) {
    HYDRA_FAIL(ConfigError, yaml_location(path, node) << ": " << key << " must be a number, got "
                                                      << describe_yaml_value(node));
  }
  if (!(v > 0)) HYDRA_FAIL(ConfigError, yaml_location(path, node) << ": " << key << " must be positive, got " << v);
  return v;
}

YAML::Node load_json(const std::string& path, const char* what) {
  try {
    return YAML::LoadFile(path);  // JSON is YAML
  } catch (const YAML::Exception& e) {
    HYDRA_FAIL(ConfigError, path << ": cannot read the " << what << ": " << e.what());
  }
}

double json_number(const std::string& path, const YAML::Node& root, const std::string& key) {
  if (!root.IsMap() || !root[key]) HYDRA_FAIL(ConfigError, path << ": has no '" << key << "'");
  return positive(path, root, key);
}

}  // namespace

train::Cluster load_cluster(const std::string& path) {
  const YAML::Node root = load_yaml_file(path, "cluster file");
  if (!root.IsMap()) HYDRA_FAIL(ConfigError, path << ": a cluster file is a map of " << cluster_keys().size() << " keys");
  const std::set<std::string> known(cluster_keys().begin(), cluster_keys().end());
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (!known.count(key)) HYDRA_FAIL(ConfigError, yaml_location(path, kv.first) << ": unknown key '" << key << "'");
  }
  for (const auto& key : cluster_keys()) {
    if (!root[key]) HYDRA_FAIL(ConfigError, path << ": missing key '" << key << "'");
  }
  train::Cluster c;
  c.name = root["name"].as<std::string>();
  const double gpn = positive(path, root, "gpus_per_node");
  if (gpn != static_cast<int>(gpn)) HYDRA_FAIL(ConfigError, path << ": gpus_per_node must be a whole number");
  c.gpus_per_node = static_cast<int>(gpn);
  c.peak_flops = positive(path, root, "peak_bf16_flops");
  c.hbm_bytes = positive(path, root, "hbm_bytes");
  c.intra = {positive(path, root, "intra_node_bandwidth"), positive(path, root, "intra_node_latency")};
  c.inter = {positive(path, root, "inter_node_bandwidth"), positive(path, root, "inter_node_latency")};
  return c;
}

train::CalibrationPoint load_calibration_point(const std::string& path,
                                               const std::function<double(int tp)>& flops_per_token,
                                               const std::string& dtype) {
  const YAML::Node root = load_json(path, "calibration (hydra bench step --json)");
  const std::string measured = root.IsMap() && root["dtype"] ? root["dtype"].as<std::string>() : "";
  if (measured != dtype) {
    HYDRA_FAIL(ConfigError, path << ": dtype '" << measured << "' but this config trains in " << dtype
                                 << " (set train.dtype, or calibrate in " << dtype << ")");
  }
  if (json_number(path, root, "world") != 1) {
    HYDRA_FAIL(ConfigError, path << ": world is " << root["world"].as<std::string>()
                                 << "; a calibration run is one GPU (hydra bench step without mpirun)");
  }
  if (json_number(path, root, "accumulation") != 1) {
    HYDRA_FAIL(ConfigError, path << ": accumulation is " << root["accumulation"].as<std::string>()
                                 << "; calibrate with train.micro_batch = train.global_batch");
  }
  train::CalibrationPoint p;
  if (root["tp_slice"]) {
    const double k = json_number(path, root, "tp_slice");
    if (k < 2 || k != static_cast<int>(k)) HYDRA_FAIL(ConfigError, path << ": tp_slice must be a whole number >= 2");
    p.tp_slice = static_cast<int>(k);
  }
  const double fpt = json_number(path, root, "flops_per_token"), want = flops_per_token(p.tp_slice);
  if (std::abs(fpt / want - 1) > 1e-9) {
    HYDRA_FAIL(ConfigError, path << ": flops_per_token " << fpt << " is another model's or sequence length's (this config: "
                                 << want << ")");
  }
  p.tokens = json_number(path, root, "global_batch") * json_number(path, root, "seq_len");
  const double step_s = json_number(path, root, "step_ms") / 1e3;
  const YAML::Node phases = root["phase_ms"];
  const char* optimizer_phase = "gradient reduction and optimizer step";
  // A replayed CUDA graph is one phase: its optimizer stays in the forward+backward figure.
  if (phases && phases.IsMap() && phases[optimizer_phase]) p.optimizer_s = phases[optimizer_phase].as<double>() / 1e3;
  p.forward_backward_s = step_s - p.optimizer_s;
  if (!(p.forward_backward_s > 0)) HYDRA_FAIL(ConfigError, path << ": step_ms is not above its optimizer phase");
  return p;
}

void apply_comm_file(const std::string& path, train::Cluster& cluster) {
  const YAML::Node root = load_json(path, "hydra bench comm --json output");
  const double world = json_number(path, root, "world");
  const YAML::Node rows = root["rows"];
  if (!rows || !rows.IsSequence()) HYDRA_FAIL(ConfigError, path << ": has no 'rows' list");
  double big_bytes = 0, big_busbw = 0, small_bytes = 0, small_ms = 0;
  int n = 0;
  train::CommCurve curve;
  for (const auto& row : rows) {
    if (row["op"].as<std::string>() != "all_reduce" || row["group"].as<std::string>() != "world") continue;
    const double bytes = row["bytes"].as<double>();
    n = row["ranks"].as<int>();
    curve.points.emplace_back(bytes, row["ms"].as<double>() / 1e3);
    if (bytes > big_bytes) big_bytes = bytes, big_busbw = row["busbw_gbs"].as<double>();
    if (small_bytes == 0 || bytes < small_bytes) small_bytes = bytes, small_ms = row["ms"].as<double>();
  }
  if (n < 2 || big_busbw <= 0) HYDRA_FAIL(ConfigError, path << ": no all_reduce rows of the world group");
  train::Link& link = world > cluster.gpus_per_node ? cluster.inter : cluster.intra;
  link.bandwidth = big_busbw * 1e9;
  link.latency = small_ms / 1e3 / (2.0 * (n - 1));
  curve.ranks = n;
  std::sort(curve.points.begin(), curve.points.end());
  link.all_reduce = curve;
}

}  // namespace hydra::launcher
