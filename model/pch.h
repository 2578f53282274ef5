// Precompiled header of hydra_model (and of the model tests, through REUSE_FROM): the LibTorch
// headers every model file needs. <torch/torch.h> costs ~10 s and 1 GB per translation unit;
// compiled once here, each model file pays a fraction of it.
#pragma once

#include <torch/torch.h>
