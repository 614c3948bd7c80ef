#include "../cov_math.h"
#include "cuda_helpers.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

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

void merge(
    const at::Tensor& mean,
    const at::Tensor& comoment,
    int64_t n,
    const at::Tensor& other_mean,
    const at::Tensor& other_m2,
    int64_t other_n) {
  const MergeWeights w = merge_weights(n, other_n);
  const int64_t d = mean.size(0);
  if (d == 0) {
    return;
  }
  const auto stream = c10::cuda::getCurrentCUDAStream();
  merge_comoment_kernel<<<grid_for(d * d), kThreads, 0, stream>>>(
      mean.const_data_ptr<double>(),
      comoment.data_ptr<double>(),
      other_mean.const_data_ptr<double>(),
      other_m2.const_data_ptr<double>(),
      d,
      w);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  merge_mean_kernel<<<grid_for(d), kThreads, 0, stream>>>(mean.data_ptr<double>(), other_mean.const_data_ptr<double>(), d, w);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void cov_update_cuda(const at::Tensor& mean, const at::Tensor& comoment, int64_t n, const at::Tensor& batch) {
  TORCH_CHECK(mean.is_cuda(), "cov_update_: expected CUDA tensors");
  check_cov_update_args(mean, comoment, n, batch);
  const int64_t rows = batch.size(0), d = batch.size(1);
  if (rows == 0 || d == 0) {
    return;
  }
  c10::cuda::CUDAGuard guard(mean.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor x = batch.contiguous();
  at::Tensor mean_b = at::empty({d}, mean.options());
  at::Tensor centred = at::empty({rows, d}, mean.options());
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "cov_update_", [&] {
    const dim3 block(kCols, kRowGroups);
    column_mean_kernel<scalar_t><<<static_cast<unsigned>((d + kCols - 1) / kCols), block, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), rows, d, mean_b.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    centre_kernel<scalar_t><<<grid_for(rows * d), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), mean_b.const_data_ptr<double>(), rows * d, d, centred.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  merge(mean, comoment, n, mean_b, at::mm(centred.t(), centred), rows);
}

void cov_merge_cuda(
    const at::Tensor& mean,
    const at::Tensor& comoment,
    int64_t n,
    const at::Tensor& other_mean,
    const at::Tensor& other_comoment,
    int64_t other_n) {
  TORCH_CHECK(mean.is_cuda(), "cov_merge_: expected CUDA tensors");
  check_cov_merge_args(mean, comoment, n, other_mean, other_comoment, other_n);
  if (other_n == 0) {
    return;
  }
  c10::cuda::CUDAGuard guard(mean.device());
  merge(mean, comoment, n, readable_while_writing(other_mean, mean), readable_while_writing(other_comoment, comoment),
        other_n);
}

} // namespace

TORCH_LIBRARY_IMPL(fidfast, CUDA, m) {
  m.impl("cov_update_", &cov_update_cuda);
  m.impl("cov_merge_", &cov_merge_cuda);
}

} // namespace fidfast::ops
