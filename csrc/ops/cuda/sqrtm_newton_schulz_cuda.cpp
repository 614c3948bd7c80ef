// The CUDA implementation of sqrtm_newton_schulz, host side (compiled by the host compiler): the
// shared iteration with the CUDA elementwise steps (sqrtm_newton_schulz_kernel.cu), on arguments its
// entry (../sqrtm_newton_schulz.cpp) has checked.

#include "../kernels.h"
#include "launchers.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace fidfast::ops {

namespace {

void make_t(at::Tensor& zy) {
  C10_CUDA_CHECK(launch_make_t(zy.data_ptr<double>(), zy.size(0), c10::cuda::getCurrentCUDAStream()));
}

double residual_sq(const at::Tensor& y2, const at::Tensor& a, double s) {
  const int64_t total = a.numel();
  at::Tensor partial = at::empty({static_cast<int64_t>(residual_sq_blocks(total))}, a.options());
  C10_CUDA_CHECK(launch_residual_sq(y2.const_data_ptr<double>(), a.const_data_ptr<double>(), s, total,
                                    partial.data_ptr<double>(), c10::cuda::getCurrentCUDAStream()));
  return partial.sum().item<double>();
}

} // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> sqrtm_newton_schulz_cuda(const at::Tensor& a, int64_t max_iter, double tol) {
  c10::cuda::CUDAGuard guard(a.device());
  return newton_schulz(a, max_iter, tol, make_t, residual_sq);
}

} // namespace fidfast::ops
