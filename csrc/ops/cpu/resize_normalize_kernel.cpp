// The CPU implementation of resize_normalize, on arguments its entry (../resize_normalize.cpp) has checked.

#include "../kernels.h"
#include "../resize_normalize_math.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Half.h>

#include <array>
#include <vector>

namespace fidfast::ops {

namespace {

// One image, separably: each input row that an output row reads is resampled along x once (kept in
// `rows`), then every output value sums those along y. The floats are the CUDA kernel's, which sums
// the same row values in the same order for each output pixel instead of keeping them.
template <int K, typename in_t, typename out_t, typename Unit>
void resize_normalize_image(
    const in_t* img,
    const ImageMeta& m,
    const int32_t* taps,
    const float* weights,
    int64_t k,
    Unit unit,
    const Normalization& norm,
    int64_t size,
    out_t* out,
    int64_t sc,
    int64_t sh,
    int64_t sw,
    std::vector<float>& rows,
    std::vector<uint8_t>& used) {
  const int64_t n = K > 0 ? K : k;
  const int32_t* ytaps = taps + m.ytab * k;
  const float* yweights = weights + m.ytab * k;
  const int32_t* xtaps = taps + m.xtab * k;
  const float* xweights = weights + m.xtab * k;
  used.assign(m.h, 0);
  for (int64_t t = 0; t < size * k; ++t) {
    if (t % k < n) {
      used[ytaps[t]] = 1;
    }
  }
  rows.resize(m.h * size * m.c);
  for (int64_t iy = 0; iy < m.h; ++iy) {
    if (!used[iy]) {
      continue;
    }
    const in_t* src = img + iy * m.w * m.c;
    float* row = rows.data() + iy * size * m.c;
    for (int64_t ox = 0; ox < size; ++ox) {
      for (int64_t ch = 0; ch < m.c; ++ch) {
        row[ox * m.c + ch] =
            tap_sum<K>(xtaps + ox * k, xweights + ox * k, k, [&](int32_t ix) { return unit(src[ix * m.c + ch]); });
      }
    }
  }
  for (int64_t oy = 0; oy < size; ++oy) {
    for (int64_t ox = 0; ox < size; ++ox) {
      out_t* o = out + oy * sh + ox * sw;
      float value = 0.f;
      for (int64_t ch = 0; ch < 3; ++ch) {
        if (ch == 0 || m.c == 3) {
          value = normalize(tap_sum<K>(ytaps + oy * k, yweights + oy * k, k, [&](int32_t iy) {
            return rows[(iy * size + ox) * m.c + ch];
          }), norm);
        }
        o[ch * sc] = static_cast<out_t>(value);  // grey: the one channel, three times
      }
    }
  }
}

template <typename in_t, typename out_t, int K, typename Unit>
void resize_normalize_batch(
    const in_t* data,
    const int64_t* meta,
    const int32_t* taps,
    const float* weights,
    int64_t k,
    Unit unit,
    const Normalization& norm,
    int64_t n,
    int64_t size,
    at::Tensor& out) {
  out_t* dst = out.data_ptr<out_t>();
  const int64_t sn = out.stride(0), sc = out.stride(1), sh = out.stride(2), sw = out.stride(3);
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> rows;
    std::vector<uint8_t> used;
    for (int64_t i = begin; i < end; ++i) {
      const ImageMeta m = read_meta(meta + kMetaCols * i);
      resize_normalize_image<K>(data + m.offset, m, taps, weights, k, unit, norm, size, dst + i * sn, sc, sh, sw,
                                rows, used);
    }
  });
}

} // namespace

at::Tensor resize_normalize_cpu(
    const at::Tensor& data,
    const ResizeTables& host,
    const Normalization& norm,
    int64_t out_size,
    at::ScalarType dtype,
    bool channels_last) {
  const int64_t n = host.meta.size(0), k = host.taps.size(1);
  at::Tensor out = at::empty(
      {n, 3, out_size, out_size},
      data.options().dtype(dtype),
      channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  std::array<float, 256> table;  // the same p / divisor as UnitDivide computes, once per value
  for (int p = 0; p < 256; ++p) {
    table[p] = static_cast<float>(p) / norm.divisor;
  }
  const auto run = [&](auto in_tag, auto out_tag, auto unit) {
    using in_t = decltype(in_tag);
    using out_t = decltype(out_tag);
    const auto batch = k == 2 ? resize_normalize_batch<in_t, out_t, 2, decltype(unit)>
                              : resize_normalize_batch<in_t, out_t, 0, decltype(unit)>;
    batch(data.const_data_ptr<in_t>(), host.meta.const_data_ptr<int64_t>(), host.taps.const_data_ptr<int32_t>(),
          host.weights.const_data_ptr<float>(), k, unit, norm, n, out_size, out);
  };
  const bool half = dtype == at::kHalf;
  if (data.scalar_type() == at::kByte) {
    const UnitTable unit{table.data()};
    half ? run(uint8_t{}, at::Half{}, unit) : run(uint8_t{}, float{}, unit);
  } else {
    const UnitDivide unit{norm.divisor};
    half ? run(float{}, at::Half{}, unit) : run(float{}, float{}, unit);
  }
  return out;
}

} // namespace fidfast::ops
