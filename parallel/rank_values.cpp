#include "parallel/rank_values.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include "common/errors.h"

namespace hydra::parallel {

std::vector<std::vector<double>> gather_rank_values(Communicator& world, const std::vector<double>& values,
                                                    const at::Device& device) {
  const auto count = static_cast<int64_t>(values.size());
  HYDRA_CHECK(count > 0, "gather_rank_values: nothing to gather");
  // A copy (clone): from_blob does not own the vector's storage.
  const at::Tensor mine = at::from_blob(const_cast<double*>(values.data()), {count}, at::kDouble).clone().to(device);
  at::Tensor all = at::empty({count * world.size()}, mine.options());
  world.all_gather(mine, all);  // equal parts of `count`: part r is rank r's
  const at::Tensor host = all.to(at::kCPU).contiguous();
  const double* p = host.data_ptr<double>();
  std::vector<std::vector<double>> out(static_cast<size_t>(world.size()));
  for (int r = 0; r < world.size(); ++r) out[static_cast<size_t>(r)].assign(p + r * count, p + (r + 1) * count);
  return out;
}

}  // namespace hydra::parallel
