"""Fakes for a CI without GPU, TensorRT, pycuda or NVIDIA driver.

- fake_tensorrt.install_fake_tensorrt(site_dir, version): ``tensorrt`` for 8.6.1 / 10.9.0.34 / 11.4.0.106
  offering only names of that release (lists in tensorrt_api/); plan/timing-cache helpers.
- fake_pynvml.install_fake_pynvml(site_dir, gpus, driver=..., cuda_driver=...): nvidia-ml-py names.
- fake_pycuda.install_fake_pycuda(site_dir): ``pycuda.driver`` + ``pycuda.autoinit``.
- bin/nvidia-smi, bin/nvcc: stub executables (FAKE_GPUS_JSON, FAKE_NVCC_VERSION).
- gpus: example GPU specs and the FAKE_GPUS_JSON writer.
"""
