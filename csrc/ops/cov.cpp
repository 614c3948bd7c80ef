// fidfast::cov_update_ and fidfast::cov_merge_: their schemas, every check of their arguments, and
// their one entry each, the kernel registered for CPU and CUDA alike, which checks and then runs the
// device's implementation (cpu/cov_kernel.cpp, cuda/cov_cuda.cpp). See cov_math.h.

#include "kernels.h"
#include "ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

namespace fidfast::ops {

void cov_update_(const at::Tensor& mean, const at::Tensor& comoment, int64_t n, const at::Tensor& batch) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("fidfast::cov_update_", "").typed<decltype(cov_update_)>();
  op.call(mean, comoment, n, batch);
}

void cov_merge_(
    const at::Tensor& mean,
    const at::Tensor& comoment,
    int64_t n,
    const at::Tensor& other_mean,
    const at::Tensor& other_comoment,
    int64_t other_n) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("fidfast::cov_merge_", "").typed<decltype(cov_merge_)>();
  op.call(mean, comoment, n, other_mean, other_comoment, other_n);
}

TORCH_LIBRARY_FRAGMENT(fidfast, m) {
  m.def("cov_update_(Tensor(a!) mean, Tensor(b!) comoment, int n, Tensor batch) -> ()");
  m.def(
      "cov_merge_(Tensor(a!) mean, Tensor(b!) comoment, int n, Tensor other_mean, Tensor other_comoment, "
      "int other_n) -> ()");
}

namespace {

// The checks of a (mean, comoment, n) state, shared by both ops.
void check_cov_state(const char* op, const at::Tensor& mean, const at::Tensor& comoment, int64_t n) {
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

// Every check of cov_update_'s arguments, for both devices.
void check_cov_update_args(const at::Tensor& mean, const at::Tensor& comoment, int64_t n, const at::Tensor& batch) {
  check_cov_state("cov_update_", mean, comoment, n);
  const auto t = batch.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kDouble,
              "cov_update_: batch must be float32, float16 or float64, got ", t);
  TORCH_CHECK(batch.dim() == 2 && batch.size(1) == mean.size(0), "cov_update_: batch must be [B, ", mean.size(0),
              "], got ", batch.sizes());
  TORCH_CHECK(batch.device() == mean.device(), "cov_update_: batch is on ", batch.device(), " but the state is on ",
              mean.device());
}

// Every check of cov_merge_'s arguments, for both devices.
void check_cov_merge_args(
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

// The other state as the merge may read it: a state merged into itself must be read from a copy,
// since the merge writes while it reads.
at::Tensor readable_while_writing(const at::Tensor& other, const at::Tensor& written) {
  return other.is_alias_of(written) ? other.clone() : other.contiguous();
}

void checked_cov_update_(const at::Tensor& mean, const at::Tensor& comoment, int64_t n, const at::Tensor& batch) {
  check_cov_update_args(mean, comoment, n, batch);
  if (batch.size(0) == 0 || batch.size(1) == 0) {
    return;  // nothing to add
  }
#ifdef FIDFAST_WITH_CUDA
  if (mean.is_cuda()) {
    cov_update_cuda(mean, comoment, n, batch);
    return;
  }
#endif
  cov_update_cpu(mean, comoment, n, batch);
}

void checked_cov_merge_(
    const at::Tensor& mean,
    const at::Tensor& comoment,
    int64_t n,
    const at::Tensor& other_mean,
    const at::Tensor& other_comoment,
    int64_t other_n) {
  check_cov_merge_args(mean, comoment, n, other_mean, other_comoment, other_n);
  if (other_n == 0) {
    return;
  }
  const at::Tensor om = readable_while_writing(other_mean, mean);
  const at::Tensor oc = readable_while_writing(other_comoment, comoment);
#ifdef FIDFAST_WITH_CUDA
  if (mean.is_cuda()) {
    cov_merge_cuda(mean, comoment, n, om, oc, other_n);
    return;
  }
#endif
  cov_merge_cpu(mean, comoment, n, om, oc, other_n);
}

} // namespace

TORCH_LIBRARY_IMPL(fidfast, CPU, m) {
  m.impl("cov_update_", &checked_cov_update_);
  m.impl("cov_merge_", &checked_cov_merge_);
}

#ifdef FIDFAST_WITH_CUDA
TORCH_LIBRARY_IMPL(fidfast, CUDA, m) {
  m.impl("cov_update_", &checked_cov_update_);
  m.impl("cov_merge_", &checked_cov_merge_);
}
#endif

} // namespace fidfast::ops
