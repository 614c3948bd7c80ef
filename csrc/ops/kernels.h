#pragma once

// The devices' implementations of the ops. Each op's one entry (csrc/ops/<op>.cpp), registered for
// CPU and CUDA alike, checks every argument and then calls one of these, which check nothing:
// cpu/<op>_kernel.cpp and, in a CUDA build, cuda/<op>_cuda.cpp (which launch cuda/<op>_kernel.cu).

#include "resize_normalize_math.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>

namespace fidfast::ops {

// resize_normalize's meta and tables on the host, contiguous: the very tensors that were checked
// and that the kernel reads (the CUDA implementation uploads them).
struct ResizeTables {
  at::Tensor meta, taps, weights;
};

at::Tensor resize_normalize_cpu(
    const at::Tensor& data,
    const ResizeTables& host,
    const Normalization& norm,
    int64_t out_size,
    at::ScalarType dtype,
    bool channels_last);
// cov_update_ gets a non-empty batch; cov_merge_ a non-empty other state that it can read while it
// writes (a copy where it is the state itself).
void cov_update_cpu(const at::Tensor& mean, const at::Tensor& comoment, int64_t n, const at::Tensor& batch);
void cov_merge_cpu(
    const at::Tensor& mean,
    const at::Tensor& comoment,
    int64_t n,
    const at::Tensor& other_mean,
    const at::Tensor& other_comoment,
    int64_t other_n);
std::tuple<at::Tensor, at::Tensor, at::Tensor> sqrtm_newton_schulz_cpu(const at::Tensor& a, int64_t max_iter, double tol);

#ifdef FIDFAST_WITH_CUDA
// Private pinned copies of meta and the tables, from wherever they are (see resize_normalize_cuda.cpp).
ResizeTables resize_normalize_host_copies_cuda(const ResizeTables& given);
at::Tensor resize_normalize_cuda(
    const at::Tensor& data,
    const ResizeTables& host,
    const Normalization& norm,
    int64_t out_size,
    at::ScalarType dtype,
    bool channels_last);
void cov_update_cuda(const at::Tensor& mean, const at::Tensor& comoment, int64_t n, const at::Tensor& batch);
void cov_merge_cuda(
    const at::Tensor& mean,
    const at::Tensor& comoment,
    int64_t n,
    const at::Tensor& other_mean,
    const at::Tensor& other_comoment,
    int64_t other_n);
std::tuple<at::Tensor, at::Tensor, at::Tensor> sqrtm_newton_schulz_cuda(const at::Tensor& a, int64_t max_iter, double tol);
#endif

// The Newton-Schulz iteration (sqrtm_newton_schulz_math.h) on a checked float64 [d, d] matrix, with
// its two elementwise steps supplied by the device:
//   make_t(zy)              zy <- (3I - zy)/2 in place
//   residual_sq(y2, a, s)   sum over entries of (s*y2 - a)^2, as a host double
using MakeT = void (*)(at::Tensor& zy);
using ResidualSq = double (*)(const at::Tensor& y2, const at::Tensor& a, double s);
std::tuple<at::Tensor, at::Tensor, at::Tensor> newton_schulz(
    const at::Tensor& a,
    int64_t max_iter,
    double tol,
    MakeT make_t,
    ResidualSq residual_sq);

} // namespace fidfast::ops
