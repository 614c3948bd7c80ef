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

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <utility>
#include <vector>

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

// Host-side argument checks shared by both kernels, on host copies of meta and the tables: every
// image must lie inside `data` and every tap inside its image, since the kernels read pixels
// without bounds checks.
inline void check_resize_normalize_args(
    const at::Tensor& data,
    const at::Tensor& meta_cpu,
    const at::Tensor& taps_cpu,
    const at::Tensor& weights_cpu,
    const Normalization& norm,
    int64_t out_size,
    at::ScalarType dtype) {
  TORCH_CHECK(data.scalar_type() == at::kByte || data.scalar_type() == at::kFloat,
              "resize_normalize: data must be uint8 or float32, got ", data.scalar_type());
  TORCH_CHECK(data.dim() == 1 && data.is_contiguous(), "resize_normalize: data must be a contiguous 1-D tensor");
  TORCH_CHECK(meta_cpu.scalar_type() == at::kLong, "resize_normalize: meta must be int64, got ", meta_cpu.scalar_type());
  TORCH_CHECK(meta_cpu.dim() == 2 && meta_cpu.size(1) == kMetaCols, "resize_normalize: meta must be [N, ", kMetaCols,
              "], got ", meta_cpu.sizes());
  TORCH_CHECK(taps_cpu.scalar_type() == at::kInt && weights_cpu.scalar_type() == at::kFloat,
              "resize_normalize: taps must be int32 and weights float32, got ", taps_cpu.scalar_type(), " and ",
              weights_cpu.scalar_type());
  TORCH_CHECK(taps_cpu.dim() == 2 && taps_cpu.size(1) >= 1 && weights_cpu.sizes() == taps_cpu.sizes(),
              "resize_normalize: taps and weights must be [R, K] with K >= 1, got ", taps_cpu.sizes(), " and ",
              weights_cpu.sizes());
  TORCH_CHECK(out_size >= 1, "resize_normalize: out_size must be >= 1, got ", out_size);
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf, "resize_normalize: dtype must be float32 or float16, got ", dtype);
  TORCH_CHECK(norm.divisor > 0.f && norm.scale != 0.f && !(norm.lo > norm.hi),
              "resize_normalize: divisor must be > 0, scale non-zero and lo <= hi");
  const int64_t numel = data.numel();
  const int64_t rows = taps_cpu.size(0), k = taps_cpu.size(1);
  const at::Tensor meta = meta_cpu.contiguous();
  const at::Tensor taps = taps_cpu.contiguous();
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

} // namespace fidfast::ops
