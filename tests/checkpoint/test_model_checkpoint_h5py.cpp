// A real HYDRA model's checkpoint read back with h5py (python3-h5py) equals the model's
// parameters: names, shapes and values (fp32 and bf16 weights).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint.h"
#include "model/hydra_model.h"

namespace {

namespace fs = std::filesystem;
using namespace hydra;

model::ModelConfig small_model() {
  model::ModelConfig c;
  c.dim = 32;
  c.heads = 2;
  c.kv_heads = 1;
  c.mlp_ratio = 2.0;
  c.macro_blocks = 1;
  c.vocab_size = 300;
  c.mod.enabled = true;
  c.mor.recursions = 2;
  c.ccqa.compress = "head_dim";  // heads needs C to divide the 2 heads
  return c;
}

void check_with_h5py(at::ScalarType dtype) {
  const fs::path dir = fs::temp_directory_path() / ("hydra_ckpt_h5py_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  at::manual_seed(3);
  auto model = std::make_shared<model::HydraModelImpl>(small_model());
  model->to(dtype);
  parallel::NamedParams params;
  for (const auto& item : model->named_parameters()) params.emplace_back(item.key(), item.value());
  const auto layout = parallel::make_flat_layout(params);
  checkpoint::SaveRequest req;
  req.root = (dir / "ckpt").string();
  req.layout = {{"world", 1}};
  const std::string saved = checkpoint::save_checkpoint(req, params, layout, nullptr, nullptr);

  fs::create_directories(dir / "dump");
  std::ofstream shapes(dir / "dump" / "shapes.txt");
  for (const auto& [name, p] : params) {
    const at::Tensor f32 = p.detach().to(at::kFloat).contiguous();
    std::ofstream(dir / "dump" / (name + ".f32"), std::ios::binary)
        .write(static_cast<const char*>(f32.data_ptr()), static_cast<std::streamsize>(f32.numel() * 4));
    shapes << name << " ";
    for (int64_t i = 0; i < f32.dim(); ++i) shapes << (i ? "," : "") << f32.size(i);
    shapes << "\n";
  }
  shapes.close();
  const std::string cmd = "/usr/bin/python3 " HYDRA_SOURCE_DIR "/tests/checkpoint/compare_with_h5py.py " + saved +
                          " " + (dir / "dump").string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  fs::remove_all(dir);
}

TEST(ModelCheckpointH5py, Float32WeightsEqualTheModels) { check_with_h5py(at::kFloat); }
TEST(ModelCheckpointH5py, BFloat16WeightsEqualTheModels) { check_with_h5py(at::kBFloat16); }

}  // namespace
