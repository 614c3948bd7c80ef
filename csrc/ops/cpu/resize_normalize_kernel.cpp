#include "../resize_normalize_math.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <array>

namespace fidfast::ops {

namespace {

template <typename out_t, int K>
void resize_normalize_rows(
    const uint8_t* data,
    const int64_t* meta,
    const int32_t* taps,
    const float* weights,
    int64_t k,
    const Normalization& norm,
    int64_t n,
    int64_t size,
    at::Tensor& out) {
  out_t* dst = out.data_ptr<out_t>();
  const int64_t sn = out.stride(0), sc = out.stride(1), sh = out.stride(2), sw = out.stride(3);
  std::array<float, 256> unit;  // p / divisor, without a division per read
  for (int p = 0; p < 256; ++p) {
    unit[p] = static_cast<float>(p) / norm.divisor;
  }
  // One task per output row of one image: per-row work does not depend on the input size.
  at::parallel_for(0, n * size, 8, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t i = row / size, oy = row % size;
      const ImageMeta m = read_meta(meta + kMetaCols * i);
      const int64_t y = (m.ytab + oy) * k;
      out_t* o = dst + i * sn + oy * sh;
      for (int64_t ox = 0; ox < size; ++ox) {
        const int64_t x = (m.xtab + ox) * k;
        float rgb[3];
        resize_normalize_pixel<K>(
            data + m.offset, m, taps + y, weights + y, taps + x, weights + x, k, unit.data(), norm, rgb);
        for (int64_t ch = 0; ch < 3; ++ch) {
          o[ch * sc + ox * sw] = static_cast<out_t>(rgb[ch]);
        }
      }
    }
  });
}

at::Tensor resize_normalize_cpu(
    const at::Tensor& data,
    const at::Tensor& meta,
    const at::Tensor& taps,
    const at::Tensor& weights,
    double divisor,
    double shift,
    double scale,
    int64_t out_size,
    at::ScalarType dtype,
    bool channels_last) {
  TORCH_CHECK(data.device().is_cpu() && meta.device().is_cpu() && taps.device().is_cpu() && weights.device().is_cpu(),
              "resize_normalize: data, meta and the tables must be on the CPU");
  const Normalization norm{static_cast<float>(divisor), static_cast<float>(shift), static_cast<float>(scale)};
  check_resize_normalize_args(data, meta, taps, weights, norm, out_size, dtype);
  const at::Tensor meta_c = meta.contiguous(), taps_c = taps.contiguous(), weights_c = weights.contiguous();
  const int64_t n = meta_c.size(0);
  at::Tensor out = at::empty(
      {n, 3, out_size, out_size},
      data.options().dtype(dtype),
      channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  const auto run = [&](auto tag) {
    using out_t = decltype(tag);
    const auto rows = taps_c.size(1) == 2 ? resize_normalize_rows<out_t, 2> : resize_normalize_rows<out_t, 0>;
    rows(data.const_data_ptr<uint8_t>(), meta_c.const_data_ptr<int64_t>(), taps_c.const_data_ptr<int32_t>(),
         weights_c.const_data_ptr<float>(), taps_c.size(1), norm, n, out_size, out);
  };
  if (dtype == at::kFloat) {
    run(float{});
  } else {
    run(at::Half{});
  }
  return out;
}

} // namespace

TORCH_LIBRARY_IMPL(fidfast, CPU, m) {
  m.impl("resize_normalize", &resize_normalize_cpu);
}

} // namespace fidfast::ops
