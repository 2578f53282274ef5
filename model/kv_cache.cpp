#include "model/kv_cache.h"

#include <ATen/ATen.h>

#include "common/errors.h"

namespace hydra::model {
namespace {

int64_t tokens_of(const at::Tensor& t) { return t.defined() ? t.size(1) : 0; }
int64_t bytes_of(const at::Tensor& t) { return t.defined() ? static_cast<int64_t>(t.nbytes()) : 0; }

}  // namespace

int64_t cached_tokens(const AttentionCache& cache) {
  if (const auto* c = std::get_if<GqaCache>(&cache)) return tokens_of(c->k);
  if (const auto* c = std::get_if<CcqaCache>(&cache)) return tokens_of(c->k);
  return tokens_of(std::get<MlaCache>(cache).latent);
}

int64_t cached_bytes(const AttentionCache& cache) {
  if (const auto* c = std::get_if<GqaCache>(&cache)) return bytes_of(c->k) + bytes_of(c->v);
  if (const auto* c = std::get_if<CcqaCache>(&cache)) return bytes_of(c->k) + bytes_of(c->v);
  return bytes_of(std::get<MlaCache>(cache).latent);
}

at::Tensor append_tokens(const at::Tensor& old, const at::Tensor& fresh) {
  return old.defined() ? at::cat({old, fresh}, 1) : fresh.contiguous();
}

// ---------------------------------------------------------------------------------------------
// The rows of a batch (CacheRows).
namespace {

int64_t batch_rows(const CacheRows& rows) { return rows.count.size(0); }

// fresh's trailing shape behind `lead` (the leading sizes of a rows tensor).
std::vector<int64_t> rows_shape(std::vector<int64_t> lead, const at::Tensor& fresh, int64_t skip) {
  for (int64_t d = skip; d < fresh.dim(); ++d) lead.push_back(fresh.size(d));
  return lead;
}

// Row `row` of slots takes one's tokens ([1, n, ...]; undefined: none).
void copy_tokens(at::Tensor& slots, const CacheRows& rows, int64_t row, const at::Tensor& one) {
  if (!one.defined()) return;
  HYDRA_CHECK(one.size(1) <= rows.capacity, "a cache of " << one.size(1) << " tokens into rows of " << rows.capacity);
  if (!slots.defined()) slots = at::zeros(rows_shape({batch_rows(rows), rows.capacity}, one, 2), one.options());
  slots.select(0, row).narrow(0, 0, one.size(1)).copy_(one.select(0, 0));
}

// Row `row` of a fixed state takes one's ([1, ...]; undefined: zeros, the state before any token).
void copy_state(at::Tensor& state, const CacheRows& rows, int64_t row, const at::Tensor& one) {
  if (!one.defined()) {
    if (state.defined()) state.select(0, row).zero_();
    return;
  }
  if (!state.defined()) state = at::zeros(rows_shape({batch_rows(rows)}, one, 1), one.options());
  state.select(0, row).copy_(one.select(0, 0));
}

// Bytes of one slot of a per-token tensor (0 while unallocated).
int64_t slot_bytes(const at::Tensor& slots) {
  if (!slots.defined()) return 0;
  return static_cast<int64_t>(slots.nbytes()) / (slots.size(0) * slots.size(1));
}

int64_t bytes_per_slot(const CacheRows& rows) {
  if (const auto* c = std::get_if<GqaCache>(&rows.tensors)) return slot_bytes(c->k) + slot_bytes(c->v);
  if (const auto* c = std::get_if<CcqaCache>(&rows.tensors)) return slot_bytes(c->k) + slot_bytes(c->v);
  return slot_bytes(std::get<MlaCache>(rows.tensors).latent);
}

}  // namespace

void allocate_slots(at::Tensor& slots, const CacheRows& rows, const at::Tensor& fresh) {
  if (!slots.defined()) slots = at::zeros(rows_shape({batch_rows(rows), rows.capacity}, fresh, 1), fresh.options());
}

void put_rows(at::Tensor& slots, const CacheRows& rows, const at::Tensor& fresh) {
  const int64_t B = batch_rows(rows);
  HYDRA_CHECK(fresh.size(0) == B, "put_rows: " << fresh.size(0) << " tokens for " << B << " rows");
  allocate_slots(slots, rows, fresh);
  // Slot count[b] of row b is entry b * capacity + count[b] of the rows flattened.
  const at::Tensor flat = at::arange(B, rows.count.options()) * rows.capacity + rows.count;
  slots.view({B * rows.capacity, -1}).index_copy_(0, flat, fresh.reshape({B, -1}).to(slots.scalar_type()));
}

void keep_where(at::Tensor& state, const at::Tensor& fresh, const at::Tensor& write) {
  if (!state.defined()) state = at::zeros_like(fresh);
  std::vector<int64_t> shape(static_cast<size_t>(fresh.dim()), 1);
  shape[0] = write.size(0);
  at::where_out(state, write.view(shape), fresh, state);  // in place: one kernel, no temporary
}

const at::Tensor& state_or_zeros(at::Tensor& state, const at::Tensor& like) {
  if (!state.defined()) state = at::zeros_like(like);
  return state;
}

at::Tensor visible_slots(const CacheRows& rows, int64_t span) {
  return at::arange(span, rows.count.options()).unsqueeze(0) <= rows.count.unsqueeze(1);
}

// The bool mask adds as 0/1 inside the one kernel (no int64 copy of it first).
void advance_rows(CacheRows& rows, const at::Tensor& write) { rows.count.add_(write); }

void load_row(CacheRows& rows, int64_t row, const AttentionCache& one) {
  HYDRA_CHECK(rows.tensors.index() == one.index(), "load_row: a cache of another attention type");
  if (auto* c = std::get_if<GqaCache>(&rows.tensors)) {
    const GqaCache& o = std::get<GqaCache>(one);
    copy_tokens(c->k, rows, row, o.k);
    copy_tokens(c->v, rows, row, o.v);
  } else if (auto* c = std::get_if<CcqaCache>(&rows.tensors)) {
    const CcqaCache& o = std::get<CcqaCache>(one);
    copy_tokens(c->k, rows, row, o.k);
    copy_tokens(c->v, rows, row, o.v);
    copy_state(c->conv1_q, rows, row, o.conv1_q);
    copy_state(c->conv1_k, rows, row, o.conv1_k);
    copy_state(c->conv2_q, rows, row, o.conv2_q);
    copy_state(c->conv2_k, rows, row, o.conv2_k);
    copy_state(c->v0_last, rows, row, o.v0_last);
  } else {
    copy_tokens(std::get<MlaCache>(rows.tensors).latent, rows, row, std::get<MlaCache>(one).latent);
  }
  rows.count.select(0, row).fill_(cached_tokens(one));
}

int64_t rows_tokens(const CacheRows& rows) { return rows.count.sum().item<int64_t>(); }

int64_t rows_bytes(const CacheRows& rows) { return rows_tokens(rows) * bytes_per_slot(rows); }

int64_t rows_allocated_bytes(const CacheRows& rows) {
  return batch_rows(rows) * rows.capacity * bytes_per_slot(rows);
}

}  // namespace hydra::model
