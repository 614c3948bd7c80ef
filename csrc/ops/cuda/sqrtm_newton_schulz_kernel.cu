#include "../sqrtm_newton_schulz_math.h"
#include "cuda_helpers.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace fidfast::ops {

namespace {

constexpr int64_t kMaxBlocks = 1024;  // fixed partial count for the residual: same sum every run

__global__ void make_t_kernel(double* __restrict__ zy, int64_t d) {
  FIDFAST_CUDA_1D_LOOP(k, d * d) {
    zy[k] = ns_t_entry(zy[k], k / d == k % d);
  }
}

// One partial sum of (s*y2 - a)^2 per block; the partials are added by the caller.
__global__ void residual_sq_kernel(
    const double* __restrict__ y2,
    const double* __restrict__ a,
    double s,
    int64_t total,
    double* __restrict__ partial) {
  __shared__ double buf[kThreads];
  double sum = 0.0;
  FIDFAST_CUDA_1D_LOOP(k, total) {
    sum += ns_residual_sq(y2[k], a[k], s);
  }
  buf[threadIdx.x] = sum;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) {
      buf[threadIdx.x] += buf[threadIdx.x + width];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = buf[0];
  }
}

void make_t(at::Tensor& zy) {
  const int64_t d = zy.size(0);
  make_t_kernel<<<grid_for(d * d, kMaxBlocks), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(zy.data_ptr<double>(), d);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

double residual_sq(const at::Tensor& y2, const at::Tensor& a, double s) {
  const int64_t total = a.numel();
  const unsigned blocks = grid_for(total, kMaxBlocks);
  at::Tensor partial = at::empty({blocks}, a.options());
  residual_sq_kernel<<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      y2.const_data_ptr<double>(), a.const_data_ptr<double>(), s, total, partial.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return partial.sum().item<double>();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sqrtm_newton_schulz_cuda(const at::Tensor& a, int64_t max_iter, double tol) {
  TORCH_CHECK(a.is_cuda(), "sqrtm_newton_schulz: expected a CUDA tensor");
  c10::cuda::CUDAGuard guard(a.device());
  return newton_schulz(a, max_iter, tol, make_t, residual_sq);
}

} // namespace

TORCH_LIBRARY_IMPL(fidfast, CUDA, m) {
  m.impl("sqrtm_newton_schulz", &sqrtm_newton_schulz_cuda);
}

} // namespace fidfast::ops
