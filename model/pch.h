// Precompiled header of hydra_model, reused by the test binaries whose files include ATen
// (hydra_torch_pch in the top-level CMakeLists.txt; the other libraries use none). Only ATen: <torch/torch.h> costs
// ~20 s a file and a precompiled copy of it slows even files that need ATen alone; files
// that use more of the C++ API include the narrower header they need.
#pragma once

#include <ATen/ATen.h>
