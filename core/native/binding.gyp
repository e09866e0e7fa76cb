# Build of the native CPU backend (hire_native.node): `node-gyp rebuild --directory core/native`.
# Baseline x86-64 flags only; AVX2/FMA/F16C code is enabled per function in src/kernels_avx2.cc
# and picked at run time, so the binary runs on any x86-64 (and builds on aarch64, portable path).
{
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
        "src/sparse_ops.cc",
        "src/topk.cc",
        "src/quant_portable.cc",
        "src/quant_avx2.cc",
        "src/quant_avx512.cc"
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
