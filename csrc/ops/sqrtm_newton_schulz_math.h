#pragma once

// Coupled Newton-Schulz iteration for the square root of a symmetric PSD matrix A
// (Higham, Functions of Matrices, eq. 6.35), shared by the CPU and CUDA kernels:
//   s = ||A||_F,  Y0 = A/s,  Z0 = I,  T = (3I - Z Y)/2,  Y <- Y T,  Z <- T Z
// so that Y -> sqrt(A/s) and sqrt(A) = Y sqrt(s). On singular A, Z grows along the null space
// and rounding eventually feeds that growth into Y (plain NS then diverges to NaN), so the
// iterate with the smallest residual ||s Y^2 - A||_F / ||A||_F is the one returned.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros_like.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <tuple>
#include <utility>

namespace fidfast::ops {

// Entry of T = (3I - ZY)/2 from the same entry of ZY.
C10_HOST_DEVICE inline double ns_t_entry(double zy, bool diagonal) {
  return (diagonal ? 1.5 : 0.0) - 0.5 * zy;
}

// Squared entry of the residual s*Y^2 - A.
C10_HOST_DEVICE inline double ns_residual_sq(double y2, double a, double s) {
  const double r = s * y2 - a;
  return r * r;
}

inline void check_sqrtm_args(const at::Tensor& a, int64_t max_iter) {
  TORCH_CHECK(a.scalar_type() == at::kDouble, "sqrtm_newton_schulz: a must be float64, got ", a.scalar_type());
  TORCH_CHECK(a.dim() == 2 && a.size(0) == a.size(1), "sqrtm_newton_schulz: a must be square [d, d], got ", a.sizes());
  TORCH_CHECK(max_iter >= 0, "sqrtm_newton_schulz: max_iter must be >= 0, got ", max_iter);
  TORCH_CHECK(a.isfinite().all().item<bool>(), "sqrtm_newton_schulz: a contains NaN or Inf");
}

// The iteration, with the two fused elementwise steps supplied by the device's kernels:
//   make_t(zy)              zy <- (3I - zy)/2 in place
//   residual_sq(y2, a, s)   sum over entries of (s*y2 - a)^2, as a host double
template <typename MakeT, typename ResidualSq>
std::tuple<at::Tensor, at::Tensor, at::Tensor> newton_schulz(
    const at::Tensor& a_in,
    int64_t max_iter,
    double tol,
    MakeT make_t,
    ResidualSq residual_sq) {
  check_sqrtm_args(a_in, max_iter);
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

} // namespace fidfast::ops
