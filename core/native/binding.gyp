# Build of the native CPU backend (hire_native.node): `node-gyp rebuild --directory core/native`.
# Baseline x86-64 flags only; AVX2/FMA/F16C code is enabled per function in src/kernels_avx2.cc
# and picked at run time, so the binary runs on any x86-64 (and builds on aarch64, portable path).
# CUDA: cuda-build.mjs compiles src/cuda/cuda_backend.cu with nvcc when the toolkit is there and the
# addon links it with the static CUDA runtime (no libcudart needed at run time, only the driver);
# otherwise src/cuda/cuda_stub.cc stands in and the `cuda` object reports no CUDA.
{
  "variables": {
    "cuda_obj%": "<!(node cuda-build.mjs obj)",
    "cuda_libdir%": "<!(node cuda-build.mjs libdir)"
  },
  "targets": [
    {
      "target_name": "hire_native",
      "sources": [
        "src/addon.cc",
        "src/mapping.cc",
        "src/threadpool.cc",
        "src/ops.cc",
        "src/kernels_portable.cc",
        "src/kernels_avx2.cc",
        "src/kernels_avx512.cc",
        "src/bandwidth.cc",
        "src/buffer.cc",
        "src/gguf_dequant.cc",
        "src/sparse_ops.cc",
        "src/topk.cc",
        "src/quant_portable.cc",
        "src/quant_avx2.cc",
        "src/quant_avx512.cc",
        "src/cuda_addon.cc"
      ],
      "conditions": [
        [
          "cuda_obj!=''",
          {
            "libraries": ["<(cuda_obj)", "-L<(cuda_libdir)", "-lcudart_static", "-ldl", "-lrt"],
            "defines": ["HIRE_CUDA=1"]
          },
          { "sources": ["src/cuda/cuda_stub.cc"] }
        ]
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions", "-O2", "-O0"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "cflags": ["-O3", "-fno-math-errno", "-pthread", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc": ["-std=c++17", "-fexceptions"],
      "ldflags": ["-pthread"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "GCC_OPTIMIZATION_LEVEL": "3",
        "OTHER_CFLAGS": ["-fno-math-errno"]
      }
    }
  ]
}
