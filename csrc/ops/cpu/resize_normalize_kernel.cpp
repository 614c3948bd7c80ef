#include "../resize_normalize_math.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <array>
#include <vector>

namespace fidfast::ops {

namespace {

template <typename out_t>
void resize_normalize_rows(const uint8_t* data, const int64_t* meta, int64_t n, int64_t size, at::Tensor& out) {
  out_t* dst = out.data_ptr<out_t>();
  const int64_t sn = out.stride(0), sc = out.stride(1), sh = out.stride(2), sw = out.stride(3);
  // Column taps depend only on an image's width: computed once per image, not once per row.
  std::vector<LinearTap> xtaps(n * size);
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const ImageMeta m = read_meta(meta + 4 * i);
      const float scale_x = static_cast<float>(m.w) / static_cast<float>(size);
      for (int64_t ox = 0; ox < size; ++ox) {
        xtaps[i * size + ox] = linear_tap(ox, m.w, scale_x);
      }
    }
  });
  std::array<float, 256> units;  // the same p/255 values as unit(), without a division per read
  for (int p = 0; p < 256; ++p) {
    units[p] = unit(static_cast<uint8_t>(p));
  }
  const auto to_unit = [&units](uint8_t p) { return units[p]; };
  // One task per output row of one image: per-row work does not depend on the input size.
  at::parallel_for(0, n * size, 8, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t i = row / size, oy = row % size;
      const ImageMeta m = read_meta(meta + 4 * i);
      const LinearTap ty = linear_tap(oy, m.h, static_cast<float>(m.h) / static_cast<float>(size));
      const LinearTap* tx = xtaps.data() + i * size;
      out_t* o = dst + i * sn + oy * sh;
      for (int64_t ox = 0; ox < size; ++ox) {
        float rgb[3];
        resize_normalize_pixel(data + m.offset, m, ty, tx[ox], to_unit, rgb);
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
    int64_t out_size,
    at::ScalarType dtype,
    bool channels_last) {
  TORCH_CHECK(data.device().is_cpu() && meta.device().is_cpu(), "resize_normalize: data and meta must be on the CPU");
  check_resize_normalize_args(data, meta, out_size, dtype);
  const at::Tensor meta_c = meta.contiguous();
  const int64_t n = meta_c.size(0);
  at::Tensor out = at::empty(
      {n, 3, out_size, out_size},
      data.options().dtype(dtype),
      channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  if (dtype == at::kFloat) {
    resize_normalize_rows<float>(data.const_data_ptr<uint8_t>(), meta_c.const_data_ptr<int64_t>(), n, out_size, out);
  } else {
    resize_normalize_rows<at::Half>(data.const_data_ptr<uint8_t>(), meta_c.const_data_ptr<int64_t>(), n, out_size, out);
  }
  return out;
}

} // namespace

TORCH_LIBRARY_IMPL(fidfast, CPU, m) {
  m.impl("resize_normalize", &resize_normalize_cpu);
}

} // namespace fidfast::ops
