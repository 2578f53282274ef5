#include "train/metrics.h"

#include <filesystem>
#include <fstream>

#include "common/errors.h"
#include "common/json.h"

namespace hydra::train {

std::string metrics_row(const StepMetrics& r) {
  common::Json row = common::Json::object();
  row["step"] = r.step;
  row["loss"] = r.loss;
  row["aux_loss"] = r.aux_loss;
  row["lr"] = r.lr;
  row["grad_norm"] = r.grad_norm;
  row["tokens"] = static_cast<int64_t>(r.tokens);
  row["tok_s"] = r.tok_s;
  row["mfu"] = r.mfu ? common::Json(*r.mfu) : common::Json();
  row["skipped"] = r.skipped;
  if (r.mem_gb) row["mem_gb"] = *r.mem_gb;
  if (r.val_loss) row["val_loss"] = *r.val_loss;
  if (r.checkpoint.stall_ms) row["ckpt_stall_ms"] = *r.checkpoint.stall_ms;
  if (r.checkpoint.copy_ms) row["ckpt_copy_ms"] = *r.checkpoint.copy_ms;
  if (r.checkpoint.write_ms) row["ckpt_write_ms"] = *r.checkpoint.write_ms;
  if (r.checkpoint.load_ms) row["ckpt_load_ms"] = *r.checkpoint.load_ms;
  return row.dump();
}

namespace {

// The "step" of a metrics row, or -1 if the line is not one.
int row_step(const std::string& line) {
  const size_t key = line.find("\"step\": ");
  return key == std::string::npos ? -1 : std::atoi(line.c_str() + key + 8);
}

void drop_rows_after(const std::string& path, int step) {
  std::ifstream in(path);
  if (!in) return;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (std::string line; std::getline(in, line);) {
      if (row_step(line) <= step) out << line << "\n";
    }
    if (!out) HYDRA_FAIL(common::RuntimeFailure, tmp << ": cannot write the metrics file");
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace

MetricsFile::MetricsFile(const std::string& path, int resume_step) {
  if (path.empty()) return;
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  if (resume_step > 0) {
    drop_rows_after(path, resume_step);
  } else {
    // A fresh run starts a fresh file; an earlier run's file is kept beside it, not lost.
    if (std::filesystem::exists(path)) std::filesystem::rename(path, path + ".prev");
  }
  file_ = std::fopen(path.c_str(), "a");
  if (!file_) HYDRA_FAIL(common::ConfigError, "log.jsonl: cannot open '" << path << "' for writing");
}

MetricsFile::~MetricsFile() {
  if (file_) std::fclose(file_);
}

void MetricsFile::write(const StepMetrics& row) {
  if (!file_) return;
  std::fprintf(file_, "%s\n", metrics_row(row).c_str());
  std::fflush(file_);  // a crash loses no logged row
}

}  // namespace hydra::train
