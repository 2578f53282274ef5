#include "train/metrics.h"

#include <cerrno>
#include <cstring>
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
  if (r.params) {
    row["params_trainable"] = r.params->trainable;
    row["params_frozen"] = r.params->frozen;
  }
  return row.dump();
}

namespace {

// The "step" of a metrics row, or -1 if the line is not one.
int row_step(const std::string& line) {
  const size_t key = line.find("\"step\": ");
  return key == std::string::npos ? -1 : std::atoi(line.c_str() + key + 8);
}

[[noreturn]] void write_failed(const std::string& path, int err) {
  HYDRA_FAIL(common::RuntimeFailure, "log.jsonl: cannot write the metrics file " << path << ": " << std::strerror(err));
}

void write_all(std::FILE* file, const std::string& text, const std::string& path) {
  if (std::fputs(text.c_str(), file) < 0 || std::fflush(file) != 0) write_failed(path, errno);
}

// Appends `text` to `path` (created if missing) and closes it, checking every call.
void append_to(const std::string& path, const std::string& text) {
  std::FILE* file = std::fopen(path.c_str(), "a");
  if (!file) write_failed(path, errno);
  write_all(file, text, path);
  if (std::fclose(file) != 0) write_failed(path, errno);
}

// Rows of steps after `step` were written by the run being resumed after its checkpoint; the
// resumed run writes those steps again. They move to <path>.superseded (appended, so nothing
// is lost) and the file keeps the rest, through a temporary and a rename.
void set_aside_rows_after(const std::string& path, int step) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return;  // (a device such as /dev/full reads forever)
  std::ifstream in(path);
  std::string kept, later;
  for (std::string line; std::getline(in, line);) (row_step(line) <= step ? kept : later) += line + "\n";
  if (later.empty()) return;
  append_to(path + ".superseded", later);
  const std::string tmp = path + ".tmp";
  std::remove(tmp.c_str());
  append_to(tmp, kept);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) write_failed(path, errno);
}

}  // namespace

MetricsFile::MetricsFile(const std::string& path, int resume_step) : path_(path) {
  if (path.empty()) return;
  // The folder exists and is writable (train/run_checks.h); an earlier run's rows are refused
  // there or moved aside by --overwrite, so only a resumed run's own rows are here.
  set_aside_rows_after(path, resume_step);
  file_ = std::fopen(path.c_str(), "a");
  if (!file_) HYDRA_FAIL(common::ConfigError, "log.jsonl: cannot open '" << path << "' for writing: " << std::strerror(errno));
}

MetricsFile::~MetricsFile() {
  if (file_) std::fclose(file_);
}

void MetricsFile::write(const StepMetrics& row) {
  if (!file_) return;
  write_all(file_, metrics_row(row) + "\n", path_);  // flushed: a crash loses no logged row
}

}  // namespace hydra::train
