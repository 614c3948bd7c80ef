// fidfast::resize_normalize: its schema, every check of its arguments, and its one entry, the kernel
// registered for CPU and CUDA alike, which checks and then runs the device's implementation
// (cpu/resize_normalize_kernel.cpp, cuda/resize_normalize_cuda.cpp). See resize_normalize_math.h.

#include "kernels.h"
#include "ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <utility>
#include <vector>

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

namespace {

// Every check of resize_normalize's arguments, for both devices. `given` are meta and the tables as
// passed (their devices are checked); their contents are checked on `host`, the host copies that the
// kernel will read: every image must lie inside `data` and every tap inside its image, since the
// kernels read pixels without bounds checks.
void check_resize_normalize_args(
    const at::Tensor& data,
    const ResizeTables& given,
    const ResizeTables& host,
    const Normalization& norm,
    int64_t out_size,
    at::ScalarType dtype) {
  for (const at::Tensor* t : {&given.meta, &given.taps, &given.weights}) {
    TORCH_CHECK(t->is_cpu() || t->device() == data.device(),
                "resize_normalize: meta and the tables must be on the CPU or on data's device, got ", t->device());
  }
  TORCH_CHECK(data.scalar_type() == at::kByte || data.scalar_type() == at::kFloat,
              "resize_normalize: data must be uint8 or float32, got ", data.scalar_type());
  TORCH_CHECK(data.dim() == 1 && data.is_contiguous(), "resize_normalize: data must be a contiguous 1-D tensor");
  const at::Tensor& meta = host.meta;
  const at::Tensor& taps = host.taps;
  TORCH_CHECK(meta.scalar_type() == at::kLong, "resize_normalize: meta must be int64, got ", meta.scalar_type());
  TORCH_CHECK(meta.dim() == 2 && meta.size(1) == kMetaCols, "resize_normalize: meta must be [N, ", kMetaCols,
              "], got ", meta.sizes());
  TORCH_CHECK(taps.scalar_type() == at::kInt && host.weights.scalar_type() == at::kFloat,
              "resize_normalize: taps must be int32 and weights float32, got ", taps.scalar_type(), " and ",
              host.weights.scalar_type());
  TORCH_CHECK(taps.dim() == 2 && taps.size(1) >= 1 && host.weights.sizes() == taps.sizes(),
              "resize_normalize: taps and weights must be [R, K] with K >= 1, got ", taps.sizes(), " and ",
              host.weights.sizes());
  TORCH_CHECK(out_size >= 1, "resize_normalize: out_size must be >= 1, got ", out_size);
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf, "resize_normalize: dtype must be float32 or float16, got ", dtype);
  TORCH_CHECK(norm.divisor > 0.f && norm.scale != 0.f && !(norm.lo > norm.hi),
              "resize_normalize: divisor must be > 0, scale non-zero and lo <= hi");
  const int64_t numel = data.numel();
  const int64_t rows = taps.size(0), k = taps.size(1);
  const int64_t* meta_rows = meta.const_data_ptr<int64_t>();
  const int32_t* tap = taps.const_data_ptr<int32_t>();
  // (first table row, input length) pairs already checked: a batch usually repeats a few sizes.
  std::vector<std::pair<int64_t, int64_t>> checked;
  const auto check_table = [&](int64_t i, const char* axis, int64_t first, int64_t length) {
    TORCH_CHECK(first >= 0 && first <= rows - out_size, "resize_normalize: image ", i, "'s ", axis, " table (row ",
                first, ") needs ", out_size, " of the ", rows, " table rows");
    for (const auto& seen : checked) {
      if (seen.first == first && seen.second == length) {
        return;
      }
    }
    for (int64_t r = first * k; r < (first + out_size) * k; ++r) {
      TORCH_CHECK(tap[r] >= 0 && tap[r] < length, "resize_normalize: image ", i, "'s ", axis, " table has tap ",
                  tap[r], ", outside 0..", length - 1);
    }
    checked.emplace_back(first, length);
  };
  for (int64_t i = 0; i < meta.size(0); ++i) {
    const ImageMeta m = read_meta(meta_rows + kMetaCols * i);
    TORCH_CHECK(m.c == 1 || m.c == 3, "resize_normalize: image ", i, " has C=", m.c, ", expected 1 or 3");
    TORCH_CHECK(m.h >= 1 && m.w >= 1, "resize_normalize: image ", i, " has H=", m.h, ", W=", m.w, ", expected >= 1");
    TORCH_CHECK(m.offset >= 0 && m.offset <= numel, "resize_normalize: image ", i, " offset ", m.offset,
                " is outside data (", numel, " elements)");
    // Written to avoid overflowing H*W*C: W <= avail keeps W*C small, then divide.
    const int64_t avail = numel - m.offset;
    TORCH_CHECK(m.w <= avail && m.h <= avail / (m.w * m.c), "resize_normalize: image ", i, " (offset ", m.offset,
                ", ", m.h, "x", m.w, "x", m.c, ") runs past the end of data (", numel, " elements)");
    check_table(i, "height", m.ytab, m.h);
    check_table(i, "width", m.xtab, m.w);
  }
}

// meta and the tables as the kernel will read them, on the host and contiguous: for CPU data the
// tensors themselves, for CUDA data private pinned copies, which the CUDA implementation uploads
// (the checked copy: a caller that rewrites its tensors afterwards changes nothing).
ResizeTables host_tables(const at::Tensor& data, const ResizeTables& given) {
#ifdef FIDFAST_WITH_CUDA
  if (data.is_cuda()) {
    return resize_normalize_host_copies_cuda(given);
  }
#endif
  return {given.meta.contiguous(), given.taps.contiguous(), given.weights.contiguous()};
}

at::Tensor checked_resize_normalize(
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
  const Normalization norm{static_cast<float>(divisor), static_cast<float>(shift), static_cast<float>(scale),
                           static_cast<float>(lo), static_cast<float>(hi)};
  const ResizeTables given{meta, taps, weights};
  const ResizeTables host = host_tables(data, given);
  check_resize_normalize_args(data, given, host, norm, out_size, dtype);
#ifdef FIDFAST_WITH_CUDA
  if (data.is_cuda()) {
    return resize_normalize_cuda(data, host, norm, out_size, dtype, channels_last);
  }
#endif
  return resize_normalize_cpu(data, host, norm, out_size, dtype, channels_last);
}

} // namespace

TORCH_LIBRARY_IMPL(fidfast, CPU, m) {
  m.impl("resize_normalize", &checked_resize_normalize);
}

#ifdef FIDFAST_WITH_CUDA
TORCH_LIBRARY_IMPL(fidfast, CUDA, m) {
  m.impl("resize_normalize", &checked_resize_normalize);
}
#endif

} // namespace fidfast::ops
