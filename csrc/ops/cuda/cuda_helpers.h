#pragma once

// Launch boilerplate shared by the CUDA kernels (as torchvision's csrc/ops/cuda/cuda_helpers.h).

#include <algorithm>
#include <cstdint>

namespace fidfast::ops {

constexpr int kThreads = 256;  // threads per block; a power of two (block reductions halve it)

// A grid-stride loop over [0, n): any n works with a capped grid.
#define FIDFAST_CUDA_1D_LOOP(i, n)                                                                  \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Blocks for a grid-stride loop over `total` elements, at most `max_blocks`.
inline unsigned grid_for(int64_t total, int64_t max_blocks = int64_t{1} << 16) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((total + kThreads - 1) / kThreads, max_blocks)));
}

} // namespace fidfast::ops
