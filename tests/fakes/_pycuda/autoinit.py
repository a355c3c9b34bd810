"""Fake pycuda.autoinit: init the driver, make a context on device 0, pop it at exit."""
import atexit as _atexit

import pycuda.driver as _cuda

_cuda.init()
device = _cuda.Device(0)
context = device.make_context()


def _finish_up():
    global context
    if context is not None:
        context.pop()
        context = None


_atexit.register(_finish_up)
