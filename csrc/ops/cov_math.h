#pragma once

// Streaming covariance state (mean, co-moment = sum of centred outer products, count) and the
// exact pairwise merge of Chan, Golub & LeVeque, shared by the CPU and CUDA kernels:
//   delta = mean_b - mean
//   comoment += M2_b + delta delta^T * n*B/(n+B)
//   mean     += delta * B/(n+B)

#include <c10/macros/Macros.h>

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

} // namespace fidfast::ops
