#pragma once

// Arithmetic of pytorch-fid's preprocessing, shared by the CPU and CUDA kernels so both
// produce the same floats: x = p/255, bilinear resize (align_corners=False, no antialias)
// exactly as ATen's upsample_bilinear2d, then 2x - 1.

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>

namespace fidfast::ops {

// One row of `meta`: where an H x W x C uint8 image starts in `data`.
struct ImageMeta {
  int64_t offset, h, w, c;
};

C10_HOST_DEVICE inline ImageMeta read_meta(const int64_t* row) {
  return {row[0], row[1], row[2], row[3]};
}

// Source indices and weights along one axis for output index `dst`.
struct LinearTap {
  int64_t i0, i1;
  float w0, w1;
};

// a*b + c with a single rounding, as a fused multiply-add computes it. ATen's kernels get their
// FMAs from compiler contraction (AVX2/AVX-512/aarch64 builds, nvcc), so matching them needs
// explicit ones. On the host, where this library is built without -mfma and fmaf would be a
// libm call per use, it is evaluated in double: a*b is exact there, and the double-then-float
// rounding of the sum differs from one fused rounding in ~2^-29 of cases, by one ulp.
C10_HOST_DEVICE inline float fma32(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return fmaf(a, b, c);
#else
  return static_cast<float>(static_cast<double>(a) * static_cast<double>(b) + static_cast<double>(c));
#endif
}

// Mirrors ATen's area_pixel_compute_source_index + guard_index_and_lambda in float32
// (UpSample.h), with scale = (float)in / out as area_pixel_compute_scale computes it. Without
// the FMA the source index can differ by half an ulp of ~in_size, i.e. outputs by up to ~1e-5.
C10_HOST_DEVICE inline LinearTap linear_tap(int64_t dst, int64_t in_size, float scale) {
  float src = fma32(scale, static_cast<float>(dst) + 0.5f, -0.5f);
  if (src < 0.f) {
    src = 0.f;
  }
  int64_t i0 = static_cast<int64_t>(src);  // src >= 0, so truncation is floor
  if (i0 > in_size - 1) {
    i0 = in_size - 1;
  }
  float w1 = src - i0;
  w1 = w1 < 0.f ? 0.f : (w1 > 1.f ? 1.f : w1);
  return {i0, i0 < in_size - 1 ? i0 + 1 : i0, 1.f - w1, w1};
}

C10_HOST_DEVICE inline float unit(uint8_t p) {
  return static_cast<float>(p) / 255.f;  // a division, as ToTensor does, not a multiply by 1/255
}

// v0*w0 + v1*w1 rounded as ATen's contracted kernel rounds it.
C10_HOST_DEVICE inline float lerp2(float v0, float w0, float v1, float w1) {
  return fma32(v0, w0, v1 * w1);
}

// One output value from the 2x2 source neighbourhood (already divided by 255): along each row
// first, then between the two rows, as ATen evaluates it; then 2x - 1.
C10_HOST_DEVICE inline float bilinear_normalize(
    float v00,
    float v01,
    float v10,
    float v11,
    const LinearTap& ty,
    const LinearTap& tx) {
  const float top = lerp2(v00, tx.w0, v01, tx.w1);
  const float bottom = lerp2(v10, tx.w0, v11, tx.w1);
  return 2.f * lerp2(top, ty.w0, bottom, ty.w1) - 1.f;
}

// The three output channels of one output pixel; grey (c == 1) is replicated. `to_unit` maps
// a byte to p/255 (a division on the GPU, a lookup table of the same values on the CPU).
template <typename ToUnit>
C10_HOST_DEVICE inline void resize_normalize_pixel(
    const uint8_t* img,
    const ImageMeta& m,
    const LinearTap& ty,
    const LinearTap& tx,
    ToUnit to_unit,
    float rgb[3]) {
  const uint8_t* r0 = img + ty.i0 * m.w * m.c;
  const uint8_t* r1 = img + ty.i1 * m.w * m.c;
  const int64_t x0 = tx.i0 * m.c;
  const int64_t x1 = tx.i1 * m.c;
  for (int ch = 0; ch < 3; ++ch) {
    if (ch == 0 || m.c == 3) {
      rgb[ch] = bilinear_normalize(
          to_unit(r0[x0 + ch]), to_unit(r0[x1 + ch]), to_unit(r1[x0 + ch]), to_unit(r1[x1 + ch]), ty, tx);
    } else {
      rgb[ch] = rgb[0];
    }
  }
}

// Host-side argument checks shared by both kernels. `meta_cpu` is `meta` on the CPU: every
// image must lie inside `data`, since the kernels read pixels without bounds checks.
inline void check_resize_normalize_args(
    const at::Tensor& data,
    const at::Tensor& meta_cpu,
    int64_t out_size,
    at::ScalarType dtype) {
  TORCH_CHECK(data.scalar_type() == at::kByte, "resize_normalize: data must be uint8, got ", data.scalar_type());
  TORCH_CHECK(data.dim() == 1 && data.is_contiguous(), "resize_normalize: data must be a contiguous 1-D tensor");
  TORCH_CHECK(meta_cpu.scalar_type() == at::kLong, "resize_normalize: meta must be int64, got ", meta_cpu.scalar_type());
  TORCH_CHECK(meta_cpu.dim() == 2 && meta_cpu.size(1) == 4, "resize_normalize: meta must be [N, 4], got ", meta_cpu.sizes());
  TORCH_CHECK(out_size >= 1, "resize_normalize: out_size must be >= 1, got ", out_size);
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf, "resize_normalize: dtype must be float32 or float16, got ", dtype);
  const int64_t numel = data.numel();
  const at::Tensor meta = meta_cpu.contiguous();
  const int64_t* rows = meta.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < meta.size(0); ++i) {
    const ImageMeta m = read_meta(rows + 4 * i);
    TORCH_CHECK(m.c == 1 || m.c == 3, "resize_normalize: image ", i, " has C=", m.c, ", expected 1 or 3");
    TORCH_CHECK(m.h >= 1 && m.w >= 1, "resize_normalize: image ", i, " has H=", m.h, ", W=", m.w, ", expected >= 1");
    TORCH_CHECK(m.offset >= 0 && m.offset <= numel, "resize_normalize: image ", i, " offset ", m.offset,
                " is outside data (", numel, " bytes)");
    // Written to avoid overflowing H*W*C: W <= avail keeps W*C small, then divide.
    const int64_t avail = numel - m.offset;
    TORCH_CHECK(m.w <= avail && m.h <= avail / (m.w * m.c), "resize_normalize: image ", i, " (offset ", m.offset,
                ", ", m.h, "x", m.w, "x", m.c, ") runs past the end of data (", numel, " bytes)");
  }
}

} // namespace fidfast::ops
