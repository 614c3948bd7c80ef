#pragma once

// C++ API of the fidfast ops. Each call goes through the dispatcher, which picks the CPU or
// CUDA kernel from the arguments' device; Python reaches the same ops as torch.ops.fidfast.*.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>

namespace fidfast::ops {

// N packed H x W x C images (data: 1-D uint8 or float32; meta: int64 [N, 6] = offset, H, W, C,
// first row of the height table, first row of the width table) -> N x 3 x out_size x out_size:
// p / divisor, resampled through the tap tables (taps: int32 [R, K] source indices, weights:
// float32 [R, K]), then clamp((v - shift) * scale, lo, hi). See resize_normalize_math.h.
at::Tensor resize_normalize(
    const at::Tensor& data,
    const at::Tensor& meta,
    const at::Tensor& taps,
    const at::Tensor& weights,
    double divisor,
    double shift,
    double scale,
    double lo,
    double hi,
    int64_t out_size,
    at::ScalarType dtype,
    bool channels_last);

// Streaming mean / co-moment (float64) of the rows seen so far; n counts rows before `batch`.
void cov_update_(const at::Tensor& mean, const at::Tensor& comoment, int64_t n, const at::Tensor& batch);

// Exact (Chan et al.) merge of another (mean, co-moment, count) state into this one.
void cov_merge_(
    const at::Tensor& mean,
    const at::Tensor& comoment,
    int64_t n,
    const at::Tensor& other_mean,
    const at::Tensor& other_comoment,
    int64_t other_n);

// Coupled Newton-Schulz square root of a symmetric PSD float64 matrix: (root, best relative
// residual as a 0-d float64 tensor, iterations run as a 0-d int64 tensor), all on a's device.
std::tuple<at::Tensor, at::Tensor, at::Tensor> sqrtm_newton_schulz(const at::Tensor& a, int64_t max_iter, double tol);

} // namespace fidfast::ops
