{
  "variables": {
    "libtorch%": "<!(node -p \"process.env.LIBTORCH || ''\")"
  },
  "targets": [
    {
      "target_name": "loco_native",
      "sources": ["native/addon.cpp", "native/ops.cpp", "native/allocator.cpp", "native/random.cpp", "native/signals.cpp", "native/devices.cpp", "native/distributed.cpp", "native/distributed_health.cpp", "native/feedback.cpp", "native/batchnorm_relu.cpp"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL", "NAPI_EXPERIMENTAL", "USE_C10D_GLOO"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-O2", "-fopenmp", "-ffp-contract=off", "-Wno-unused-parameter", "-Wno-deprecated-declarations"],
      "ldflags": ["-fopenmp"],
      "conditions": [
        ["libtorch==''", {
          "include_dirs": ["/usr/include/torch/csrc/api/include"],
          "libraries": ["-ltorch", "-ltorch_cpu", "-lc10"]
        }, {
          "include_dirs": ["<(libtorch)/include", "<(libtorch)/include/torch/csrc/api/include"],
          "libraries": ["-L<(libtorch)/lib", "-Wl,-rpath,<(libtorch)/lib", "-ltorch", "-ltorch_cpu", "-lc10"]
        }]
      ]
    }
  ]
}
