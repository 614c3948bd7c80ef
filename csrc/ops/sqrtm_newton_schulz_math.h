#pragma once

// Coupled Newton-Schulz iteration for the square root of a symmetric PSD matrix A
// (Higham, Functions of Matrices, eq. 6.35), run by the CPU and CUDA kernels alike:
//   s = ||A||_F,  Y0 = A/s,  Z0 = I,  T = (3I - Z Y)/2,  Y <- Y T,  Z <- T Z
// so that Y -> sqrt(A/s) and sqrt(A) = Y sqrt(s). On singular A, Z grows along the null space
// and rounding eventually feeds that growth into Y (plain NS then diverges to NaN), so the
// iterate with the smallest residual ||s Y^2 - A||_F / ||A||_F is the one returned.
// The iteration itself (GEMMs, on the host) is in sqrtm_newton_schulz.cpp; here are its two
// elementwise steps.

#include <c10/macros/Macros.h>

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

} // namespace fidfast::ops
