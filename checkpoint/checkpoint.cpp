#include "checkpoint/checkpoint.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "checkpoint/h5_file.h"
#include "common/errors.h"
#include "common/logging.h"

namespace hydra::checkpoint {
namespace {

namespace fs = std::filesystem;
using common::InputError;


std::vector<int64_t> shape_of(const at::Tensor& t) { return {t.sizes().begin(), t.sizes().end()}; }

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The optimizer tensors of one state by their group name in the file. Tensor handles share
// storage, so loading writes through them into the state.
std::vector<std::pair<std::string, at::Tensor>> optim_tensors(const parallel::AdamWState& s) {
  return {{"master", s.master}, {"exp_avg", s.exp_avg}, {"exp_avg_sq", s.exp_avg_sq}};
}

void write_rank_file(const std::string& path, const SaveRequest& req, const parallel::NamedParams& params,
                     const parallel::FlatLayout& layout, const std::vector<const parallel::AdamWState*>& optims) {
  H5File f = H5File::create(path);
  f.set_attr("/", "rank", static_cast<int64_t>(req.rank));
  f.set_attr("/", "step", req.progress.step);
  for (size_t i = 0; req.write_weights && i < params.size(); ++i) {
    const at::Tensor value = params[i].second.detach().cpu().contiguous();
    const std::string object = "/model/" + params[i].first;
    f.write_tensor(object, value);
    // Parameter space: this rank holds the whole parameter (tensor parallelism will store
    // its slice here with the slice's offsets).
    f.set_attr(object, "global_shape", shape_of(value));
    f.set_attr(object, "global_offset", std::vector<int64_t>(value.dim(), 0));
  }
  for (const parallel::AdamWState* optim : optims) {
    f.set_attr("/", "optim_step", optim->step);  // the same in every state
    for (const auto& piece : parallel::pieces_in(layout, optim->range)) {
      const parallel::ParamSlot& slot = layout.slots[piece.slot];
      const int64_t start = slot.offset + piece.elements.begin - optim->range.begin;
      for (const auto& [group, tensor] : optim_tensors(*optim)) {
        const std::string object = "/optim/" + group + "/" + slot.name;
        f.write_tensor(object, tensor.narrow(0, start, piece.elements.size()).cpu().contiguous());
        f.set_attr(object, "param_shape", slot.shape);
        f.set_attr(object, "flat_range", std::vector<int64_t>{piece.elements.begin, piece.elements.end});
      }
    }
  }
  f.close();
  fsync_path(path);
}

void write_index(const std::string& path, const SaveRequest& req) {
  H5File f = H5File::create(path);
  f.set_attr("/", "format", std::string("hydra-checkpoint"));
  f.set_attr("/", "version", static_cast<int64_t>(kFormatVersion));
  f.set_attr("/", "step", req.progress.step);
  f.set_attr("/", "consumed_samples", req.progress.consumed_samples);
  f.set_attr("/", "tokens", req.progress.tokens);
  f.set_attr("/", "skipped", req.progress.skipped);
  f.set_attr("/", "config", req.config_yaml);
  for (const auto& [key, value] : req.layout) f.set_attr("/", "layout_" + key, value);
  std::string files;
  for (int r = 0; r < req.world; ++r) files += (r ? "\n" : "") + rank_file_name(r);
  f.set_attr("/", "files", files);
  f.close();
  fsync_path(path);
}

void write_commit_marker(const std::string& dir) {
  const std::string marker = dir + "/COMMIT";
  {
    std::ofstream out(marker, std::ios::trunc);
    out << "complete\n";
    if (!out) HYDRA_FAIL(common::RuntimeFailure, marker << ": cannot write the commit marker");
  }
  fsync_path(marker);
  fsync_path(dir);
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
    fs::remove_all(done.front().second);
    done.erase(done.begin());
  }
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
  const fs::path final_dir = fs::path(req.root) / step_dir_name(req.progress.step);
  const fs::path tmp_dir = fs::path(req.root) / (step_dir_name(req.progress.step) + ".tmp");
  if (req.rank == 0) {
    fs::remove_all(tmp_dir);  // a leftover of a save that died
    fs::create_directories(tmp_dir);
  }
  if (world_comm) world_comm->barrier();
  write_rank_file((tmp_dir / rank_file_name(req.rank)).string(), req, params, layout, optim);
  if (world_comm) world_comm->barrier();
  if (req.rank == 0) {
    write_index((tmp_dir / "index.h5").string(), req);
    fsync_path(tmp_dir.string());
    fs::remove_all(final_dir);  // an uncommitted directory of the same step
    fs::rename(tmp_dir, final_dir);
    write_commit_marker(final_dir.string());
    prune(req.root, req.keep);
  }
  if (world_comm) world_comm->barrier();
  return final_dir.string();
}

LoadedCheckpoint read_index(const std::string& dir) {
  if (!fs::exists(fs::path(dir) / "COMMIT")) {
    HYDRA_FAIL(InputError, dir << ": not a complete checkpoint (no COMMIT marker)");
  }
  const H5File f = H5File::open_read((fs::path(dir) / "index.h5").string());
  if (!f.has_attr("/", "format") || f.attr_string("/", "format") != "hydra-checkpoint") {
    HYDRA_FAIL(InputError, f.path() << ": not a hydra checkpoint index");
  }
  const int64_t version = f.attr_int("/", "version");
  if (version != kFormatVersion) {
    HYDRA_FAIL(InputError, f.path() << ": checkpoint format version " << version << ", this build reads "
                                    << kFormatVersion);
  }
  LoadedCheckpoint out;
  out.dir = dir;
  out.progress.step = f.attr_int("/", "step");
  out.progress.consumed_samples = f.attr_int("/", "consumed_samples");
  out.progress.tokens = f.attr_int("/", "tokens");
  out.progress.skipped = f.attr_int("/", "skipped");
  out.config_yaml = f.attr_string("/", "config");
  for (const char* key : {"world", "dp", "tp", "pp", "zero_stage", "micro_batches"}) {
    if (f.has_attr("/", std::string("layout_") + key)) out.layout[key] = f.attr_int("/", std::string("layout_") + key);
  }
  return out;
}

LoadedCheckpoint load_checkpoint(const std::string& dir, const parallel::NamedParams& params,
                                 const parallel::FlatLayout& layout, parallel::AdamWState* optim, TpPosition tp) {
  std::vector<parallel::AdamWState*> optims;
  if (optim) optims.push_back(optim);
  return load_checkpoint(dir, params, layout, optims, tp);
}

LoadedCheckpoint load_checkpoint(const std::string& dir, const parallel::NamedParams& params,
                                 const parallel::FlatLayout& layout, const std::vector<parallel::AdamWState*>& optims,
                                 TpPosition tp) {
  LoadedCheckpoint ckpt = read_index(dir);
  const int64_t world = ckpt.layout.count("world") ? ckpt.layout.at("world") : 1;
  // Tensor-parallel slices are stored under the parameter's name with zero offsets (their
  // global placement is not written yet), so they load only into the same tp size, each
  // rank reading the files of the ranks that had its tp coordinate (tp is the fastest grid
  // axis: rank r had tp coordinate r % tp). Any dp size and ZeRO stage still load.
  const int64_t saved_tp = ckpt.layout.count("tp") ? ckpt.layout.at("tp") : 1;
  if (saved_tp != tp.size) {
    HYDRA_FAIL(InputError, dir << ": saved with parallel.tp " << saved_tp << ", loading with parallel.tp " << tp.size
                               << "; load it with parallel.tp " << saved_tp
                               << " (resharding tensor-parallel checkpoints is not available yet)");
  }
  std::vector<H5File> files;
  for (int64_t r = 0; r < world; ++r) {
    if (r % saved_tp != tp.rank) continue;
    files.push_back(H5File::open_read((fs::path(dir) / rank_file_name(static_cast<int>(r))).string()));
  }

  c10::NoGradGuard no_grad;
  for (const auto& [name, param] : params) {
    const std::string object = "/model/" + name;
    const H5File* holder = nullptr;
    for (const auto& f : files) {
      if (f.exists(object)) { holder = &f; break; }
    }
    if (!holder) HYDRA_FAIL(InputError, dir << ": parameter " << name << " is missing (checkpoint of another model?)");
    const std::vector<int64_t> stored = holder->dataset_shape(object);
    if (stored != shape_of(param)) {
      HYDRA_FAIL(InputError, holder->path() << ": " << object << " has shape " << shape_text(stored)
                                            << ", the model expects " << shape_text(shape_of(param))
                                            << " (checkpoint of another model shape)");
    }
    param.detach().copy_(holder->read_tensor(object));
  }
  // Optimizer state: copy every stored flat piece that overlaps a range this rank owns. The
  // step count is the same in every file; set it on every state, including those whose range
  // is empty (a ZeRO rank may own nothing of a small bucket), so that all stay in step.
  for (const auto& f : files) {
    if (!f.has_attr("/", "optim_step")) continue;
    for (parallel::AdamWState* optim : optims) optim->step = f.attr_int("/", "optim_step");
    break;
  }
  for (parallel::AdamWState* optim : optims) {
    for (const auto& piece : parallel::pieces_in(layout, optim->range)) {
      const parallel::ParamSlot& slot = layout.slots[piece.slot];
      int64_t covered = 0;
      for (const auto& f : files) {
        if (!f.exists("/optim/master/" + slot.name)) continue;
        const std::vector<int64_t> range = f.attr_ints("/optim/master/" + slot.name, "flat_range");
        const int64_t begin = std::max(range[0], piece.elements.begin);
        const int64_t end = std::min(range[1], piece.elements.end);
        if (begin >= end) continue;
        for (const auto& [group, tensor] : optim_tensors(*optim)) {
          const at::Tensor stored = f.read_tensor("/optim/" + group + "/" + slot.name);
          tensor.narrow(0, slot.offset + begin - optim->range.begin, end - begin)
              .copy_(stored.narrow(0, begin - range[0], end - begin));
        }
        covered += end - begin;
      }
      if (covered != piece.elements.size()) {
        HYDRA_FAIL(InputError, dir << ": optimizer state of " << slot.name << " is incomplete ("
                                   << covered << " of " << piece.elements.size() << " elements found)");
      }
    }
  }
  return ckpt;
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
