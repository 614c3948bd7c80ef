#include "../resize_normalize_math.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>

namespace fidfast::ops {

namespace {

constexpr int kThreads = 256;

struct DivideBy255 {
  __device__ float operator()(uint8_t p) const {
    return unit(p);
  }
};

// One thread per output pixel across the whole batch; each reads its image's meta row and
// up to 4*C source bytes, and writes the 3 channels through the output strides
// (NCHW or channels_last).
template <typename out_t>
__global__ void resize_normalize_kernel(
    const uint8_t* __restrict__ data,
    const int64_t* __restrict__ meta,
    int64_t n,
    int64_t size,
    out_t* __restrict__ out,
    int64_t sn,
    int64_t sc,
    int64_t sh,
    int64_t sw) {
  const int64_t total = n * size * size;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t ox = idx % size;
    const int64_t oy = (idx / size) % size;
    const int64_t i = idx / (size * size);
    const ImageMeta m = read_meta(meta + 4 * i);
    const float scale_y = static_cast<float>(m.h) / static_cast<float>(size);
    const float scale_x = static_cast<float>(m.w) / static_cast<float>(size);
    float rgb[3];
    resize_normalize_pixel(
        data + m.offset, m, linear_tap(oy, m.h, scale_y), linear_tap(ox, m.w, scale_x), DivideBy255{}, rgb);
    out_t* o = out + i * sn + oy * sh + ox * sw;
    o[0] = static_cast<out_t>(rgb[0]);
    o[sc] = static_cast<out_t>(rgb[1]);
    o[2 * sc] = static_cast<out_t>(rgb[2]);
  }
}

template <typename out_t>
void launch(const at::Tensor& data, const at::Tensor& meta, int64_t size, at::Tensor& out) {
  const int64_t n = meta.size(0);
  const int64_t total = n * size * size;
  // Grid-stride loop: cap the grid, any batch size still works.
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t{1} << 16);
  resize_normalize_kernel<out_t><<<static_cast<unsigned>(blocks), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      data.const_data_ptr<uint8_t>(),
      meta.const_data_ptr<int64_t>(),
      n,
      size,
      out.data_ptr<out_t>(),
      out.stride(0),
      out.stride(1),
      out.stride(2),
      out.stride(3));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor resize_normalize_cuda(
    const at::Tensor& data,
    const at::Tensor& meta,
    int64_t out_size,
    at::ScalarType dtype,
    bool channels_last) {
  TORCH_CHECK(data.is_cuda() && (meta.is_cpu() || meta.device() == data.device()),
              "resize_normalize: data must be on a CUDA device and meta on the CPU or the same device, got ",
              data.device(), " and ", meta.device());
  // The bounds check, which keeps the kernel from reading outside `data`, needs meta on the host.
  // Given there (pinned, as the loader leaves it), it is checked before its copy to the device
  // starts; given on the device, .cpu() waits for all work queued before it.
  const at::Tensor meta_host = meta.is_cpu() ? meta.contiguous() : meta.cpu();
  check_resize_normalize_args(data, meta_host, out_size, dtype);
  c10::cuda::CUDAGuard guard(data.device());
  const at::Tensor meta_c =
      meta.is_cpu() ? meta_host.to(data.device(), at::kLong, /*non_blocking=*/true) : meta.contiguous();
  at::Tensor out = at::empty(
      {meta_c.size(0), 3, out_size, out_size},
      data.options().dtype(dtype),
      channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  if (out.numel() == 0) {
    return out;
  }
  if (dtype == at::kFloat) {
    launch<float>(data, meta_c, out_size, out);
  } else {
    launch<at::Half>(data, meta_c, out_size, out);
  }
  return out;
}

} // namespace

TORCH_LIBRARY_IMPL(fidfast, CUDA, m) {
  m.impl("resize_normalize", &resize_normalize_cuda);
}

} // namespace fidfast::ops
