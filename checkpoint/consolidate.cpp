#include "checkpoint/consolidate.h"

#include <cstdio>
#include <filesystem>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5_file.h"
#include "common/errors.h"

namespace hydra::checkpoint {

int consolidate_checkpoint(const std::string& dir, const std::string& output) {
  const LoadedCheckpoint index = read_index(dir);
  const int64_t tp = index.layout.count("tp") ? index.layout.at("tp") : 1;
  const int64_t pp = index.layout.count("pp") ? index.layout.at("pp") : 1;
  if (tp > 1 || pp > 1) {
    HYDRA_FAIL(common::InputError, dir << ": saved with tp " << tp << ", pp " << pp
                                       << "; consolidating sharded weights is not available yet");
  }
  // Without tensor or pipeline parallelism every rank file holds every weight whole: the
  // first one is enough (its checksums are verified as it is read).
  const H5File source = H5File::open_read((std::filesystem::path(dir) / "rank_00000.h5").string());
  const std::string tmp = output + ".tmp";
  int count = 0;
  {
    H5File out = H5File::create(tmp);
    out.set_attr("/", "format", std::string("hydra-weights"));
    out.set_attr("/", "version", int64_t{1});
    out.set_attr("/", "step", index.progress.step);
    out.set_attr("/", "tokens", index.progress.tokens);
    out.set_attr("/", "config", index.config_yaml);
    out.set_attr("/", "source", dir);
    for (const auto& name : source.list("/model")) {
      out.write_tensor("/model/" + name, source.read_tensor("/model/" + name));
      ++count;
    }
    out.close();
  }
  fsync_path(tmp);
  std::filesystem::rename(tmp, output);
  return count;
}

}  // namespace hydra::checkpoint
