// The CUDA kernels of cov_update_ and cov_merge_ and their launchers (launchers.h); the host side
// is cov_cuda.cpp.

#include "../cov_math.h"
#include "cuda_helpers.h"
#include "launchers.h"

#include <c10/util/Half.h>

namespace fidfast::ops {

namespace {

constexpr int kCols = 32;      // columns per block of column_mean_kernel (one warp wide)
constexpr int kRowGroups = 8;  // row-strided partial sums per column

// Column means in float64; a fixed reduction order, so results are deterministic.
template <typename scalar_t>
__global__ void column_mean_kernel(const scalar_t* __restrict__ x, int64_t rows, int64_t d, double* __restrict__ mean) {
  __shared__ double partial[kRowGroups][kCols];
  const int64_t col = blockIdx.x * static_cast<int64_t>(kCols) + threadIdx.x;
  double sum = 0.0;
  if (col < d) {
    for (int64_t r = threadIdx.y; r < rows; r += kRowGroups) {
      sum += static_cast<double>(x[r * d + col]);
    }
  }
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && col < d) {
    double total = 0.0;
    for (int g = 0; g < kRowGroups; ++g) {
      total += partial[g][threadIdx.x];
    }
    mean[col] = total / static_cast<double>(rows);
  }
}

// The batch centred on its column means, converted to float64 for the GEMM.
template <typename scalar_t>
__global__ void centre_kernel(
    const scalar_t* __restrict__ x,
    const double* __restrict__ mean,
    int64_t total,
    int64_t d,
    double* __restrict__ centred) {
  FIDFAST_CUDA_1D_LOOP(k, total) {
    centred[k] = static_cast<double>(x[k]) - mean[k % d];
  }
}

// Reads the old mean; merge_mean_kernel runs after it on the same stream.
__global__ void merge_comoment_kernel(
    const double* __restrict__ mean,
    double* __restrict__ comoment,
    const double* __restrict__ other_mean,
    const double* __restrict__ m2,
    int64_t d,
    MergeWeights w) {
  FIDFAST_CUDA_1D_LOOP(k, d * d) {
    const int64_t i = k / d, j = k % d;
    comoment[k] =
        merged_comoment(comoment[k], m2[k], m2[j * d + i], other_mean[i] - mean[i], other_mean[j] - mean[j], w);
  }
}

__global__ void merge_mean_kernel(double* __restrict__ mean, const double* __restrict__ other_mean, int64_t d, MergeWeights w) {
  FIDFAST_CUDA_1D_LOOP(i, d) {
    mean[i] = merged_mean(mean[i], other_mean[i], w);
  }
}

} // namespace

template <typename scalar_t>
cudaError_t launch_mean_and_centre(
    const scalar_t* x,
    int64_t rows,
    int64_t d,
    double* mean,
    double* centred,
    cudaStream_t stream) {
  const dim3 block(kCols, kRowGroups);
  column_mean_kernel<scalar_t><<<static_cast<unsigned>((d + kCols - 1) / kCols), block, 0, stream>>>(x, rows, d, mean);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return err;
  }
  centre_kernel<scalar_t><<<grid_for(rows * d), kThreads, 0, stream>>>(x, mean, rows * d, d, centred);
  return cudaGetLastError();
}

template cudaError_t launch_mean_and_centre<float>(const float*, int64_t, int64_t, double*, double*, cudaStream_t);
template cudaError_t launch_mean_and_centre<double>(const double*, int64_t, int64_t, double*, double*, cudaStream_t);
template cudaError_t launch_mean_and_centre<c10::Half>(
    const c10::Half*, int64_t, int64_t, double*, double*, cudaStream_t);

cudaError_t launch_cov_merge(
    double* mean,
    double* comoment,
    const double* other_mean,
    const double* m2,
    int64_t d,
    MergeWeights w,
    cudaStream_t stream) {
  merge_comoment_kernel<<<grid_for(d * d), kThreads, 0, stream>>>(mean, comoment, other_mean, m2, d, w);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return err;
  }
  merge_mean_kernel<<<grid_for(d), kThreads, 0, stream>>>(mean, other_mean, d, w);
  return cudaGetLastError();
}

} // namespace fidfast::ops
