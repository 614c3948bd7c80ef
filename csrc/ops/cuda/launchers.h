#pragma once

// The launchers of the CUDA kernels (cuda/<op>_kernel.cu): raw pointers and sizes in, the launch's
// cudaError_t out. Nothing in a CUDA translation unit raises an exception: their callers
// (cuda/<op>_cuda.cpp, compiled by the host compiler) turn an error into one, and every argument
// has been checked by the op's entry before.

#include "../cov_math.h"
#include "../resize_normalize_math.h"

#include <cuda_runtime_api.h>

#include <cstdint>

namespace fidfast::ops {

// resize_normalize of n images of `data` described by meta [n, kMetaCols], through the tables taps
// and weights [R, k], into out [n, 3, size, size] with element strides (sn, sc, sh, sw).
struct ResizeNormalizeArgs {
  const int64_t* meta;
  const int32_t* taps;
  const float* weights;
  int64_t k;
  Normalization norm;
  int64_t n, size, sn, sc, sh, sw;
};

// in_t: uint8_t or float; out_t: float or c10::Half. For uint8 data, unit_table is 256 floats of
// device memory that the launcher fills with p / divisor first; float data does not use it.
template <typename in_t, typename out_t>
cudaError_t launch_resize_normalize(
    const in_t* data,
    float* unit_table,
    out_t* out,
    const ResizeNormalizeArgs& args,
    cudaStream_t stream);

// cov_update_: the column means of x [rows, d] (float, double or c10::Half), in float64, into
// mean [d], and x centred on them into centred [rows, d] (float64).
template <typename scalar_t>
cudaError_t launch_mean_and_centre(
    const scalar_t* x,
    int64_t rows,
    int64_t d,
    double* mean,
    double* centred,
    cudaStream_t stream);

// The exact merge (cov_math.h) of (other_mean [d], m2 [d, d]) into (mean, comoment), in place.
cudaError_t launch_cov_merge(
    double* mean,
    double* comoment,
    const double* other_mean,
    const double* m2,
    int64_t d,
    MergeWeights w,
    cudaStream_t stream);

// sqrtm_newton_schulz's steps: zy [d, d] <- (3I - zy)/2 in place, and the partial sums of
// (s*y2 - a)^2 over `total` entries into partial[residual_sq_blocks(total)], a count fixed by the
// size, so that their sum is the same every run.
cudaError_t launch_make_t(double* zy, int64_t d, cudaStream_t stream);
cudaError_t launch_residual_sq(
    const double* y2,
    const double* a,
    double s,
    int64_t total,
    double* partial,
    cudaStream_t stream);
unsigned residual_sq_blocks(int64_t total);

} // namespace fidfast::ops
