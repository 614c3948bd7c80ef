// The CUDA implementation of cov_update_ and cov_merge_, host side (compiled by the host compiler):
// buffers, the GEMM and the launches (cov_kernel.cu), on arguments their entries (../cov.cpp) have
// checked.

#include "../kernels.h"
#include "launchers.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace fidfast::ops {

namespace {

void merge(
    const at::Tensor& mean,
    const at::Tensor& comoment,
    int64_t n,
    const at::Tensor& other_mean,
    const at::Tensor& other_m2,
    int64_t other_n) {
  const int64_t d = mean.size(0);
  if (d == 0) {
    return;
  }
  C10_CUDA_CHECK(launch_cov_merge(mean.data_ptr<double>(), comoment.data_ptr<double>(),
                                  other_mean.const_data_ptr<double>(), other_m2.const_data_ptr<double>(), d,
                                  merge_weights(n, other_n), c10::cuda::getCurrentCUDAStream()));
}

} // namespace

void cov_update_cuda(const at::Tensor& mean, const at::Tensor& comoment, int64_t n, const at::Tensor& batch) {
  c10::cuda::CUDAGuard guard(mean.device());
  const at::Tensor x = batch.contiguous();
  const int64_t rows = x.size(0), d = x.size(1);
  at::Tensor mean_b = at::empty({d}, mean.options());
  at::Tensor centred = at::empty({rows, d}, mean.options());
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "cov_update_", [&] {
    C10_CUDA_CHECK(launch_mean_and_centre(x.const_data_ptr<scalar_t>(), rows, d, mean_b.data_ptr<double>(),
                                          centred.data_ptr<double>(), c10::cuda::getCurrentCUDAStream()));
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
  c10::cuda::CUDAGuard guard(mean.device());
  merge(mean, comoment, n, other_mean, other_comoment, other_n);
}

} // namespace fidfast::ops
