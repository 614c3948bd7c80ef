#pragma once

// Arithmetic of the preprocessing, shared by the CPU and CUDA kernels so both produce the same
// floats. A protocol is data, not code: per-axis tables give, for each output index, K source
// indices and weights (computed once per input size by fidfast/preprocess.py), and
//   unit  = p / divisor                       (a division, as ToTensor's p/255)
//   value = sum over rows of w_y * (sum over columns of w_x * unit), each sum rounded to float32
//   out   = clamp((value - shift) * scale, lo, hi)   (scale a power of two: exact as a division)
// Two-tap sums (bilinear) run from the last tap to the first with fused multiply-adds,
// fma(v0, w0, v1 * w1), which is how ATen's bilinear kernel rounds (compiler-contracted); wider
// ones are summed in double, as PIL sums them. Pixels are uint8 (decoded images) or float32
// (tensor inputs), H x W x C with C = 1 (grey) or 3.

#include <c10/macros/Macros.h>

#include <cstdint>

namespace fidfast::ops {

// One row of `meta`: an H x W x C image at element `offset` of `data`, and the first rows of the
// tables for its height (ytab) and width (xtab).
constexpr int64_t kMetaCols = 6;

struct ImageMeta {
  int64_t offset, h, w, c, ytab, xtab;
};

C10_HOST_DEVICE inline ImageMeta read_meta(const int64_t* row) {
  return {row[0], row[1], row[2], row[3], row[4], row[5]};
}

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

// sum_j sample(taps[j]) * weights[j] over k >= 1 taps, last tap first (see the top of this file).
// K = 2 (bilinear, unrolled) sums in float32 with fused multiply-adds, as ATen rounds; K = 0 takes k at
// run time (the wide kernels of antialiased and bicubic resizing) and sums in double, as PIL does,
// rounding the result once.
template <int K, typename Sample>
C10_HOST_DEVICE inline float tap_sum(const int32_t* taps, const float* weights, int64_t k, Sample sample) {
  if constexpr (K > 0) {
    float acc = sample(taps[K - 1]) * weights[K - 1];
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int j = K - 2; j >= 0; --j) {
      acc = fma32(sample(taps[j]), weights[j], acc);
    }
    return acc;
  } else {
    double acc = 0.0;
    for (int64_t j = k - 1; j >= 0; --j) {
      acc += static_cast<double>(sample(taps[j])) * static_cast<double>(weights[j]);
    }
    return static_cast<float>(acc);
  }
}

// The preprocessing constants of a protocol (see the top of this file).
struct Normalization {
  float divisor, shift, scale, lo, hi;
};

C10_HOST_DEVICE inline float normalize(float value, const Normalization& n) {
  const float x = (value - n.shift) * n.scale;
  return x < n.lo ? n.lo : (x > n.hi ? n.hi : x);
}

// The unit value of a pixel: a table of p / divisor for uint8 (one division per value, not per
// read), a division for float32.
struct UnitTable {
  const float* of;  // 256 entries
  C10_HOST_DEVICE float operator()(uint8_t p) const {
    return of[p];
  }
};

struct UnitDivide {
  float divisor;
  C10_HOST_DEVICE float operator()(float p) const {
    return p / divisor;
  }
};

} // namespace fidfast::ops
