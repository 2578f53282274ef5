#include "checkpoint/inspect.h"

#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5_file.h"
#include "checkpoint/regions.h"
#include "common/errors.h"

namespace hydra::checkpoint {
namespace {

namespace fs = std::filesystem;

// Reads every dataset under `group` (recursively), which verifies its CRC-32; returns the
// number of datasets.
int64_t verify_group(const H5File& f, const std::string& group) {
  int64_t count = 0;
  for (const auto& name : f.list(group)) {
    const std::string object = (group == "/" ? "" : group) + "/" + name;
    if (f.has_attr(object, "crc32")) {
      f.read_tensor(object);  // throws InputError on a checksum mismatch
      ++count;
    } else {
      count += verify_group(f, object);
    }
  }
  return count;
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
    const LoadedCheckpoint index = read_index(dir);
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

    const int64_t world = index.layout.count("world") ? index.layout.at("world") : 1;
    common::Json files = common::Json::array();
    std::map<std::string, int64_t> params;  // name -> global elements, counted once
    int64_t total_bytes = 0;
    for (int64_t r = 0; r < world; ++r) {
      const std::string name = rank_file_name(static_cast<int>(r));
      const std::string path = (fs::path(dir) / name).string();
      const H5File f = H5File::open_read(path);
      const int64_t datasets = verify_group(f, "/");
      for (const auto& p : f.exists("/model") ? f.list("/model") : std::vector<std::string>{}) {
        params[p] = element_count(f.attr_ints("/model/" + p, "global_shape"));
      }
      const auto bytes = static_cast<int64_t>(fs::file_size(path));
      total_bytes += bytes;
      // The whole file against the index (damage outside any dataset, or a swapped file).
      const auto recorded = index.files.find(name);
      if (recorded != index.files.end()) {
        check_file_size(path, recorded->second);
        const FileChecksum sum = checksum_file(path);
        if (sum.crc32 != recorded->second.crc32) {
          HYDRA_FAIL(common::InputError, path << ": file CRC-32 " << std::hex << sum.crc32 << " differs from the index's "
                                              << recorded->second.crc32 << std::dec);
        }
      }
      common::Json row = common::Json::object();
      row["file"] = name;
      row["bytes"] = bytes;
      row["datasets"] = datasets;
      row["verified"] = true;
      files.push(row);
    }
    int64_t count = 0;
    for (const auto& [name, n] : params) count += n;
    j["parameters"] = count;
    j["tensors"] = static_cast<int64_t>(params.size());
    j["files"] = files;
    j["bytes"] = total_bytes;
    text << "parameters  " << count << " in " << params.size() << " tensors\n";
    text << "files       " << world << " rank files, " << total_bytes / 1e6 << " MB\n";
    report.verified = true;
  } catch (const common::HydraError& e) {
    report.problem = e.what();
  }
  j["verified"] = report.verified;
  if (!report.verified) j["problem"] = report.problem;
  text << "verified    " << (report.verified ? "yes: every file present, every checksum right" : "NO: " + report.problem)
       << "\n";
  report.text = text.str();
  return report;
}

}  // namespace hydra::checkpoint
