#include "checkpoint/checkpoint.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "checkpoint/catalog.h"
#include "checkpoint/commit.h"
#include "checkpoint/file_checksum.h"
#include "checkpoint/h5_file.h"
#include "checkpoint/snapshot.h"
#include "common/errors.h"
#include "common/remove_tree.h"
#include "common/logging.h"

namespace hydra::checkpoint {
namespace {

namespace fs = std::filesystem;
using common::InputError;


void write_index(const std::string& path, const SaveRequest& req, int64_t optim_step, const std::string& catalog,
                 const std::map<std::string, FileChecksum>& checksums) {
  H5File f = H5File::create(path);
  f.set_attr("/", "format", std::string("hydra-checkpoint"));
  f.set_attr("/", "version", static_cast<int64_t>(kFormatVersion));
  f.set_attr("/", "step", req.progress.step);
  f.set_attr("/", "consumed_samples", req.progress.consumed_samples);
  f.set_attr("/", "tokens", req.progress.tokens);
  f.set_attr("/", "skipped", req.progress.skipped);
  f.set_attr("/", "config", req.config_json);
  for (const auto& [key, value] : req.layout) f.set_attr("/", "layout_" + key, value);
  std::string files;
  for (int r = 0; r < req.world; ++r) files += (r ? "\n" : "") + rank_file_name(r);
  f.set_attr("/", "files", files);
  f.set_attr("/", "file_checksums", format_file_checksums(checksums));
  if (optim_step >= 0) f.set_attr("/", "optim_step", optim_step);
  write_catalog(f, catalog);
  f.close();
  fsync_path(path);
}

void write_commit_marker(const std::string& dir) {
  const std::string marker = dir + "/COMMIT";
  {
    std::ofstream out(marker, std::ios::trunc);
    out << "complete\n";
    out.close();  // the write happens here, and may fail (a full disk)
    if (!out) HYDRA_FAIL(common::RuntimeFailure, marker << ": cannot write the commit marker");
  }
  fsync_path(marker);
  fsync_path(dir);
}

// Rank 0's part of the commit: index.h5, the rename and COMMIT.
void publish(const SaveRequest& req, int64_t optim_step, const fs::path& tmp_dir, const fs::path& final_dir) {
  // Each rank file ends with its catalog: reading them all back also checks that every
  // file is complete before anything is published.
  std::string catalog;
  std::map<std::string, FileChecksum> checksums;
  for (int r = 0; r < req.world; ++r) {
    const std::string file = (tmp_dir / rank_file_name(r)).string();
    catalog += read_catalog(H5File::open_read(file));
    checksums[rank_file_name(r)] = read_checksum_sidecar(file);
  }
  write_index((tmp_dir / "index.h5").string(), req, optim_step, catalog, checksums);
  for (int r = 0; r < req.world; ++r) std::remove(((tmp_dir / rank_file_name(r)).string() + ".crc32").c_str());
  fsync_path(tmp_dir.string());
  common::remove_tree(final_dir.string());  // an uncommitted directory of the same step
  fs::rename(tmp_dir, final_dir);
  write_commit_marker(final_dir.string());
}

int64_t step_of(const fs::path& dir) {
  const std::string name = dir.filename().string();
  if (name.rfind("step_", 0) != 0 || name.find('.') != std::string::npos) return -1;
  try {
    return std::stoll(name.substr(5));
  } catch (const std::exception&) {
    return -1;
  }
}

std::vector<std::pair<int64_t, fs::path>> committed(const std::string& root) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const int64_t step = step_of(entry.path());
    if (step >= 0 && fs::exists(entry.path() / "COMMIT")) out.emplace_back(step, entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void prune(const std::string& root, int keep) {
  auto done = committed(root);
  while (static_cast<int>(done.size()) > keep) {
    common::log_info("checkpoint: removing old %s", done.front().second.string().c_str());
    common::remove_tree(done.front().second.string());
    done.erase(done.begin());
  }
}

// InputError saying what `dir` is when it is not a committed checkpoint.
void require_committed(const std::string& dir) {
  const fs::path path(dir);
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status)) HYDRA_FAIL(InputError, dir << ": no such directory");
  if (!fs::is_directory(status)) HYDRA_FAIL(InputError, dir << ": not a directory (a checkpoint is a step_N directory)");
  if (fs::exists(path / "COMMIT")) return;
  const auto inside = committed(dir);
  if (!inside.empty()) {
    HYDRA_FAIL(InputError, dir << ": a checkpoint.dir, not a checkpoint: name one of its step_N directories "
                               << "(newest: " << inside.back().second.string() << "), or use --resume latest");
  }
  if (fs::exists(path / "index.h5") || fs::exists(path / rank_file_name(0))) {
    HYDRA_FAIL(InputError, dir << ": an incomplete checkpoint (no COMMIT marker: its save did not finish); "
                               << "it is never loaded");
  }
  HYDRA_FAIL(InputError, dir << ": not a checkpoint (no COMMIT marker, no index.h5)");
}

}  // namespace

std::string rank_file_name(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "rank_%05d.h5", rank);
  return buf;
}

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step_%08lld", static_cast<long long>(step));
  return buf;
}

std::string save_checkpoint(const SaveRequest& req, const parallel::NamedParams& params,
                            const parallel::FlatLayout& layout, const parallel::AdamWState* optim,
                            parallel::Communicator* world_comm) {
  std::vector<const parallel::AdamWState*> optims;
  if (optim) optims.push_back(optim);
  return save_checkpoint(req, params, layout, optims, world_comm);
}

std::string save_checkpoint(const SaveRequest& req, const parallel::NamedParams& params,
                            const parallel::FlatLayout& layout, const std::vector<const parallel::AdamWState*>& optim,
                            parallel::Communicator* world_comm) {
  int64_t optim_step = -1;
  try {
    const std::string file = begin_save(req, world_comm);
    const RankSnapshot snapshot = take_snapshot(req, params, layout, optim);
    optim_step = snapshot.optim_step;
    write_snapshot(snapshot, file);
  } catch (const std::exception& e) {
    throw abandon_save(req, e.what());
  }
  return commit_save(req, optim_step, world_comm);
}

std::string begin_save(const SaveRequest& req, parallel::Communicator* world) {
  const fs::path tmp_dir = fs::path(req.root) / (step_dir_name(req.progress.step) + ".tmp");
  if (req.rank == 0) {
    common::remove_tree(tmp_dir.string());  // a leftover of a save that died
    fs::create_directories(tmp_dir);
  }
  if (world) world->barrier();
  return (tmp_dir / rank_file_name(req.rank)).string();
}

std::string commit_save(const SaveRequest& req, int64_t optim_step, parallel::Communicator* world) {
  const fs::path final_dir = fs::path(req.root) / step_dir_name(req.progress.step);
  const fs::path tmp_dir = fs::path(req.root) / (step_dir_name(req.progress.step) + ".tmp");
  if (world) world->barrier();
  if (req.rank == 0) {
    try {
      publish(req, optim_step, tmp_dir, final_dir);
    } catch (const std::exception& e) {
      throw abandon_save(req, e.what());
    }
    prune(req.root, req.keep);
  }
  if (world) world->barrier();
  return final_dir.string();
}

common::RuntimeFailure abandon_save(const SaveRequest& req, const std::string& error) {
  const fs::path final_dir = fs::path(req.root) / step_dir_name(req.progress.step);
  const fs::path tmp_dir = fs::path(req.root) / (step_dir_name(req.progress.step) + ".tmp");
  std::ostringstream message;
  message << "checkpoint of step " << req.progress.step << " not saved: " << error;
  try {
    common::remove_tree(tmp_dir.string());
    // Renamed but never marked complete: as partial as the .tmp it was.
    if (!fs::exists(final_dir / "COMMIT")) common::remove_tree(final_dir.string());
    message << "; removed the partial " << tmp_dir.string();
  } catch (const std::exception& e) {
    message << "; could not remove the partial " << tmp_dir.string() << " (" << e.what() << ")";
  }
  const std::optional<std::string> latest = find_latest(req.root);
  message << "; " << (latest ? "the last complete checkpoint is " + *latest + " (--resume latest continues from it)"
                             : "no complete checkpoint under " + req.root);
  return common::RuntimeFailure(message.str());
}

LoadedCheckpoint read_index(const std::string& dir) {
  require_committed(dir);
  const H5File f = H5File::open_read((fs::path(dir) / "index.h5").string());
  if (!f.has_attr("/", "format") || f.attr_string("/", "format") != "hydra-checkpoint") {
    HYDRA_FAIL(InputError, f.path() << ": not a hydra checkpoint index");
  }
  const int64_t version = f.attr_int("/", "version");
  if (version != kFormatVersion) {
    HYDRA_FAIL(InputError, f.path() << ": checkpoint format version " << version << ", this build reads version "
                                    << kFormatVersion
                                    << (version < kFormatVersion
                                            ? " (version 1 stored tensor-parallel slices without their offsets and "
                                              "has no catalog); load it with the build that wrote it"
                                            : ""));
  }
  LoadedCheckpoint out;
  out.dir = dir;
  out.progress.step = f.attr_int("/", "step");
  out.progress.consumed_samples = f.attr_int("/", "consumed_samples");
  out.progress.tokens = f.attr_int("/", "tokens");
  out.progress.skipped = f.attr_int("/", "skipped");
  out.config_json = f.attr_string("/", "config");
  if (f.has_attr("/", "file_checksums")) out.files = parse_file_checksums(f.attr_string("/", "file_checksums"), f.path());
  for (const char* key : {"world", "dp", "tp", "pp", "zero_stage", "micro_batches"}) {
    if (f.has_attr("/", std::string("layout_") + key)) out.layout[key] = f.attr_int("/", std::string("layout_") + key);
  }
  if (f.has_attr("/", "optim_step")) out.optim_step = f.attr_int("/", "optim_step");
  out.catalog = parse_catalog(read_catalog(f), f.path());  // its checksum verified
  return out;
}

std::vector<std::string> list_committed(const std::string& root) {
  std::vector<std::string> out;
  const auto done = committed(root);
  for (auto it = done.rbegin(); it != done.rend(); ++it) out.push_back(it->second.string());
  return out;
}

std::optional<std::string> find_latest(const std::string& root) {
  const auto done = committed(root);
  if (done.empty()) return std::nullopt;
  return done.back().second.string();
}

}  // namespace hydra::checkpoint
