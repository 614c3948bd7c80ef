// Schema and C++ entry point of fidfast::resize_normalize; kernels live in cpu/ and cuda/.

#include "ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace fidfast::ops {

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
    bool channels_last) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fidfast::resize_normalize", "")
                       .typed<decltype(resize_normalize)>();
  return op.call(data, meta, taps, weights, divisor, shift, scale, lo, hi, out_size, dtype, channels_last);
}

TORCH_LIBRARY_FRAGMENT(fidfast, m) {
  m.def(
      "resize_normalize(Tensor data, Tensor meta, Tensor taps, Tensor weights, float divisor, float shift, "
      "float scale, float lo, float hi, int out_size, ScalarType dtype, bool channels_last) -> Tensor");
}

} // namespace fidfast::ops
