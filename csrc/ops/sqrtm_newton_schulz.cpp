// Schema and C++ entry point of fidfast::sqrtm_newton_schulz; kernels live in cpu/ and cuda/.

#include "ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace fidfast::ops {

std::tuple<at::Tensor, at::Tensor, at::Tensor> sqrtm_newton_schulz(const at::Tensor& a, int64_t max_iter, double tol) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fidfast::sqrtm_newton_schulz", "")
                       .typed<decltype(sqrtm_newton_schulz)>();
  return op.call(a, max_iter, tol);
}

// The residual and iteration count are tensors, not Python numbers, so that a fake kernel can
// describe the outputs without running the iteration (torch.compile, FakeTensor).
TORCH_LIBRARY_FRAGMENT(fidfast, m) {
  m.def("sqrtm_newton_schulz(Tensor a, int max_iter, float tol) -> (Tensor, Tensor, Tensor)");
}

} // namespace fidfast::ops
