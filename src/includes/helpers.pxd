# Small helpers every compiled unit uses, over the platform layer (compat.h):
# inline here, so each unit gets its own copy and no call crosses a module.

from cpython.mem cimport PyMem_Realloc
from libc.math cimport ceil

from includes.system cimport cya_monotonic


cdef inline double _deadline(int ms) noexcept:
    """When a wait of ms milliseconds ends, on the monotonic clock."""
    return cya_monotonic() + ms / 1000.0


cdef inline int _ms_left(double deadline) noexcept:
    """What is left of a wait until deadline, in whole milliseconds rounded up."""
    return <int>max(0.0, ceil((deadline - cya_monotonic()) * 1000.0))


cdef inline bint _grow(void **ptr, size_t size) noexcept:
    """Reallocate ptr[0] to size bytes; False (ptr[0] untouched) when memory is short."""
    cdef void *p = PyMem_Realloc(ptr[0], size)
    if p == NULL:
        return False
    ptr[0] = p
    return True
