// The CUDA implementation of resize_normalize, host side (compiled by the host compiler): the
// checked copy of meta and the tables, their upload, the output and the launch
// (resize_normalize_kernel.cu), on arguments its entry (../resize_normalize.cpp) has checked.

#include "../kernels.h"
#include "launchers.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Half.h>

namespace fidfast::ops {

namespace {

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

} // namespace

ResizeTables resize_normalize_host_copies_cuda(const ResizeTables& given) {
  return {host_copy(given.meta), host_copy(given.taps), host_copy(given.weights)};
}

at::Tensor resize_normalize_cuda(
    const at::Tensor& data,
    const ResizeTables& host,
    const Normalization& norm,
    int64_t out_size,
    at::ScalarType dtype,
    bool channels_last) {
  c10::cuda::CUDAGuard guard(data.device());
  const at::Tensor meta_d = on_device(host.meta, data.device());
  const at::Tensor taps_d = on_device(host.taps, data.device());
  const at::Tensor weights_d = on_device(host.weights, data.device());
  at::Tensor out = at::empty(
      {meta_d.size(0), 3, out_size, out_size},
      data.options().dtype(dtype),
      channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  if (out.numel() == 0) {
    return out;
  }
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const ResizeNormalizeArgs args{meta_d.const_data_ptr<int64_t>(), taps_d.const_data_ptr<int32_t>(),
                                 weights_d.const_data_ptr<float>(), taps_d.size(1), norm, meta_d.size(0), out_size,
                                 out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
  const auto launch = [&](auto in_tag, auto out_tag, float* unit_table) {
    using in_t = decltype(in_tag);
    using out_t = decltype(out_tag);
    C10_CUDA_CHECK(
        launch_resize_normalize(data.const_data_ptr<in_t>(), unit_table, out.data_ptr<out_t>(), args, stream));
  };
  const bool half = dtype == at::kHalf;
  if (data.scalar_type() == at::kByte) {
    at::Tensor table = at::empty({256}, data.options().dtype(at::kFloat));
    float* unit_table = table.data_ptr<float>();
    half ? launch(uint8_t{}, at::Half{}, unit_table) : launch(uint8_t{}, float{}, unit_table);
  } else {
    half ? launch(float{}, at::Half{}, nullptr) : launch(float{}, float{}, nullptr);
  }
  return out;
}

} // namespace fidfast::ops
