// The element types the fused elementwise kernels (rms_norm.h, rope.h, swiglu.h) store
// tensors in. Arithmetic is float32 whatever the storage.
#pragma once

namespace hydra::kernels {

enum class StorageType { kFloat32, kBFloat16 };

}  // namespace hydra::kernels
