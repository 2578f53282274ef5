#include "checkpoint/regions.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "common/errors.h"

namespace hydra::checkpoint {
namespace {

// A 0-dim tensor is one element: a box of shape [1], so that rows always exist.
FlatPart with_rows(FlatPart p) {
  if (p.shape.empty()) {
    p.shape = {1};
    p.origin = {0};
  }
  return p;
}

// The whole rows of p's box that its flat range touches, and where the range starts in them.
FlatPart row_box(const FlatPart& part, int64_t* skip) {
  FlatPart box = with_rows(part);
  const int64_t inner = element_count(box.shape, 1);
  int64_t first = 0, last = 0;
  if (inner > 0 && part.end > part.begin) {
    first = part.begin / inner;
    last = (part.end + inner - 1) / inner;
  }
  box.origin[0] += first;
  box.shape[0] = last - first;
  box.begin = 0;
  box.end = element_count(box.shape);
  if (skip) *skip = part.begin - first * inner;
  return box;
}

// The intersection of two boxes (lo, len per dimension); false when empty.
bool intersect(const FlatPart& a, const FlatPart& b, std::vector<int64_t>& lo, std::vector<int64_t>& len) {
  if (a.shape.size() != b.shape.size()) return false;
  lo.assign(a.shape.size(), 0);
  len.assign(a.shape.size(), 0);
  for (size_t d = 0; d < a.shape.size(); ++d) {
    lo[d] = std::max(a.origin[d], b.origin[d]);
    const int64_t hi = std::min(a.origin[d] + a.shape[d], b.origin[d] + b.shape[d]);
    if (hi <= lo[d]) return false;
    len[d] = hi - lo[d];
  }
  return true;
}

// The view of `t` (laid out as `box`) on the region lo/len of the whole parameter.
at::Tensor region(at::Tensor t, const FlatPart& box, const std::vector<int64_t>& lo, const std::vector<int64_t>& len) {
  for (size_t d = 0; d < lo.size(); ++d) t = t.narrow(static_cast<int64_t>(d), lo[d] - box.origin[d], len[d]);
  return t;
}

}  // namespace

std::vector<int64_t> stored_global_shape(const model::ShardInfo& shard) {
  std::vector<int64_t> shape = shard.global_shape;
  if (shard.valid_rows >= 0 && !shape.empty()) shape[0] = std::min(shape[0], shard.valid_rows);
  return shape;
}

int64_t stored_rows(const model::ShardInfo& shard, int64_t rows) {
  if (shard.valid_rows < 0 || shard.offset.empty()) return rows;
  return std::clamp<int64_t>(shard.valid_rows - shard.offset[0], 0, rows);
}

model::ShardInfo whole(const at::Tensor& tensor) {
  model::ShardInfo s;
  s.global_shape.assign(tensor.sizes().begin(), tensor.sizes().end());
  s.offset.assign(tensor.dim(), 0);
  return s;
}

std::vector<int64_t> shape_of(const at::Tensor& tensor) { return {tensor.sizes().begin(), tensor.sizes().end()}; }

int64_t element_count(const std::vector<int64_t>& shape, size_t from_dim) {
  int64_t n = 1;
  for (size_t i = from_dim; i < shape.size(); ++i) n *= shape[i];
  return n;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

PartAssembler::PartAssembler(const FlatPart& target, const std::vector<int64_t>& stored_global, int tensors,
                             at::ScalarType dtype)
    : size_(target.end - target.begin) {
  box_ = row_box(target, &skip_);
  for (int i = 0; i < tensors; ++i) values_.push_back(at::zeros(box_.shape, at::TensorOptions().dtype(dtype)));
  // Padding (outside the stored whole parameter) is covered by definition: it stays zero.
  covered_ = at::ones(box_.shape, at::TensorOptions().dtype(at::kBool));
  FlatPart stored = with_rows({std::vector<int64_t>(stored_global.size(), 0), stored_global, 0, 0});
  std::vector<int64_t> lo, len;
  if (intersect(box_, stored, lo, len)) region(covered_, box_, lo, len).fill_(false);
}

bool PartAssembler::overlaps(const FlatPart& source) const {
  std::vector<int64_t> lo, len;
  return intersect(box_, row_box(source, nullptr), lo, len);
}

FlatPart PartAssembler::needed(const FlatPart& source) const {
  FlatPart out = source;
  std::vector<int64_t> lo, len;
  if (!intersect(box_, row_box(source, nullptr), lo, len)) {
    out.end = out.begin;
    return out;
  }
  // The overlap is a box inside source's box: in row-major order all of its elements lie
  // between its first corner and its last.
  const FlatPart box = with_rows(source);
  int64_t first = 0, last = 0, stride = 1;
  for (size_t d = box.shape.size(); d-- > 0;) {
    first += (lo[d] - box.origin[d]) * stride;
    last += (lo[d] + len[d] - 1 - box.origin[d]) * stride;
    stride *= box.shape[d];
  }
  out.begin = std::max(source.begin, first);
  out.end = std::max(out.begin, std::min(source.end, last + 1));
  return out;
}

void PartAssembler::add(const FlatPart& source, const std::vector<at::Tensor>& data) {
  int64_t skip = 0;
  const FlatPart box = row_box(source, &skip);
  std::vector<int64_t> lo, len;
  if (!intersect(box_, box, lo, len)) return;
  const int64_t count = source.end - source.begin;
  for (size_t i = 0; i < values_.size(); ++i) {
    HYDRA_CHECK(data[i].numel() == count, "stored part has " << data[i].numel() << " elements, expected " << count);
  }
  if (skip == 0 && count == element_count(box.shape)) {
    // The part fills whole rows (every weight, most optimizer parts): copy the overlap
    // directly, without staging it and masking the elements the part lacks.
    for (size_t i = 0; i < values_.size(); ++i) {
      region(values_[i], box_, lo, len).copy_(region(data[i].reshape(box.shape), box, lo, len));
    }
    region(covered_, box_, lo, len).fill_(true);
    return;
  }
  at::Tensor mask = at::zeros(box.shape, at::TensorOptions().dtype(at::kBool));
  mask.view({-1}).narrow(0, skip, count).fill_(true);
  const at::Tensor mask_view = region(mask, box, lo, len);
  for (size_t i = 0; i < values_.size(); ++i) {
    at::Tensor staged = at::zeros(box.shape, values_[i].options());
    staged.view({-1}).narrow(0, skip, count).copy_(data[i].reshape({-1}));
    at::Tensor dst = region(values_[i], box_, lo, len);
    dst.copy_(at::where(mask_view, region(staged, box, lo, len), dst));
  }
  at::Tensor covered = region(covered_, box_, lo, len);
  covered.logical_or_(mask_view);
}

int64_t PartAssembler::missing() const {
  if (size_ == 0) return 0;
  return size_ - covered_.reshape({-1}).narrow(0, skip_, size_).sum().item<int64_t>();
}

at::Tensor PartAssembler::result(int i) const { return values_[i].reshape({-1}).narrow(0, skip_, size_); }

}  // namespace hydra::checkpoint
