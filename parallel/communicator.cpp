#include "parallel/communicator.h"

#include <algorithm>

#include "common/errors.h"

namespace hydra::parallel {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMax: return "max";
  }
  return "?";
}

Range shard_range(int64_t numel, int parts, int index) {
  HYDRA_CHECK(numel >= 0, "numel " << numel);
  HYDRA_CHECK(parts >= 1 && index >= 0 && index < parts, "part " << index << " of " << parts);
  // The first numel % parts parts get one extra element, so sizes differ by at most one and
  // every part's begin is a closed form (no prefix sum over the other parts).
  const int64_t base = numel / parts;
  const int64_t extra = numel % parts;
  Range r;
  r.begin = index * base + std::min<int64_t>(index, extra);
  r.end = r.begin + base + (index < extra ? 1 : 0);
  return r;
}

void Communicator::check_tensor(const at::Tensor& t, const char* op, const char* what) const {
  using common::RuntimeFailure;
  if (!t.defined()) {
    HYDRA_FAIL(RuntimeFailure, op << " on '" << name() << "': " << what << " is undefined");
  }
  if (const std::string refusal = device_refusal(t.device()); !refusal.empty()) {
    HYDRA_FAIL(RuntimeFailure, op << " on '" << name() << "': " << what << " is on " << t.device() << "; " << refusal);
  }
  if (!t.is_contiguous()) {
    HYDRA_FAIL(RuntimeFailure, op << " on '" << name() << "': " << what << " must be contiguous");
  }
  const auto type = t.scalar_type();
  if (type != at::kFloat && type != at::kDouble && type != at::kBFloat16) {
    HYDRA_FAIL(RuntimeFailure, op << " on '" << name() << "': " << what << " has dtype " << type
                                  << "; supported: float, double, bfloat16");
  }
}

void Communicator::check_peer(int peer, const char* op, const char* what) const {
  if (peer < 0 || peer >= size()) {
    HYDRA_FAIL(common::RuntimeFailure, op << " on '" << name() << "': " << what << " " << peer
                                          << " is not a rank of this group of " << size());
  }
}

}  // namespace hydra::parallel
