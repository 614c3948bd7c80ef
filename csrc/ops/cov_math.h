#pragma once

// Streaming covariance state (mean, co-moment = sum of centred outer products, count) and the
// exact pairwise merge of Chan, Golub & LeVeque, shared by the CPU and CUDA kernels:
//   delta = mean_b - mean
//   comoment += M2_b + delta delta^T * n*B/(n+B)
//   mean     += delta * B/(n+B)

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace fidfast::ops {

struct MergeWeights {
  double coef;  // n*B/(n+B), weight of the rank-1 term
  double frac;  // B/(n+B), step of the mean
  bool empty;   // n == 0: the state holds nothing yet, so its buffers are overwritten, not read
};

inline MergeWeights merge_weights(int64_t n, int64_t other_n) {
  const double total = static_cast<double>(n) + static_cast<double>(other_n);
  return {static_cast<double>(n) * static_cast<double>(other_n) / total, static_cast<double>(other_n) / total, n == 0};
}

// Entry (i, j) of the merged co-moment. Averaging the mirrored entries of the incoming M2 and
// forming delta_i * delta_j before scaling keep the result exactly symmetric even when the
// GEMM that produced M2 is not.
C10_HOST_DEVICE inline double merged_comoment(
    double comoment_ij,
    double m2_ij,
    double m2_ji,
    double delta_i,
    double delta_j,
    const MergeWeights& w) {
  const double m2 = 0.5 * (m2_ij + m2_ji);
  return w.empty ? m2 : comoment_ij + m2 + w.coef * (delta_i * delta_j);
}

C10_HOST_DEVICE inline double merged_mean(double mean_i, double other_mean_i, const MergeWeights& w) {
  return w.empty ? other_mean_i : mean_i + (other_mean_i - mean_i) * w.frac;
}

// The other state as the merge may read it: a state merged into itself must be read from a copy,
// since the merge writes while it reads.
inline at::Tensor readable_while_writing(const at::Tensor& other, const at::Tensor& written) {
  return other.is_alias_of(written) ? other.clone() : other.contiguous();
}

// Host-side checks of a (mean, comoment, n) state, shared by both kernels.
inline void check_cov_state(const char* op, const at::Tensor& mean, const at::Tensor& comoment, int64_t n) {
  TORCH_CHECK(mean.scalar_type() == at::kDouble && comoment.scalar_type() == at::kDouble, op,
              ": mean and comoment must be float64, got ", mean.scalar_type(), " and ", comoment.scalar_type());
  TORCH_CHECK(mean.dim() == 1 && comoment.dim() == 2 && comoment.size(0) == mean.size(0) &&
                  comoment.size(1) == mean.size(0),
              op, ": expected mean [d] and comoment [d, d], got ", mean.sizes(), " and ", comoment.sizes());
  TORCH_CHECK(mean.is_contiguous() && comoment.is_contiguous(), op,
              ": mean and comoment are updated in place and must be contiguous");
  TORCH_CHECK(comoment.device() == mean.device(), op, ": mean and comoment must be on the same device");
  TORCH_CHECK(n >= 0, op, ": n must be >= 0, got ", n);
}

inline void check_cov_update_args(
    const at::Tensor& mean,
    const at::Tensor& comoment,
    int64_t n,
    const at::Tensor& batch) {
  check_cov_state("cov_update_", mean, comoment, n);
  const auto t = batch.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kDouble,
              "cov_update_: batch must be float32, float16 or float64, got ", t);
  TORCH_CHECK(batch.dim() == 2 && batch.size(1) == mean.size(0), "cov_update_: batch must be [B, ", mean.size(0),
              "], got ", batch.sizes());
  TORCH_CHECK(batch.device() == mean.device(), "cov_update_: batch is on ", batch.device(), " but the state is on ",
              mean.device());
}

inline void check_cov_merge_args(
    const at::Tensor& mean,
    const at::Tensor& comoment,
    int64_t n,
    const at::Tensor& other_mean,
    const at::Tensor& other_comoment,
    int64_t other_n) {
  check_cov_state("cov_merge_", mean, comoment, n);
  TORCH_CHECK(other_mean.scalar_type() == at::kDouble && other_comoment.scalar_type() == at::kDouble,
              "cov_merge_: other_mean and other_comoment must be float64");
  TORCH_CHECK(other_mean.sizes() == mean.sizes() && other_comoment.sizes() == comoment.sizes(),
              "cov_merge_: other state has shapes ", other_mean.sizes(), " and ", other_comoment.sizes(),
              ", expected ", mean.sizes(), " and ", comoment.sizes());
  TORCH_CHECK(other_mean.device() == mean.device() && other_comoment.device() == mean.device(),
              "cov_merge_: both states must be on the same device");
  TORCH_CHECK(other_n >= 0, "cov_merge_: other_n must be >= 0, got ", other_n);
}

} // namespace fidfast::ops
