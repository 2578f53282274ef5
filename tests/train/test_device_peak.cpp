// The peak FLOP/s behind MFU (train/device_peak.h): the table against the vendors' datasheet
// numbers for the names the CUDA driver reports, the config key over the table, and no MFU
// off the GPU.
#include <gtest/gtest.h>

#include "train/device_peak.h"

namespace hydra::train {
namespace {

TEST(DevicePeak, TableByReportedName) {
  EXPECT_EQ(table_peak_tflops("NVIDIA H100 80GB HBM3"), 989.0);  // SXM5
  EXPECT_EQ(table_peak_tflops("NVIDIA H100 PCIe"), 756.0);
  EXPECT_EQ(table_peak_tflops("NVIDIA H100 NVL"), 835.0);
  EXPECT_EQ(table_peak_tflops("NVIDIA H200"), 989.0);  // SXM
  EXPECT_EQ(table_peak_tflops("NVIDIA H200 NVL"), 835.0);
  EXPECT_EQ(table_peak_tflops("NVIDIA A100-SXM4-80GB"), 312.0);
  EXPECT_EQ(table_peak_tflops("NVIDIA A100 80GB PCIe"), 312.0);
  EXPECT_FALSE(table_peak_tflops("NVIDIA GeForce RTX 4090").has_value());
  EXPECT_FALSE(table_peak_tflops("").has_value());
}

TEST(DevicePeak, ConfigKeyOverTheTableAndNoneOnCpu) {
  TrainConfig t;
  t.device = "cpu";
  t.peak_tflops = 500;
  EXPECT_FALSE(run_peak_flops(t).has_value());  // no MFU on the CPU
  t.device = "cuda";
  EXPECT_EQ(run_peak_flops(t), 500e12);
}

}  // namespace
}  // namespace hydra::train
