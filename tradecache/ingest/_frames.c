/* The pull inbox's deliveries read straight from the bytes nats-py reads off its socket.
 *
 * `scan` walks a buffer of NATS protocol frames from `pos` and, for every complete `MSG` / `HMSG`
 * frame whose subscription id has a handler, calls that handler with the decoded subject and
 * reply, the payload and the headers (`headers_of(block)` for a plain header block). It stops at
 * the first thing it leaves to nats-py's own parser (any other operation, a frame of another
 * subscription, a status line, anything not written exactly as nats-server writes it) and says
 * where that thing ends, or at an incomplete frame. `ack_numbers` reads a JetStream ack subject's
 * numbers. Both accept only what their Python counterparts accept, and hand anything else back to
 * them (see tradecache/ingest/inbox.py and intake.py, which keep working without this module).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <string.h>

enum { SCAN_DONE = 0, SCAN_PARTIAL = 1, SCAN_OTHER = 2, SCAN_FAILED = 3 };

/* nats-py gives up on a control line this long without its CRLF (protocol error). */
#define MAX_CONTROL_LINE 4096
/* A frame longer than this, not complete, goes to nats-py, which gathers it in one buffer;
 * rescanning it after every read would copy it again each time. */
#define MAX_PARTIAL_FRAME 65536
#define MAX_TOKENS 6
#define MAX_DIGITS 20 /* 2^64 - 1 has 20 */

/* An unsigned decimal of ASCII digits only, below 2^64: 1 and `*value`, or 0. */
static int digits_value(const char *start, Py_ssize_t length, unsigned long long *value) {
    if (length <= 0 || length > MAX_DIGITS) {
        return 0;
    }
    unsigned long long total = 0;
    for (Py_ssize_t i = 0; i < length; i++) {
        char c = start[i];
        if (c < '0' || c > '9') {
            return 0;
        }
        unsigned digit = (unsigned)(c - '0');
        if (total > (ULLONG_MAX - digit) / 10) {
            return 0;
        }
        total = total * 10 + digit;
    }
    *value = total;
    return 1;
}

/* Tokens of `line` split on single spaces; -1 when a token is empty (two spaces, a leading or a
 * trailing one) or there are more than `MAX_TOKENS`. */
static int split_tokens(const char *line, Py_ssize_t length, const char **starts, Py_ssize_t *lengths) {
    int count = 0;
    Py_ssize_t begin = 0;
    for (Py_ssize_t i = 0; i <= length; i++) {
        if (i == length || line[i] == ' ') {
            if (i == begin || count == MAX_TOKENS) {
                return -1;
            }
            starts[count] = line + begin;
            lengths[count] = i - begin;
            count++;
            begin = i + 1;
        } else if (line[i] == '\t' || line[i] == '\r' || line[i] == '\n' || line[i] == '\f' || line[i] == '\v') {
            return -1;
        }
    }
    return count;
}

/* (pos, code, extra, count, nbytes), taking the reference to `extra` (NULL: its error stands). */
static PyObject *result(Py_ssize_t pos, int code, PyObject *extra, Py_ssize_t count, Py_ssize_t nbytes) {
    if (extra == NULL) {
        return NULL;
    }
    PyObject *tuple = Py_BuildValue("(niOnn)", pos, code, extra, count, nbytes);
    Py_DECREF(extra);
    return tuple;
}

static PyObject *scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4 || !PyBytes_Check(args[0]) || !PyLong_Check(args[1]) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "scan(data: bytes, pos: int, handlers: dict, headers_of)");
        return NULL;
    }
    const char *data = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos < 0 || pos > size) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "pos out of range");
        }
        return NULL;
    }
    PyObject *handlers = args[2];
    PyObject *headers_of = args[3];
    Py_ssize_t count = 0, nbytes = 0;

    while (pos < size) {
        const char *line = data + pos;
        Py_ssize_t available = size - pos;
        Py_ssize_t window = available < MAX_CONTROL_LINE ? available : MAX_CONTROL_LINE;
        const char *newline = memchr(line, '\n', (size_t)window);
        if (newline == NULL) {
            if (available >= MAX_CONTROL_LINE) { /* nats-py decides what this is */
                return result(pos, SCAN_OTHER, PyLong_FromSsize_t(size), count, nbytes);
            }
            return result(pos, SCAN_PARTIAL, Py_NewRef(Py_None), count, nbytes);
        }
        Py_ssize_t line_end = newline - data + 1; /* after the LF */
        int is_msg = available > 4 && memcmp(line, "MSG ", 4) == 0;
        int is_hmsg = available > 5 && memcmp(line, "HMSG ", 5) == 0;
        if ((!is_msg && !is_hmsg) || newline == line || newline[-1] != '\r') {
            return result(pos, SCAN_OTHER, PyLong_FromSsize_t(line_end), count, nbytes);
        }
        Py_ssize_t skip = is_hmsg ? 5 : 4;
        const char *starts[MAX_TOKENS];
        Py_ssize_t lengths[MAX_TOKENS];
        int tokens = split_tokens(line + skip, (newline - 1) - (line + skip), starts, lengths);
        /* MSG <subject> <sid> [reply] <total>; HMSG <subject> <sid> [reply] <header> <total> */
        int numbers = is_hmsg ? 2 : 1;
        if (tokens != 2 + numbers && tokens != 3 + numbers) {
            return result(pos, SCAN_OTHER, PyLong_FromSsize_t(line_end), count, nbytes);
        }
        int has_reply = tokens == 3 + numbers;
        unsigned long long sid = 0, total = 0, header = 0;
        int readable = digits_value(starts[1], lengths[1], &sid)
                       && digits_value(starts[tokens - 1], lengths[tokens - 1], &total)
                       && (!is_hmsg || digits_value(starts[tokens - 2], lengths[tokens - 2], &header));
        /* Sizes past what a buffer can hold are nats-py's to refuse (or wait for) as it does. */
        if (!readable || header > total || total > (unsigned long long)PY_SSIZE_T_MAX / 2) {
            return result(pos, SCAN_OTHER, PyLong_FromSsize_t(line_end), count, nbytes);
        }
        if ((unsigned long long)(size - line_end) < total + 2) { /* the frame has not all arrived */
            if (total + 2 + (unsigned long long)(line_end - pos) > MAX_PARTIAL_FRAME) {
                return result(pos, SCAN_OTHER, PyLong_FromSsize_t(size), count, nbytes);
            }
            return result(pos, SCAN_PARTIAL, Py_NewRef(Py_None), count, nbytes);
        }
        Py_ssize_t frame_end = line_end + (Py_ssize_t)total + 2;
        const char *block = data + line_end;
        if (block[total] != '\r' || block[total + 1] != '\n') {
            return result(pos, SCAN_OTHER, PyLong_FromSsize_t(frame_end), count, nbytes);
        }
        PyObject *sid_object = PyLong_FromUnsignedLongLong(sid);
        if (sid_object == NULL) {
            return NULL;
        }
        PyObject *handler = PyDict_GetItemWithError(handlers, sid_object); /* borrowed */
        Py_DECREF(sid_object);
        if (handler == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            return result(pos, SCAN_OTHER, PyLong_FromSsize_t(frame_end), count, nbytes);
        }
        Py_ssize_t payload_size = (Py_ssize_t)(total - header);
        static const char plain[] = "NATS/1.0\r\n";
        Py_ssize_t plain_size = (Py_ssize_t)sizeof(plain) - 1;
        /* A status line, an empty body or an empty header block: nats-py's path reads them. */
        if (header > 0 && (headers_of == Py_None || payload_size == 0 || header <= plain_size + 2
                           || memcmp(block, plain, (size_t)plain_size) != 0)) {
            return result(pos, SCAN_OTHER, PyLong_FromSsize_t(frame_end), count, nbytes);
        }
        PyObject *subject = NULL, *reply = NULL, *payload = NULL, *headers = NULL, *called = NULL;
        subject = PyUnicode_DecodeUTF8(starts[0], lengths[0], NULL);
        if (subject != NULL) {
            reply = has_reply ? PyUnicode_DecodeUTF8(starts[2], lengths[2], NULL) : PyUnicode_New(0, 0);
        }
        if (reply != NULL) {
            payload = PyBytes_FromStringAndSize(block + header, payload_size);
        }
        if (payload != NULL) {
            if (header > 0) {
                PyObject *raw = PyBytes_FromStringAndSize(block, (Py_ssize_t)header);
                headers = raw == NULL ? NULL : PyObject_CallOneArg(headers_of, raw);
                Py_XDECREF(raw);
            } else {
                headers = Py_NewRef(Py_None);
            }
        }
        if (headers != NULL) {
            PyObject *call_args[4] = {subject, reply, payload, headers};
            Py_INCREF(handler); /* borrowed from the dict, which the handler may change */
            called = PyObject_Vectorcall(handler, call_args, 4, NULL);
            Py_DECREF(handler);
        }
        Py_XDECREF(subject);
        Py_XDECREF(reply);
        Py_XDECREF(payload);
        Py_XDECREF(headers);
        count++;
        nbytes += payload_size;
        pos = frame_end;
        if (called == NULL) { /* the caller logs it; the frame is consumed, as nats-py would */
            PyObject *type, *value, *traceback;
            PyErr_Fetch(&type, &value, &traceback);
            PyErr_NormalizeException(&type, &value, &traceback);
            if (traceback != NULL && value != NULL) {
                PyException_SetTraceback(value, traceback);
            }
            Py_XDECREF(type);
            Py_XDECREF(traceback);
            return result(pos, SCAN_FAILED, value != NULL ? value : Py_NewRef(Py_None), count, nbytes);
        }
        Py_DECREF(called);
    }
    return result(pos, SCAN_DONE, Py_NewRef(Py_None), count, nbytes);
}

/* (stream seq, consumer seq, timestamp, pending, delivered) of a JetStream ack subject, or None
 * where it is not one written with plain digits (the Python parser then decides). */
static PyObject *ack_numbers(PyObject *module, PyObject *reply) {
    (void)module;
    if (!PyUnicode_Check(reply)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t length;
    const char *text = PyUnicode_AsUTF8AndSize(reply, &length);
    if (text == NULL) {
        return NULL;
    }
    const char *starts[13];
    Py_ssize_t lengths[13];
    int tokens = 0;
    Py_ssize_t begin = 0;
    for (Py_ssize_t i = 0; i <= length; i++) {
        if (i == length || text[i] == '.') {
            if (tokens == 13) {
                Py_RETURN_NONE;
            }
            starts[tokens] = text + begin;
            lengths[tokens] = i - begin;
            tokens++;
            begin = i + 1;
        }
    }
    if ((tokens != 9 && tokens != 11 && tokens != 12) || lengths[0] != 3 || memcmp(starts[0], "$JS", 3) != 0
        || lengths[1] != 3 || memcmp(starts[1], "ACK", 3) != 0) {
        Py_RETURN_NONE;
    }
    int first = tokens == 9 ? 4 : 6; /* delivered, then sseq, cseq, timestamp, pending */
    unsigned long long values[5];
    for (int i = 0; i < 5; i++) {
        if (!digits_value(starts[first + i], lengths[first + i], &values[i])) {
            Py_RETURN_NONE;
        }
    }
    return Py_BuildValue("(KKKKK)", values[1], values[2], values[3], values[4], values[0]);
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "scan(data, pos, handlers, headers_of) -> (pos, code, extra, count, payload_bytes)"},
    {"ack_numbers", ack_numbers, METH_O,
     "ack_numbers(reply) -> (stream_seq, consumer_seq, timestamp, pending, delivered) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "tradecache.ingest._frames", NULL, -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__frames(void) { return PyModule_Create(&module_definition); }
