#include "model/parameter_inventory.h"

#include "model/dims.h"
#include "model/model_info.h"

namespace hydra::model {
namespace {

// One attention layer's parameters under `prefix` ("blocks.b.layers.l.attn."), in the order
// named_parameters() lists them (model/attention.cpp, model/attention_ccqa.cpp).
void add_attention(const std::string& type, const ModelConfig& c, const Dims& m, const std::string& prefix,
                   int layer, std::vector<ParameterEntry>& out) {
  auto add = [&](const std::string& name, int64_t elements) { out.push_back({prefix + name, elements, layer}); };
  if (is_grouped_type(type)) {
    const int64_t kv = grouped_kv_heads(type, c) * m.d;
    add("wq.weight", m.H * m.d * m.E);
    add("wk.weight", kv * m.E);
    add("wv.weight", kv * m.E);
    add("wo.weight", m.E * m.H * m.d);
    add("q_norm.weight", m.d);
    add("k_norm.weight", m.d);
    add("out_norm.weight", m.H * m.d);
  } else if (type == "ccqa") {
    add("tau", m.Hkv);  // the module's own parameter: named_parameters() lists it before its children's
    add("wq.weight", m.Lq * m.E);
    add("wk.weight", m.Lk * m.E);
    add("wv.weight", m.Lk * m.E);
    add("wo.weight", m.E * m.Lq);
    if (c.ccqa.use_convs) {
      add("conv1_q.weight", m.Lq * m.K);
      add("conv1_q.bias", m.Lq);
      add("conv1_k.weight", m.Lk * m.K);
      add("conv1_k.bias", m.Lk);
      add("conv2_q.weight", m.Lq * m.dh * m.K);
      add("conv2_q.bias", m.Lq);
      add("conv2_k.weight", m.Lk * m.dh * m.K);
      add("conv2_k.bias", m.Lk);
    }
    if (c.ccqa.post_mix_norm) {
      add("q_norm.weight", m.dh);
      add("k_norm.weight", m.dh);
    }
    add("out_norm.weight", m.Lq);
  } else {  // mla
    add("w_dq.weight", m.dc * m.E);
    add("w_uq.weight", m.H * m.d * m.dc);
    add("w_qr.weight", m.H * m.dr * m.dc);
    add("w_dkv.weight", m.dc * m.E);
    add("w_uk.weight", m.H * m.d * m.dc);
    add("w_uv.weight", m.H * m.d * m.dc);
    add("w_kr.weight", m.dr * m.E);
    add("wo.weight", m.E * m.H * m.d);
    add("q_norm.weight", m.dc);
    add("kv_norm.weight", m.dc);
    add("out_norm.weight", m.H * m.d);
  }
}

}  // namespace

std::vector<ParameterEntry> parameter_inventory(const ModelConfig& c) {
  const Dims m = model_dims(c);
  const int64_t vocab = padded_vocab(c.vocab_size, 1);
  const int P = static_cast<int>(c.pattern.size());
  std::vector<ParameterEntry> out;
  out.push_back({"embed.weight", vocab * m.E, ParameterEntry::kFirstStage});
  for (int b = 0; b < c.macro_blocks; ++b) {
    for (int l = 0; l < P; ++l) {
      const int layer = b * P + l;
      const std::string prefix = "blocks." + std::to_string(b) + ".layers." + std::to_string(l) + ".";
      out.push_back({prefix + "attn_norm.weight", m.E, layer});
      add_attention(c.pattern[l], c, m, prefix + "attn.", layer, out);
      out.push_back({prefix + "mlp_norm.weight", m.E, layer});
      out.push_back({prefix + "mlp.w_gate.weight", m.F * m.E, layer});
      out.push_back({prefix + "mlp.w_up.weight", m.F * m.E, layer});
      out.push_back({prefix + "mlp.w_down.weight", m.E * m.F, layer});
      if (is_mod_layer(c, l)) {
        out.push_back({prefix + "router.weight", m.E, layer});
        out.push_back({prefix + "router.bias", 1, layer});
      }
    }
    for (int i = 0; i + 1 < c.mor.recursions; ++i) {
      const std::string prefix = "blocks." + std::to_string(b) + ".mor_routers." + std::to_string(i) + ".";
      out.push_back({prefix + "weight", m.E, b * P});
      out.push_back({prefix + "bias", 1, b * P});
    }
  }
  out.push_back({"final_norm.weight", m.E, ParameterEntry::kLastStage});
  if (!c.tie_embeddings) out.push_back({"head.weight", vocab * m.E, ParameterEntry::kLastStage});
  return out;
}

}  // namespace hydra::model
