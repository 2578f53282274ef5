#include "checkpoint/rank_files.h"

#include <filesystem>

#include "checkpoint/checkpoint.h"
#include "common/errors.h"

namespace hydra::checkpoint {

const H5File& RankFiles::get(int rank) {
  auto it = files_.find(rank);
  if (it == files_.end()) {
    const std::string path = (std::filesystem::path(dir_) / rank_file_name(rank)).string();
    const auto sum = checksums_.find(rank_file_name(rank));
    if (sum != checksums_.end()) check_file_size(path, sum->second);
    it = files_.emplace(rank, H5File::open_read(path)).first;
  }
  return it->second;
}

std::string object_of(const CatalogEntry& e, const std::string& group) {
  return e.optim ? "/optim/" + group + "/" + e.name : "/model/" + e.name;
}

at::Tensor read_part(RankFiles& files, const CatalogEntry& e, const std::string& group) {
  const H5File& f = files.get(e.file);
  const at::Tensor data = f.read_tensor(object_of(e, group));
  if (data.numel() != e.part.end - e.part.begin) {
    HYDRA_FAIL(common::InputError, f.path() << ": " << object_of(e, group) << " has " << data.numel()
                                            << " elements, the index's catalog says " << e.part.end - e.part.begin);
  }
  return data;
}

}  // namespace hydra::checkpoint
