// The CUDA kernels of resize_normalize and their launcher (launchers.h); the host side is
// resize_normalize_cuda.cpp.

#include "../resize_normalize_math.h"
#include "cuda_helpers.h"
#include "launchers.h"

#include <c10/util/Half.h>

#include <type_traits>

namespace fidfast::ops {

namespace {

// One thread per output pixel across the whole batch; each reads its image's meta row, its two
// table rows and up to K*K*C source values, and writes the 3 channels through the output strides
// (NCHW or channels_last).
template <typename in_t, typename out_t, int K, typename Unit>
__global__ void resize_normalize_kernel(
    const in_t* __restrict__ data,
    const int64_t* __restrict__ meta,
    const int32_t* __restrict__ taps,
    const float* __restrict__ weights,
    int64_t k,
    Unit unit,
    Normalization norm,
    int64_t n,
    int64_t size,
    out_t* __restrict__ out,
    int64_t sn,
    int64_t sc,
    int64_t sh,
    int64_t sw) {
  FIDFAST_CUDA_1D_LOOP(idx, n * size * size) {
    const int64_t ox = idx % size;
    const int64_t oy = (idx / size) % size;
    const int64_t i = idx / (size * size);
    const ImageMeta m = read_meta(meta + kMetaCols * i);
    const in_t* img = data + m.offset;
    const int64_t y = (m.ytab + oy) * k, x = (m.xtab + ox) * k;
    out_t* o = out + i * sn + oy * sh + ox * sw;
    float value = 0.f;
    for (int ch = 0; ch < 3; ++ch) {
      if (ch == 0 || m.c == 3) {
        value = normalize(tap_sum<K>(taps + y, weights + y, k, [&](int32_t iy) {
          const in_t* row = img + iy * m.w * m.c + ch;
          return tap_sum<K>(taps + x, weights + x, k, [&](int32_t ix) { return unit(row[ix * m.c]); });
        }), norm);
      }
      o[ch * sc] = static_cast<out_t>(value);  // grey: the one channel, three times
    }
  }
}

// p / divisor for every byte, in constant memory's place: a small device table, the same values as
// the CPU kernel's (one IEEE division each).
__global__ void unit_table_kernel(float* table, float divisor) {
  const int p = threadIdx.x;
  table[p] = static_cast<float>(p) / divisor;
}

template <typename in_t, typename out_t, typename Unit>
cudaError_t launch_with_unit(
    const in_t* data,
    Unit unit,
    out_t* out,
    const ResizeNormalizeArgs& a,
    cudaStream_t stream) {
  const auto kernel =
      a.k == 2 ? resize_normalize_kernel<in_t, out_t, 2, Unit> : resize_normalize_kernel<in_t, out_t, 0, Unit>;
  kernel<<<grid_for(a.n * a.size * a.size), kThreads, 0, stream>>>(
      data, a.meta, a.taps, a.weights, a.k, unit, a.norm, a.n, a.size, out, a.sn, a.sc, a.sh, a.sw);
  return cudaGetLastError();
}

} // namespace

template <typename in_t, typename out_t>
cudaError_t launch_resize_normalize(
    const in_t* data,
    float* unit_table,
    out_t* out,
    const ResizeNormalizeArgs& args,
    cudaStream_t stream) {
  if constexpr (std::is_same_v<in_t, uint8_t>) {
    unit_table_kernel<<<1, 256, 0, stream>>>(unit_table, args.norm.divisor);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) {
      return err;
    }
    return launch_with_unit(data, UnitTable{unit_table}, out, args, stream);
  } else {
    return launch_with_unit(data, UnitDivide{args.norm.divisor}, out, args, stream);
  }
}

template cudaError_t launch_resize_normalize<uint8_t, float>(
    const uint8_t*, float*, float*, const ResizeNormalizeArgs&, cudaStream_t);
template cudaError_t launch_resize_normalize<uint8_t, c10::Half>(
    const uint8_t*, float*, c10::Half*, const ResizeNormalizeArgs&, cudaStream_t);
template cudaError_t launch_resize_normalize<float, float>(
    const float*, float*, float*, const ResizeNormalizeArgs&, cudaStream_t);
template cudaError_t launch_resize_normalize<float, c10::Half>(
    const float*, float*, c10::Half*, const ResizeNormalizeArgs&, cudaStream_t);

} // namespace fidfast::ops
