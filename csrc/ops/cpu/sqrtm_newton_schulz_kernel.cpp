// The CPU implementation of sqrtm_newton_schulz, on arguments its entry (../sqrtm_newton_schulz.cpp)
// has checked: the shared iteration with the CPU's elementwise steps.

#include "../kernels.h"
#include "../sqrtm_newton_schulz_math.h"

#include <ATen/Parallel.h>

#include <vector>

namespace fidfast::ops {

namespace {

void make_t(at::Tensor& zy) {
  const int64_t d = zy.size(0);
  double* p = zy.data_ptr<double>();
  at::parallel_for(0, d, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t j = 0; j < d; ++j) {
        p[i * d + j] = ns_t_entry(p[i * d + j], i == j);
      }
    }
  });
}

double residual_sq(const at::Tensor& y2, const at::Tensor& a, double s) {
  const int64_t d = a.size(0);
  const double* py = y2.const_data_ptr<double>();
  const double* pa = a.const_data_ptr<double>();
  // Per-row partial sums added in row order: the same result for any thread count.
  std::vector<double> rows(d, 0.0);
  at::parallel_for(0, d, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      double sum = 0.0;
      for (int64_t j = 0; j < d; ++j) {
        sum += ns_residual_sq(py[i * d + j], pa[i * d + j], s);
      }
      rows[i] = sum;
    }
  });
  double total = 0.0;
  for (const double r : rows) {
    total += r;
  }
  return total;
}

} // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> sqrtm_newton_schulz_cpu(const at::Tensor& a, int64_t max_iter, double tol) {
  return newton_schulz(a, max_iter, tol, make_t, residual_sq);
}

} // namespace fidfast::ops
