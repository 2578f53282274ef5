#include "checkpoint/inspect.h"

#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/catalog.h"
#include "checkpoint/rank_files.h"
#include "checkpoint/regions.h"
#include "common/errors.h"

namespace hydra::checkpoint {
namespace {

namespace fs = std::filesystem;

// Verifies rank file `rank` as a load reads it (RankFiles, read_part: the index's file size,
// then each catalog part against its dataset and its checksums), its own /catalog, and its
// whole-file CRC-32 against the index. Returns the number of datasets read. A damaged
// dataset is reported by name and block; the file's CRC, reported when every dataset reads
// back right, catches damage elsewhere (HDF5 metadata). Datasets are found by name through
// the index's catalog, as a load finds them, never by listing groups: HDF5 1.10 crashes
// listing a group whose link heap is damaged (H5Literate; a load never lists).
int64_t verify_rank_file(RankFiles& files, const LoadedCheckpoint& index, int rank) {
  const std::string name = rank_file_name(rank);
  std::string whole_file_problem;
  if (const auto recorded = index.files.find(name); recorded != index.files.end()) {
    try {
      check_file_checksum((fs::path(index.dir) / name).string(), recorded->second);
    } catch (const common::InputError& e) {
      whole_file_problem = e.what();
    }
  }
  std::set<std::string> done = {"/catalog"};
  try {
    read_catalog(files.get(rank));
    for (const CatalogEntry& e : index.catalog) {
      if (e.file != rank) continue;
      const std::vector<std::string> groups = e.optim ? std::vector<std::string>{"master", "exp_avg", "exp_avg_sq"}
                                                      : std::vector<std::string>{"master"};  // a weight: one dataset
      for (const std::string& group : groups) {
        read_part(files, e, group);
        done.insert(object_of(e, group));
      }
    }
  } catch (const common::InputError& e) {
    if (whole_file_problem.empty()) throw;
    HYDRA_FAIL(common::InputError, e.what() << "; and " << whole_file_problem);
  }
  if (!whole_file_problem.empty()) {
    HYDRA_FAIL(common::InputError, whole_file_problem << " outside its datasets' data (every dataset's checksums are "
                                                      << "right, so HDF5's own structures are damaged)");
  }
  return static_cast<int64_t>(done.size());
}

// Progress and layout of the index, for people and for --json.
void describe_index(const LoadedCheckpoint& index, common::Json& j, std::ostringstream& text) {
  j["step"] = index.progress.step;
  j["consumed_samples"] = index.progress.consumed_samples;
  j["tokens"] = index.progress.tokens;
  j["skipped"] = index.progress.skipped;
  common::Json layout = common::Json::object();
  for (const auto& [key, value] : index.layout) layout[key] = value;
  j["layout"] = layout;
  text << "step        " << index.progress.step << " (" << index.progress.tokens << " tokens, "
       << index.progress.consumed_samples << " samples)\n";
  text << "layout     ";
  for (const auto& [key, value] : index.layout) text << " " << key << "=" << value;
  text << "\n";
  // Counted from the stored global shapes: without vocabulary padding, each parameter once.
  std::map<std::string, int64_t> params;
  for (const CatalogEntry& e : index.catalog) {
    if (!e.optim) params[e.name] = element_count(e.global_shape);
  }
  int64_t count = 0;
  for (const auto& [name, n] : params) count += n;
  j["parameters"] = count;
  j["tensors"] = static_cast<int64_t>(params.size());
  text << "parameters  " << count << " in " << params.size() << " tensors\n";
}

// Verifies every rank file, each on its own (every damaged file is named, not only the
// first). Returns the first problem, "" if none.
std::string verify_files(const std::string& dir, const LoadedCheckpoint& index, common::Json& j,
                         std::ostringstream& text) {
  const int64_t world = index.layout.count("world") ? index.layout.at("world") : 1;
  RankFiles files(dir, index.files);
  common::Json rows = common::Json::array();
  std::string first_problem;
  int64_t total_bytes = 0;
  for (int r = 0; r < static_cast<int>(world); ++r) {
    const std::string name = rank_file_name(r);
    common::Json row = common::Json::object();
    row["file"] = name;
    std::error_code ec;
    const auto bytes = fs::file_size(fs::path(dir) / name, ec);
    if (!ec) row["bytes"] = static_cast<int64_t>(bytes), total_bytes += static_cast<int64_t>(bytes);
    try {
      row["datasets"] = verify_rank_file(files, index, r);
      row["verified"] = true;
      text << "  " << name << "  " << bytes / 1e6 << " MB, ok\n";
    } catch (const common::InputError& e) {
      row["verified"] = false;
      row["problem"] = e.what();
      text << "  " << name << "  DAMAGED: " << e.what() << "\n";
      if (first_problem.empty()) first_problem = e.what();
    }
    rows.push(row);
  }
  j["files"] = rows;
  j["bytes"] = total_bytes;
  text << "files       " << world << " rank files, " << total_bytes / 1e6 << " MB\n";
  return first_problem;
}

}  // namespace

InspectReport inspect_checkpoint(const std::string& dir) {
  InspectReport report;
  common::Json& j = report.json;
  j = common::Json::object();
  j["dir"] = dir;
  j["complete"] = fs::exists(fs::path(dir) / "COMMIT");
  std::ostringstream text;
  text << "checkpoint  " << dir << "\n";
  try {
    // The very checks a load makes (COMMIT, format, version, the catalog's checksums), in the
    // same code; then the files, each as a load opens and reads it.
    const LoadedCheckpoint index = read_index(dir);
    describe_index(index, j, text);
    report.problem = verify_files(dir, index, j, text);
  } catch (const common::InputError& e) {
    report.problem = e.what();
  }
  report.verified = report.problem.empty();
  j["verified"] = report.verified;
  if (!report.verified) j["problem"] = report.problem;
  text << "verified    " << (report.verified ? "yes: every file present, every checksum right" : "NO: " + report.problem)
       << "\n";
  report.text = text.str();
  return report;
}

}  // namespace hydra::checkpoint
