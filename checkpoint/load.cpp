// load_checkpoint: every rank assembles each of its tensors from the stored parts that
// overlap it, found in the index's catalog (checkpoint/catalog.h), whatever layout wrote them.
// Only the files and datasets that overlap are read, and of each only the range of elements
// that meets this rank's rows (widened to whole CRC blocks, which are checked: h5_file.h).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <map>
#include <unordered_map>

#include "checkpoint/catalog.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/h5_file.h"
#include "checkpoint/rank_files.h"
#include "checkpoint/regions.h"
#include "common/errors.h"

namespace hydra::checkpoint {
namespace {

using common::InputError;

// The catalog entries of each parameter, weights and optimizer state apart.
struct Parts {
  std::unordered_map<std::string, std::vector<const CatalogEntry*>> model, optim;
};

// The parts of `name`, after checking that they describe the same whole parameter.
const std::vector<const CatalogEntry*>& parts_of(const std::unordered_map<std::string, std::vector<const CatalogEntry*>>& all,
                                                 const std::string& dir, const std::string& name, const char* what,
                                                 const std::vector<int64_t>& global) {
  const auto it = all.find(name);
  if (it == all.end()) {
    HYDRA_FAIL(InputError, dir << ": " << what << " of parameter " << name
                               << " is missing (checkpoint of another model, or saved without it?)");
  }
  for (const CatalogEntry* e : it->second) {
    if (e->global_shape != global) {
      HYDRA_FAIL(InputError, dir << "/" << rank_file_name(e->file) << ": " << object_of(*e) << " has shape "
                                 << shape_text(e->global_shape) << ", the model expects " << shape_text(global)
                                 << " (checkpoint of another model shape)");
    }
  }
  return it->second;
}

void fail_incomplete(const std::string& dir, const std::string& name, const char* what, int64_t missing, int64_t total) {
  HYDRA_FAIL(InputError, dir << ": " << what << " of " << name << " is incomplete (" << total - missing << " of " << total
                             << " elements found): a rank file is missing parts");
}

// The stored part that is exactly `target` (same place, shape and element range), if any: a
// resume into the layout that saved. It is copied straight in, without the assembler's
// zero-filled staging and coverage masks (several passes over every byte, about half the
// load time of a same-layout resume).
const CatalogEntry* exact_part(const std::vector<const CatalogEntry*>& sources, const FlatPart& target) {
  for (const CatalogEntry* e : sources) {
    const FlatPart& p = e->part;
    if (p.origin == target.origin && p.shape == target.shape && p.begin == target.begin && p.end == target.end) return e;
  }
  return nullptr;
}

void load_weight(const std::string& dir, RankFiles& files, const Parts& parts, const std::string& name,
                 const at::Tensor& param, const model::ShardInfo& shard) {
  const std::vector<int64_t> global = stored_global_shape(shard);
  const auto& sources = parts_of(parts.model, dir, name, "the weights", global);
  const FlatPart target{shard.offset, shape_of(param), 0, param.numel()};
  if (const CatalogEntry* e = exact_part(sources, target)) {
    param.detach().copy_(read_part(files, *e).view(param.sizes()));
    return;
  }
  PartAssembler assembler(target, global, 1, param.scalar_type());
  for (const CatalogEntry* e : sources) {
    const FlatPart sub = assembler.needed(e->part);
    if (sub.end > sub.begin) assembler.add(sub, {read_part(files, *e, sub)});
  }
  if (assembler.missing() > 0) fail_incomplete(dir, name, "the weights", assembler.missing(), param.numel());
  param.detach().copy_(assembler.result(0).view(param.sizes()));
}

void load_optim_piece(const std::string& dir, RankFiles& files, const Parts& parts, parallel::AdamWState& optim,
                      const parallel::ParamSlot& slot, const parallel::Range& elements, const model::ShardInfo& shard) {
  const std::vector<int64_t> global = stored_global_shape(shard);
  const auto& sources = parts_of(parts.optim, dir, slot.name, "the optimizer state", global);
  const FlatPart target{shard.offset, slot.shape, elements.begin, elements.end};
  const int64_t start = slot.offset + elements.begin - optim.range.begin;
  if (const CatalogEntry* e = exact_part(sources, target)) {
    optim.master.narrow(0, start, elements.size()).copy_(read_part(files, *e, "master"));
    optim.exp_avg.narrow(0, start, elements.size()).copy_(read_part(files, *e, "exp_avg"));
    optim.exp_avg_sq.narrow(0, start, elements.size()).copy_(read_part(files, *e, "exp_avg_sq"));
    return;
  }
  PartAssembler assembler(target, global, 3, at::kFloat);
  for (const CatalogEntry* e : sources) {
    // E.g. a ZeRO rank of 8 loading a checkpoint saved without ZeRO reads 1/8 of each part.
    const FlatPart sub = assembler.needed(e->part);
    if (sub.end == sub.begin) continue;
    assembler.add(sub, {read_part(files, *e, sub, "master"), read_part(files, *e, sub, "exp_avg"),
                        read_part(files, *e, sub, "exp_avg_sq")});
  }
  if (assembler.missing() > 0) fail_incomplete(dir, slot.name, "the optimizer state", assembler.missing(), elements.size());
  optim.master.narrow(0, start, elements.size()).copy_(assembler.result(0));
  optim.exp_avg.narrow(0, start, elements.size()).copy_(assembler.result(1));
  optim.exp_avg_sq.narrow(0, start, elements.size()).copy_(assembler.result(2));
}

}  // namespace

LoadedCheckpoint load_checkpoint(const std::string& dir, const parallel::NamedParams& params,
                                 const parallel::FlatLayout& layout, parallel::AdamWState* optim,
                                 const std::vector<model::ShardInfo>& placements) {
  std::vector<parallel::AdamWState*> optims;
  if (optim) optims.push_back(optim);
  return load_checkpoint(dir, params, layout, optims, placements);
}

LoadedCheckpoint load_checkpoint(const std::string& dir, const parallel::NamedParams& params,
                                 const parallel::FlatLayout& layout, const std::vector<parallel::AdamWState*>& optims,
                                 const std::vector<model::ShardInfo>& placements) {
  HYDRA_CHECK(placements.empty() || placements.size() == params.size(),
              "load_checkpoint: " << placements.size() << " placements for " << params.size() << " parameters");
  LoadedCheckpoint ckpt = read_index(dir);
  Parts parts;
  for (const auto& e : ckpt.catalog) (e.optim ? parts.optim : parts.model)[e.name].push_back(&e);
  RankFiles files(dir, ckpt.files);
  std::unordered_map<std::string, model::ShardInfo> shards;

  c10::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& [name, param] = params[i];
    const model::ShardInfo shard = placements.empty() ? whole(param) : placements[i];
    load_weight(dir, files, parts, name, param, shard);
    shards[name] = shard;
  }
  if (!optims.empty() && ckpt.optim_step < 0) {
    HYDRA_FAIL(InputError, dir << ": holds no optimizer state (saved weights only); use --init-from for weights");
  }
  for (parallel::AdamWState* optim : optims) {
    // Every state gets the step count, also one whose range is empty (a ZeRO rank may own
    // nothing of a small bucket), so that all stay in step.
    parallel::set_adamw_steps(*optim, ckpt.optim_step);
    for (const auto& piece : parallel::pieces_in(layout, optim->range)) {
      const parallel::ParamSlot& slot = layout.slots[piece.slot];
      const auto it = shards.find(slot.name);
      HYDRA_CHECK(it != shards.end(), "optimizer slot " << slot.name << " is not among the parameters");
      load_optim_piece(dir, files, parts, *optim, slot, piece.elements, it->second);
    }
  }
  ckpt.bytes_read = files.bytes_read();
  return ckpt;
}

}  // namespace hydra::checkpoint
