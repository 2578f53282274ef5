#include "checkpoint/snapshot.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <unordered_map>

#include "checkpoint/file_checksum.h"
#include "checkpoint/h5_file.h"
#include "checkpoint/host_copy.h"
#include "common/errors.h"

namespace hydra::checkpoint {
namespace {

std::vector<std::pair<std::string, at::Tensor>> optim_tensors(const parallel::AdamWState& s) {
  return {{"master", s.master}, {"exp_avg", s.exp_avg}, {"exp_avg_sq", s.exp_avg_sq}};
}

void add_weight(RankSnapshot& snap, HostCopier& host, const std::string& name, const at::Tensor& param,
                const model::ShardInfo& shard) {
  // Vocabulary padding is never stored: the rows before it only.
  const int64_t rows = param.dim() == 0 ? 1 : stored_rows(shard, param.size(0));
  if (rows == 0) return;
  const at::Tensor value = host.copy(param.dim() == 0 ? param : param.narrow(0, 0, rows));
  CatalogEntry entry{snap.rank, false, name, {shard.offset, shape_of(value), 0, value.numel()}, stored_global_shape(shard)};
  snap.datasets.push_back({"/model/" + name, value, {{"global_shape", entry.global_shape}, {"global_offset", shard.offset}}});
  snap.catalog.push_back(std::move(entry));
}

void add_optim_piece(RankSnapshot& snap, HostCopier& host, const parallel::AdamWState& optim,
                     const parallel::ParamSlot& slot, parallel::Range elements, const model::ShardInfo& shard) {
  if (!slot.shape.empty()) {
    elements.end = std::min(elements.end, stored_rows(shard, slot.shape[0]) * element_count(slot.shape, 1));
  }
  if (elements.end <= elements.begin) return;
  const int64_t start = slot.offset + elements.begin - optim.range.begin;
  const std::vector<int64_t> flat = {elements.begin, elements.end};
  CatalogEntry entry{snap.rank, true, slot.name, {shard.offset, slot.shape, elements.begin, elements.end},
                     stored_global_shape(shard)};
  for (const auto& [group, tensor] : optim_tensors(optim)) {
    snap.datasets.push_back({"/optim/" + group + "/" + slot.name, host.copy(tensor.narrow(0, start, elements.size())),
                             {{"param_shape", slot.shape},
                              {"flat_range", flat},
                              {"global_offset", shard.offset},
                              {"global_shape", entry.global_shape}}});
  }
  snap.catalog.push_back(std::move(entry));
}

}  // namespace

RankSnapshot take_snapshot(const SaveRequest& req, const parallel::NamedParams& params,
                           const parallel::FlatLayout& layout, const std::vector<const parallel::AdamWState*>& optims) {
  HYDRA_CHECK(req.placements.empty() || req.placements.size() == params.size(),
              "SaveRequest: " << req.placements.size() << " placements for " << params.size() << " parameters");
  c10::NoGradGuard no_grad;
  RankSnapshot snap;
  HostCopier host;
  snap.rank = req.rank;
  snap.step = req.progress.step;
  std::unordered_map<std::string, model::ShardInfo> shards;
  for (size_t i = 0; i < params.size(); ++i) {
    shards[params[i].first] = req.placements.empty() ? whole(params[i].second) : req.placements[i];
  }
  for (const auto& [name, param] : params) {
    if (req.write_weights && shards.at(name).primary) add_weight(snap, host, name, param, shards.at(name));
  }
  for (const parallel::AdamWState* optim : optims) {
    for (const auto& piece : parallel::pieces_in(layout, optim->range)) {
      const parallel::ParamSlot& slot = layout.slots[piece.slot];
      const auto it = shards.find(slot.name);
      HYDRA_CHECK(it != shards.end(), "optimizer slot " << slot.name << " is not among the parameters");
      if (it->second.primary) add_optim_piece(snap, host, *optim, slot, piece.elements, it->second);
    }
  }
  host.wait();  // once for all copies: the writer (maybe another thread) reads them next
  // The step count is the same in every state; a device read, after the copies were queued.
  if (!optims.empty()) snap.optim_step = parallel::adamw_steps(*optims.front());
  return snap;
}

void write_snapshot(const RankSnapshot& snap, const std::string& path) {
  H5File f = H5File::create(path);
  f.set_attr("/", "rank", static_cast<int64_t>(snap.rank));
  f.set_attr("/", "step", snap.step);
  if (snap.optim_step >= 0) f.set_attr("/", "optim_step", snap.optim_step);
  for (const auto& d : snap.datasets) {
    f.write_tensor(d.object, d.data);
    for (const auto& [key, value] : d.attrs) f.set_attr(d.object, key, value);
  }
  // Last: a file whose catalog reads back completely was written completely.
  write_catalog(f, format_catalog(snap.catalog));
  f.close();
  fsync_path(path);
  write_checksum_sidecar(path);  // for the index (file_checksum.h)
}

}  // namespace hydra::checkpoint
