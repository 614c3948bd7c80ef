// The CUDA kernels of sqrtm_newton_schulz's elementwise steps and their launchers (launchers.h);
// the host side, which runs the iteration, is sqrtm_newton_schulz_cuda.cpp.

#include "../sqrtm_newton_schulz_math.h"
#include "cuda_helpers.h"
#include "launchers.h"

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

} // namespace

unsigned residual_sq_blocks(int64_t total) {
  return grid_for(total, kMaxBlocks);
}

cudaError_t launch_make_t(double* zy, int64_t d, cudaStream_t stream) {
  make_t_kernel<<<grid_for(d * d, kMaxBlocks), kThreads, 0, stream>>>(zy, d);
  return cudaGetLastError();
}

cudaError_t launch_residual_sq(
    const double* y2,
    const double* a,
    double s,
    int64_t total,
    double* partial,
    cudaStream_t stream) {
  residual_sq_kernel<<<residual_sq_blocks(total), kThreads, 0, stream>>>(y2, a, s, total, partial);
  return cudaGetLastError();
}

} // namespace fidfast::ops
