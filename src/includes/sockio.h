/* recv() and send() straight on a socket.socket's descriptor (issue 11).
 *
 * Python's socket methods parse their arguments, allocate the largest
 * buffer a recv may need and shrink it after, and release and retake the
 * GIL around a call that cannot block.  For the sockets asyncore uses (a
 * plain socket.socket in non-blocking mode) these helpers make the same
 * system call directly and raise the same OSError the methods would; any
 * other socket (a subclass, SSL, a test double, one with a timeout) goes
 * through its own method.
 *
 * The descriptor and the timeout are read from the socket object's C
 * struct, which CPython does not publish.  The core finds both fields at
 * import by experiment (see _asyncore_core._probe_sockets) and calls
 * cya_sockio_enable() only when the experiment is unambiguous; until then,
 * and on Windows, every call takes the method. */
#ifndef CYASYNCORE_SOCKIO_H
#define CYASYNCORE_SOCKIO_H

#include <Python.h>
#include <errno.h>
#include <stdint.h>
#ifndef _WIN32
#include <sys/types.h>
#include <sys/socket.h>
#endif

/* Largest recv() served from the shared buffer; larger ones take the method. */
#define CYA_RECV_MAX 65536

static Py_ssize_t cya_fd_offset = -1;       /* of the int descriptor */
static Py_ssize_t cya_timeout_offset = -1;  /* of the int64 timeout, in ns; 0: non-blocking */
static PyTypeObject *cya_socket_type = NULL; /* socket.socket (borrowed: the core keeps it) */
/* Only the thread holding the GIL uses it, and no Python code runs while it
 * holds data: the core is never used without the GIL (see asyncore._core). */
static char cya_recv_buffer[CYA_RECV_MAX];

static int cya_peek_int(PyObject *o, Py_ssize_t offset)
{
    int v;
    memcpy(&v, (char *)o + offset, sizeof v);
    return v;
}

static long long cya_peek_int64(PyObject *o, Py_ssize_t offset)
{
    int64_t v;
    memcpy(&v, (char *)o + offset, sizeof v);
    return (long long)v;
}

/* The names "recv" and "send" (interned) and the socket type's own methods
 * of those names: a program or test that replaces socket.socket.recv or
 * .send (mock.patch does) gets its replacement called, as always. */
static PyObject *cya_recv_name = NULL, *cya_send_name = NULL;
static PyObject *cya_recv_method = NULL, *cya_send_method = NULL;

static void cya_sockio_enable(PyTypeObject *type, Py_ssize_t fd_offset, Py_ssize_t timeout_offset,
                              PyObject *recv_name, PyObject *send_name,
                              PyObject *recv_method, PyObject *send_method)
{
#ifndef _WIN32
    /* References the core keeps alive (module globals) for as long as it lives. */
    cya_recv_name = recv_name;
    cya_send_name = send_name;
    cya_recv_method = recv_method;
    cya_send_method = send_method;
    cya_fd_offset = fd_offset;
    cya_timeout_offset = timeout_offset;
    cya_socket_type = type;
#else
    (void)type; (void)fd_offset; (void)timeout_offset;
    (void)recv_name; (void)send_name; (void)recv_method; (void)send_method;
#endif
}

static int cya_sockio_enabled(void) { return cya_socket_type != NULL; }

/* The descriptor of a socket the direct calls may use for the method called
 * name (whose original is method), or -2: call the method.  (A closed
 * socket's descriptor is -1, which the system call answers with EBADF, as
 * the method would.) */
/* socket.socket's version tag when both methods were last found to be the
 * originals: it changes whenever the class is modified. */
static unsigned int cya_methods_tag = 0;

static int cya_fast_fd_for(PyObject *sock, PyObject *name, PyObject *method)
{
    PyTypeObject *type = cya_socket_type;
    if (type == NULL || Py_TYPE(sock) != type)
        return -2;
    if (cya_peek_int64(sock, cya_timeout_offset) != 0)
        return -2;
    if (cya_methods_tag == 0 || type->tp_version_tag != cya_methods_tag) {
        if (_PyType_Lookup(type, name) != method)
            return -2;
        if (_PyType_Lookup(type, cya_recv_name) == cya_recv_method
                && _PyType_Lookup(type, cya_send_name) == cya_send_method
                && PyUnstable_Type_AssignVersionTag(type))
            cya_methods_tag = type->tp_version_tag;
    }
    return cya_peek_int(sock, cya_fd_offset);
}

/* As cya_fast_fd_for, for send(). */
static int cya_fast_fd(PyObject *sock)
{
    return cya_fast_fd_for(sock, cya_send_name, cya_send_method);
}

/* obj.<name>(arg), the way every other socket is served. */
static PyObject *cya_call_method(PyObject *obj, const char *name, PyObject *arg)
{
    PyObject *method = PyObject_GetAttrString(obj, name);
    PyObject *result;
    if (method == NULL)
        return NULL;
    result = PyObject_CallOneArg(method, arg);
    Py_DECREF(method);
    return result;
}

/* The descriptor of a plain socket.socket whatever its timeout, or -2. */
static int cya_sock_fd(PyObject *sock)
{
    if (cya_socket_type == NULL || Py_TYPE(sock) != cya_socket_type)
        return -2;
    return cya_peek_int(sock, cya_fd_offset);
}

/* sock.recv(size) */
static PyObject *cya_sock_recv(PyObject *sock, PyObject *size)
{
#ifndef _WIN32
    int fd = cya_fast_fd_for(sock, cya_recv_name, cya_recv_method);
    if (fd != -2 && PyLong_CheckExact(size)) {
        int overflow = 0;
        long n = PyLong_AsLongAndOverflow(size, &overflow);
        if (!overflow && n > 0 && n <= CYA_RECV_MAX) {
            for (;;) {
                ssize_t got = recv(fd, cya_recv_buffer, (size_t)n, 0);
                if (got >= 0)
                    return PyBytes_FromStringAndSize(cya_recv_buffer, got);
                if (errno != EINTR)
                    return PyErr_SetFromErrno(PyExc_OSError);
                /* As the method (PEP 475): run the signal handlers, retry. */
                if (PyErr_CheckSignals() < 0)
                    return NULL;
            }
        }
        if (n == -1 && PyErr_Occurred())
            PyErr_Clear();
    }
#endif
    return cya_call_method(sock, "recv", size);
}

/* One send(2) of up to max bytes of data (bytes or bytearray) on fd.
 * Returns what was sent, or -1 with *err set; EINTR is the caller's. */
static Py_ssize_t cya_send_raw(int fd, PyObject *data, Py_ssize_t max, int *err)
{
#ifndef _WIN32
    const char *buf;
    Py_ssize_t n;
    ssize_t sent;
    if (PyBytes_CheckExact(data)) {
        buf = PyBytes_AS_STRING(data);
        n = PyBytes_GET_SIZE(data);
    } else {
        buf = PyByteArray_AS_STRING(data);
        n = PyByteArray_GET_SIZE(data);
    }
    if (n > max)
        n = max;
    sent = send(fd, buf, (size_t)n, 0);
    if (sent < 0) {
        *err = errno;
        return -1;
    }
    return (Py_ssize_t)sent;
#else
    (void)fd; (void)data; (void)max;
    *err = ENOSYS;
    return -1;
#endif
}

/* sock.send(data) */
static PyObject *cya_sock_send(PyObject *sock, PyObject *data)
{
    int fd = cya_fast_fd(sock);
    if (fd != -2 && (PyBytes_CheckExact(data) || PyByteArray_CheckExact(data))) {
        for (;;) {
            int err = 0;
            Py_ssize_t sent = cya_send_raw(fd, data, PY_SSIZE_T_MAX, &err);
            if (sent >= 0)
                return PyLong_FromSsize_t(sent);
            errno = err;
            if (err != EINTR)
                return PyErr_SetFromErrno(PyExc_OSError);
            if (PyErr_CheckSignals() < 0)
                return NULL;
        }
    }
    return cya_call_method(sock, "send", data);
}

#endif
