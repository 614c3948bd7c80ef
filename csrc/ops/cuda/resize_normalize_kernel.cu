#include "../resize_normalize_math.h"
#include "cuda_helpers.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Half.h>
#include <torch/library.h>

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

// The checked copy: meta and the tables, wherever given, are copied into private pinned host memory,
// checked there, and that copy is what the kernel gets (uploaded without waiting, so it overlaps queued
// work). A caller that rewrites its own tensor before the stream reaches the upload changes nothing;
// the host allocator keeps the block until the upload is done. From the device the copy waits for the
// work queued before it.
at::Tensor host_copy(const at::Tensor& t) {
  at::Tensor pinned = at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(true));
  pinned.copy_(t);
  return pinned;
}

at::Tensor on_device(const at::Tensor& host, const at::Device& device) {
  return host.to(device, host.scalar_type(), /*non_blocking=*/true);
}

at::Tensor resize_normalize_cuda(
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
  TORCH_CHECK(data.is_cuda(), "resize_normalize: data must be on a CUDA device, got ", data.device());
  for (const at::Tensor* t : {&meta, &taps, &weights}) {
    TORCH_CHECK(t->is_cpu() || t->device() == data.device(),
                "resize_normalize: meta and the tables must be on the CPU or on data's device, got ", t->device());
  }
  const at::Tensor meta_host = host_copy(meta), taps_host = host_copy(taps), weights_host = host_copy(weights);
  const Normalization norm{static_cast<float>(divisor), static_cast<float>(shift), static_cast<float>(scale),
                           static_cast<float>(lo), static_cast<float>(hi)};
  // The bounds checks keep the kernel from reading outside `data`.
  check_resize_normalize_args(data, meta_host, taps_host, weights_host, norm, out_size, dtype);
  c10::cuda::CUDAGuard guard(data.device());
  const at::Tensor meta_d = on_device(meta_host, data.device());
  const at::Tensor taps_d = on_device(taps_host, data.device());
  const at::Tensor weights_d = on_device(weights_host, data.device());
  at::Tensor out = at::empty(
      {meta_d.size(0), 3, out_size, out_size},
      data.options().dtype(dtype),
      channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  if (out.numel() == 0) {
    return out;
  }
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t total = meta_d.size(0) * out_size * out_size, k = taps_d.size(1);
  const auto launch = [&](auto in_tag, auto out_tag, auto unit) {
    using in_t = decltype(in_tag);
    using out_t = decltype(out_tag);
    using unit_t = decltype(unit);
    const auto kernel = k == 2 ? resize_normalize_kernel<in_t, out_t, 2, unit_t>
                               : resize_normalize_kernel<in_t, out_t, 0, unit_t>;
    kernel<<<grid_for(total), kThreads, 0, stream>>>(
        data.const_data_ptr<in_t>(), meta_d.const_data_ptr<int64_t>(), taps_d.const_data_ptr<int32_t>(),
        weights_d.const_data_ptr<float>(), k, unit, norm, meta_d.size(0), out_size, out.data_ptr<out_t>(),
        out.stride(0), out.stride(1), out.stride(2), out.stride(3));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  const bool half = dtype == at::kHalf;
  if (data.scalar_type() == at::kByte) {
    at::Tensor table = at::empty({256}, data.options().dtype(at::kFloat));
    unit_table_kernel<<<1, 256, 0, stream>>>(table.data_ptr<float>(), norm.divisor);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const UnitTable unit{table.const_data_ptr<float>()};
    half ? launch(uint8_t{}, at::Half{}, unit) : launch(uint8_t{}, float{}, unit);
  } else {
    const UnitDivide unit{norm.divisor};
    half ? launch(float{}, at::Half{}, unit) : launch(float{}, float{}, unit);
  }
  return out;
}

} // namespace

TORCH_LIBRARY_IMPL(fidfast, CUDA, m) {
  m.impl("resize_normalize", &resize_normalize_cuda);
}

} // namespace fidfast::ops
