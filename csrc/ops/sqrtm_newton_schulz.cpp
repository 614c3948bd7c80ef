// fidfast::sqrtm_newton_schulz: its schema, every check of its arguments, its one entry (the kernel
// registered for CPU and CUDA alike, which checks and then runs the device's implementation:
// cpu/sqrtm_newton_schulz_kernel.cpp, cuda/sqrtm_newton_schulz_cuda.cpp), and the iteration both
// devices run. See sqrtm_newton_schulz_math.h.

#include "kernels.h"
#include "ops.h"
#include "sqrtm_newton_schulz_math.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>
#include <utility>

namespace fidfast::ops {

std::tuple<at::Tensor, at::Tensor, at::Tensor> sqrtm_newton_schulz(const at::Tensor& a, int64_t max_iter, double tol) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fidfast::sqrtm_newton_schulz", "")
                       .typed<decltype(sqrtm_newton_schulz)>();
  return op.call(a, max_iter, tol);
}

// The residual and iteration count are tensors, not Python numbers, so that a fake kernel can
// describe the outputs without running the iteration (torch.compile, FakeTensor).
TORCH_LIBRARY_FRAGMENT(fidfast, m) {
  m.def("sqrtm_newton_schulz(Tensor a, int max_iter, float tol) -> (Tensor, Tensor, Tensor)");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> newton_schulz(
    const at::Tensor& a_in,
    int64_t max_iter,
    double tol,
    MakeT make_t,
    ResidualSq residual_sq) {
  const at::Tensor a = a_in.contiguous();
  const double s = a.norm().item<double>();
  const auto report = [&](at::Tensor root, double residual, int64_t iterations) {
    return std::make_tuple(
        std::move(root), at::scalar_tensor(residual, a.options()),
        at::scalar_tensor(iterations, a.options().dtype(at::kLong)));
  };
  if (s == 0.0) {
    return report(at::zeros_like(a), 0.0, 0);
  }
  at::Tensor y = a.div(s);
  at::Tensor z = at::eye(a.size(0), a.options());
  at::Tensor t = at::empty_like(a);
  at::Tensor y_next = at::empty_like(a);
  at::Tensor z_next = at::empty_like(a);
  at::Tensor y2 = at::mm(y, y);
  at::Tensor best = y.clone();
  double best_res = std::sqrt(residual_sq(y2, a, s)) / s;
  int64_t iters = 0;
  while (iters < max_iter && best_res > tol) {
    at::mm_out(t, z, y);
    make_t(t);
    at::mm_out(y_next, y, t);
    at::mm_out(z_next, t, z);
    std::swap(y, y_next);
    std::swap(z, z_next);
    ++iters;
    at::mm_out(y2, y, y);
    const double res = std::sqrt(residual_sq(y2, a, s)) / s;
    if (!(res < best_res)) {
      break;  // stopped improving (or went non-finite): the best iterate is already saved
    }
    best_res = res;
    best.copy_(y);
  }
  return report(best.mul_(std::sqrt(s)), best_res, iters);
}

namespace {

// Every check of sqrtm_newton_schulz's arguments, for both devices.
void check_sqrtm_newton_schulz_args(const at::Tensor& a, int64_t max_iter) {
  TORCH_CHECK(a.scalar_type() == at::kDouble, "sqrtm_newton_schulz: a must be float64, got ", a.scalar_type());
  TORCH_CHECK(a.dim() == 2 && a.size(0) == a.size(1), "sqrtm_newton_schulz: a must be square [d, d], got ", a.sizes());
  TORCH_CHECK(max_iter >= 0, "sqrtm_newton_schulz: max_iter must be >= 0, got ", max_iter);
  TORCH_CHECK(a.isfinite().all().item<bool>(), "sqrtm_newton_schulz: a contains NaN or Inf");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> checked_sqrtm_newton_schulz(
    const at::Tensor& a,
    int64_t max_iter,
    double tol) {
  check_sqrtm_newton_schulz_args(a, max_iter);
#ifdef FIDFAST_WITH_CUDA
  if (a.is_cuda()) {
    return sqrtm_newton_schulz_cuda(a, max_iter, tol);
  }
#endif
  return sqrtm_newton_schulz_cpu(a, max_iter, tol);
}

} // namespace

TORCH_LIBRARY_IMPL(fidfast, CPU, m) {
  m.impl("sqrtm_newton_schulz", &checked_sqrtm_newton_schulz);
}

#ifdef FIDFAST_WITH_CUDA
TORCH_LIBRARY_IMPL(fidfast, CUDA, m) {
  m.impl("sqrtm_newton_schulz", &checked_sqrtm_newton_schulz);
}
#endif

} // namespace fidfast::ops
