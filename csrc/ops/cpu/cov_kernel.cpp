// The CPU implementation of cov_update_ and cov_merge_, on arguments their entries (../cov.cpp) have
// checked.

#include "../cov_math.h"
#include "../kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>

namespace fidfast::ops {

namespace {

// Column means of `batch` and the batch centred on them, both in float64, so the GEMM that
// follows sees data whose mean is ~0 (no cancellation on features with large means).
template <typename scalar_t>
void mean_and_centre(const at::Tensor& batch, at::Tensor& mean_b, at::Tensor& centred) {
  const int64_t rows = batch.size(0), d = batch.size(1);
  const scalar_t* x = batch.const_data_ptr<scalar_t>();
  double* mu = mean_b.data_ptr<double>();
  double* xc = centred.data_ptr<double>();
  at::parallel_for(0, d, 64, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      mu[c] = 0.0;
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = begin; c < end; ++c) {
        mu[c] += static_cast<double>(x[r * d + c]);
      }
    }
    for (int64_t c = begin; c < end; ++c) {
      mu[c] /= static_cast<double>(rows);
    }
  });
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t c = 0; c < d; ++c) {
        xc[r * d + c] = static_cast<double>(x[r * d + c]) - mu[c];
      }
    }
  });
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
  double* mu = mean.data_ptr<double>();
  double* cm = comoment.data_ptr<double>();
  const double* om = other_mean.const_data_ptr<double>();
  const double* m2 = other_m2.const_data_ptr<double>();
  at::parallel_for(0, d, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const double di = om[i] - mu[i];
      for (int64_t j = 0; j < d; ++j) {
        cm[i * d + j] = merged_comoment(cm[i * d + j], m2[i * d + j], m2[j * d + i], di, om[j] - mu[j], w);
      }
    }
  });
  // After the co-moment: every entry above reads the old mean.
  for (int64_t i = 0; i < d; ++i) {
    mu[i] = merged_mean(mu[i], om[i], w);
  }
}

} // namespace

void cov_update_cpu(const at::Tensor& mean, const at::Tensor& comoment, int64_t n, const at::Tensor& batch) {
  const at::Tensor x = batch.contiguous();
  at::Tensor mean_b = at::empty({x.size(1)}, mean.options());
  at::Tensor centred = at::empty(x.sizes(), mean.options());
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "cov_update_", [&] {
    mean_and_centre<scalar_t>(x, mean_b, centred);
  });
  merge(mean, comoment, n, mean_b, at::mm(centred.t(), centred), x.size(0));
}

void cov_merge_cpu(
    const at::Tensor& mean,
    const at::Tensor& comoment,
    int64_t n,
    const at::Tensor& other_mean,
    const at::Tensor& other_comoment,
    int64_t other_n) {
  merge(mean, comoment, n, other_mean, other_comoment, other_n);
}

} // namespace fidfast::ops
