// The LM head's softmax cross entropy over one chunk of rows, fused (model/linear_cross_entropy.h
// drives it chunk by chunk), and the weight gradient's accumulation in float32. Launchers only:
// raw device pointers, sizes and an explicit stream; nothing here synchronises the stream.
#pragma once

#include <cstdint>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

namespace hydra::kernels {

enum class CrossEntropyDtype { kFloat32, kBFloat16 };

struct CrossEntropyChunk {
  void* logits = nullptr;           // [rows, row_stride] in the dtype below: logits in, gradient out
  int64_t rows = 0;
  int64_t vocab = 0;                // columns of a row
  int64_t vocab_valid = 0;          // columns [vocab_valid, vocab) are padding: no probability
  int64_t row_stride = 0;           // elements between rows (>= vocab)
  const int64_t* targets = nullptr; // [rows]; -100: ignored (loss 0, gradient 0)
  // [rows] per-row gradient scale (1 / count of counted targets, 0 for ignored rows), or null:
  // the loss alone, the logits are left as they are.
  const float* row_scale = nullptr;
  float* loss = nullptr;            // [rows] out: lse - logit[target]; 0 ignored; NaN bad target
  CrossEntropyDtype dtype = CrossEntropyDtype::kBFloat16;
};

// One block per row: the row's max and sum of exponentials online in float32, the loss, and
// with row_scale the gradient (softmax - onehot) * row_scale written over the logits in their
// own dtype (padding columns get 0).
void cross_entropy_chunk(const CrossEntropyChunk& chunk, cudaStream_t stream);

// acc [V, E] float32 += g^T h: g [C, V] and h [C, E] bf16, row-major with row strides ldg and
// ldh (elements); one cuBLAS GEMM with float32 output, so that each chunk's product is added
// unrounded. It runs on the stream `handle` is bound to: ATen's getCurrentCUDABlasHandle()
// binds the current stream and ATen's workspace, which cublasSetStream would reset, so the
// stream is not set here.
void accumulate_bf16_gemm_tn(cublasHandle_t handle, const void* g, int64_t ldg, const void* h, int64_t ldh,
                             float* acc, int64_t rows, int64_t vocab, int64_t dim);

}  // namespace hydra::kernels
