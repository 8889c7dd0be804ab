/*
 * Batch decoder for the metering hot path: reads flat Avro records (single-object encoding)
 * of one known writer schema and returns only the fields asked for.
 *
 * The schema is described by a "program" built in codec.py from the parsed Avro schema: one
 * (want, op, arg) or (want, op, arg, (lo, hi)) per field, in order. Supported field types: null,
 * long/int, string, enum and unions of null/long/string; codec.py builds no program for anything
 * else. The optional (lo, hi) is the field's limit (tally_billing.bounds): a long must lie in
 * lo..hi, a string must have lo..hi characters and no control character (U+0000-001F, U+007F,
 * U+0080-009F); a record with a value beyond its limit falls back, and the caller's pure check
 * on the fully decoded record then names the field (dead letter).
 *
 * Contract with the pure-Python path (fastavro): a record for which this returns a tuple is one
 * fastavro reads without error to the very same values. Whenever anything is unusual (wrong
 * header, truncation, an over-long varint, a negative or too-long length, an index out of
 * range, invalid UTF-8, trailing bytes, a value beyond its limit) the record's slot is None and the caller decodes it with
 * fastavro, which then produces the value or the DecodeError (dead letter) exactly as before.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define OP_NULL 0
#define OP_LONG 1
#define OP_STRING 2
#define OP_ENUM 3
#define OP_UNION 4

#define MAX_FIELDS 64
#define MAX_BRANCHES 8

typedef struct {
    int want;
    int op;
    PyObject *symbols;                 /* OP_ENUM: tuple of str (borrowed) */
    Py_ssize_t n_symbols;
    int n_branches;                    /* OP_UNION */
    int branches[MAX_BRANCHES];
    int limited;                       /* lo..hi applies to the long or string value */
    long long lo, hi;
} field_t;

/* A control character in UTF-8 text: C0, DEL, or C1 (encoded C2 80..C2 9F). */
static int has_control(const unsigned char *p, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char b = p[i];
        if (b < 0x20 || b == 0x7F) return 1;
        if (b == 0xC2 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] <= 0x9F) return 1;
    }
    return 0;
}

/* Avro zigzag varint; at most 10 bytes and no bits beyond 64. 0 on success, -1 to fall back. */
static int read_long(const unsigned char **pp, const unsigned char *end, long long *out) {
    const unsigned char *p = *pp;
    unsigned long long n = 0;
    int shift = 0;
    for (int i = 0; i < 10; i++) {
        if (p >= end) return -1;
        unsigned char b = *p++;
        if (i == 9 && (b & 0xFE)) return -1;
        n |= (unsigned long long)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *pp = p;
            *out = (long long)((n >> 1) ^ (~(n & 1ULL) + 1ULL));
            return 0;
        }
        shift += 7;
    }
    return -1;
}

/* One value of a simple type; *value is a new reference (or NULL when not wanted). -1 = fall back
 * (also for a long or string beyond fd's limit). */
static int read_simple(int op, const field_t *fd, const unsigned char **pp, const unsigned char *end,
                       PyObject **value) {
    int want = fd->want;
    *value = NULL;
    if (op == OP_NULL) {
        if (want) { Py_INCREF(Py_None); *value = Py_None; }
        return 0;
    }
    long long n;
    if (read_long(pp, end, &n) < 0) return -1;
    if (op == OP_LONG) {
        if (fd->limited && (n < fd->lo || n > fd->hi)) return -1;
        if (want) {
            *value = PyLong_FromLongLong(n);
            if (*value == NULL) { PyErr_Clear(); return -1; }
        }
        return 0;
    }
    /* OP_STRING: always validated (fastavro decodes every string strictly) */
    if (n < 0 || n > (long long)(end - *pp)) return -1;
    if (fd->limited && (n < fd->lo || has_control(*pp, (Py_ssize_t)n))) return -1;  /* n bytes >= characters */
    PyObject *s = PyUnicode_DecodeUTF8((const char *)*pp, (Py_ssize_t)n, "strict");
    if (s == NULL) { PyErr_Clear(); return -1; }
    if (fd->limited && (PyUnicode_GET_LENGTH(s) < fd->lo || PyUnicode_GET_LENGTH(s) > fd->hi)) {
        Py_DECREF(s);
        return -1;
    }
    *pp += n;
    if (want) *value = s; else Py_DECREF(s);
    return 0;
}

static int parse_program(PyObject *program, field_t *fields, Py_ssize_t *n_fields) {
    if (!PyTuple_Check(program)) { PyErr_SetString(PyExc_TypeError, "program must be a tuple"); return -1; }
    Py_ssize_t n = PyTuple_GET_SIZE(program);
    if (n > MAX_FIELDS) { PyErr_SetString(PyExc_ValueError, "too many fields"); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PyTuple_GET_ITEM(program, i);
        if (!PyTuple_Check(f) || (PyTuple_GET_SIZE(f) != 3 && PyTuple_GET_SIZE(f) != 4)) {
            PyErr_SetString(PyExc_TypeError, "each field is a (want, op, arg) or (want, op, arg, (lo, hi)) tuple");
            return -1;
        }
        field_t *fd = &fields[i];
        fd->limited = 0;
        fd->lo = fd->hi = 0;
        if (PyTuple_GET_SIZE(f) == 4 && PyTuple_GET_ITEM(f, 3) != Py_None) {
            PyObject *lim = PyTuple_GET_ITEM(f, 3);
            if (!PyTuple_Check(lim) || PyTuple_GET_SIZE(lim) != 2) {
                PyErr_SetString(PyExc_TypeError, "a limit is a (lo, hi) tuple");
                return -1;
            }
            fd->lo = PyLong_AsLongLong(PyTuple_GET_ITEM(lim, 0));
            fd->hi = PyLong_AsLongLong(PyTuple_GET_ITEM(lim, 1));
            if (PyErr_Occurred()) return -1;
            fd->limited = 1;
        }
        fd->want = PyObject_IsTrue(PyTuple_GET_ITEM(f, 0));
        fd->op = (int)PyLong_AsLong(PyTuple_GET_ITEM(f, 1));
        if (fd->want < 0 || PyErr_Occurred()) return -1;
        PyObject *arg = PyTuple_GET_ITEM(f, 2);
        fd->symbols = NULL;
        fd->n_symbols = 0;
        fd->n_branches = 0;
        if (fd->op == OP_ENUM) {
            if (!PyTuple_Check(arg)) { PyErr_SetString(PyExc_TypeError, "enum symbols must be a tuple"); return -1; }
            fd->symbols = arg;
            fd->n_symbols = PyTuple_GET_SIZE(arg);
        } else if (fd->op == OP_UNION) {
            if (!PyTuple_Check(arg) || PyTuple_GET_SIZE(arg) > MAX_BRANCHES) {
                PyErr_SetString(PyExc_TypeError, "union branches must be a short tuple");
                return -1;
            }
            fd->n_branches = (int)PyTuple_GET_SIZE(arg);
            for (int b = 0; b < fd->n_branches; b++) {
                int bop = (int)PyLong_AsLong(PyTuple_GET_ITEM(arg, b));
                if (PyErr_Occurred()) return -1;
                if (bop != OP_NULL && bop != OP_LONG && bop != OP_STRING) {
                    PyErr_SetString(PyExc_ValueError, "unsupported union branch");
                    return -1;
                }
                fd->branches[b] = bop;
            }
        } else if (fd->op != OP_NULL && fd->op != OP_LONG && fd->op != OP_STRING) {
            PyErr_SetString(PyExc_ValueError, "unsupported field op");
            return -1;
        }
    }
    *n_fields = n;
    return 0;
}

/* The wanted fields of one record as a tuple (new reference), or NULL to fall back. */
static PyObject *decode_one(const unsigned char *p, const unsigned char *end, const field_t *fields,
                            Py_ssize_t n_fields, Py_ssize_t n_wanted) {
    PyObject *out = PyTuple_New(n_wanted);
    if (out == NULL) { PyErr_Clear(); return NULL; }
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n_fields; i++) {
        const field_t *fd = &fields[i];
        PyObject *v = NULL;
        if (fd->op == OP_ENUM) {
            long long idx;
            if (read_long(&p, end, &idx) < 0 || idx < 0 || idx >= fd->n_symbols) goto fail;
            if (fd->want) { v = PyTuple_GET_ITEM(fd->symbols, (Py_ssize_t)idx); Py_INCREF(v); }
        } else if (fd->op == OP_UNION) {
            long long idx;
            if (read_long(&p, end, &idx) < 0 || idx < 0 || idx >= fd->n_branches) goto fail;
            if (read_simple(fd->branches[idx], fd, &p, end, &v) < 0) goto fail;
        } else {
            if (read_simple(fd->op, fd, &p, end, &v) < 0) goto fail;
        }
        if (fd->want) PyTuple_SET_ITEM(out, k++, v);
    }
    if (p != end) goto fail;
    return out;
fail:
    Py_DECREF(out);  /* unset slots are NULL, which tuple dealloc skips */
    return NULL;
}

static PyObject *decode_batch(PyObject *self, PyObject *args) {
    PyObject *values, *program;
    const char *header;
    Py_ssize_t header_len;
    if (!PyArg_ParseTuple(args, "Oy#O", &values, &header, &header_len, &program)) return NULL;
    if (!PyList_Check(values)) { PyErr_SetString(PyExc_TypeError, "values must be a list"); return NULL; }
    field_t fields[MAX_FIELDS];
    Py_ssize_t n_fields = 0, n_wanted = 0;
    if (parse_program(program, fields, &n_fields) < 0) return NULL;
    for (Py_ssize_t i = 0; i < n_fields; i++) n_wanted += fields[i].want ? 1 : 0;
    Py_ssize_t n = PyList_GET_SIZE(values);
    PyObject *result = PyList_New(n);
    if (result == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(values, i);
        PyObject *rec = NULL;
        if (PyBytes_Check(item)) {
            const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(item);
            Py_ssize_t len = PyBytes_GET_SIZE(item);
            if (len >= header_len && memcmp(data, header, (size_t)header_len) == 0)
                rec = decode_one(data + header_len, data + len, fields, n_fields, n_wanted);
        }
        if (rec == NULL) { Py_INCREF(Py_None); rec = Py_None; }
        PyList_SET_ITEM(result, i, rec);
    }
    return result;
}

static PyMethodDef methods[] = {
    {"decode_batch", decode_batch, METH_VARARGS,
     "decode_batch(values, header, program) -> list of tuples of the wanted fields, None where the caller "
     "must decode with fastavro (or check a value beyond its limit)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastavro_fields", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastavro_fields(void) { return PyModule_Create(&module); }
