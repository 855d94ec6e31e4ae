# C declarations the compiled core needs: the platform layer in compat.h.

cdef extern from "compat.h" nogil:
    const int CYA_HAVE_POLL
    const short CYA_POLLIN
    const short CYA_POLLPRI
    const short CYA_POLLOUT
    const short CYA_POLLERR
    const short CYA_POLLHUP
    const short CYA_POLLNVAL

    ctypedef struct cya_pollfd:
        int fd
        short events
        short revents

    int cya_poll(cya_pollfd *fds, unsigned long n, int ms)
    double cya_monotonic()
    Py_ssize_t cya_find(const char *hay, Py_ssize_t hlen,
                        const char *needle, Py_ssize_t nlen)
    Py_ssize_t cya_prefix_at_end(const char *hay, Py_ssize_t hlen,
                                 const char *needle, Py_ssize_t nlen)


# The kernel-side interest set in kset.h (epoll, kqueue, or none: CYA_KSET 0).
cdef extern from "kset.h" nogil:
    const int CYA_KSET
    const char *CYA_KSET_NAME

    ctypedef struct cya_kraw:
        pass

    ctypedef struct cya_kevent:
        int fd
        unsigned int serial
        short revents

    int cya_kset_open()
    int cya_kset_close(int kfd)
    int cya_kset_set(int kfd, int fd, short old, short events, unsigned int serial)
    int cya_kset_check(int kfd, int fd, short events, unsigned int serial)
    void cya_kset_forget(int kfd, int fd)
    int cya_kset_add_once(int kfd, int fd, unsigned int serial)
    int cya_kset_wait(int kfd, cya_kraw *raw, cya_kevent *out, int max, int ms)
