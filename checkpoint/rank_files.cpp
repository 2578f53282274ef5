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

int64_t RankFiles::bytes_read() const {
  int64_t total = 0;
  for (const auto& [rank, file] : files_) total += file.bytes_read();
  return total;
}

at::Tensor read_part(RankFiles& files, const CatalogEntry& e, const std::string& group) {
  return read_part(files, e, e.part, group);
}

at::Tensor read_part(RankFiles& files, const CatalogEntry& e, const FlatPart& sub, const std::string& group) {
  HYDRA_CHECK(e.part.begin <= sub.begin && sub.begin <= sub.end && sub.end <= e.part.end,
              "read_part: [" << sub.begin << ", " << sub.end << ") is not within [" << e.part.begin << ", "
                             << e.part.end << ")");
  const H5File& f = files.get(e.file);
  const std::string object = object_of(e, group);
  // The dataset must be the part the catalog describes before any range of it means anything.
  const int64_t stored = element_count(f.dataset_shape(object));
  if (stored != e.part.end - e.part.begin) {
    HYDRA_FAIL(common::InputError, f.path() << ": " << object << " has " << stored
                                            << " elements, the index's catalog says " << e.part.end - e.part.begin);
  }
  if (sub.begin == e.part.begin && sub.end == e.part.end) return f.read_tensor(object).reshape({-1});
  return f.read_range(object, sub.begin - e.part.begin, sub.end - e.part.begin);
}

}  // namespace hydra::checkpoint
