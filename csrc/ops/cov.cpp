// Schemas and C++ entry points of fidfast::cov_update_ and fidfast::cov_merge_; kernels live
// in cpu/ and cuda/.

#include "ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
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

} // namespace fidfast::ops
