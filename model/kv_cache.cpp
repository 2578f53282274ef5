#include "model/kv_cache.h"

#include <ATen/ATen.h>

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

}  // namespace hydra::model
