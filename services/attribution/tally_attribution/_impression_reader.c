/*
 * The exposure index's impression reader: one C call per batch of single-object records of
 * the latest `impression` schema, returning per record only what the index keeps:
 *
 *     (impression_id, event_time_us, advertiser_id, campaign_id, partner_id or None,
 *      household_id, ivt)
 *
 * The field layout is not read from the schema here: impression_reader.py checks that the
 * catalog's latest impression schema is exactly the layout below (names, types, symbols) and
 * uses this reader only then. Advertiser, campaign and partner ids are interned: a million
 * exposures share a few thousand of them, so the index holds one string of each.
 *
 * Contract with the fastavro path: a record for which this returns a tuple is one fastavro
 * decodes without error to the same values, and one with every value inside its limit
 * (tally_billing.bounds, handed over by the caller as (lo, hi) per field: an id has lo..hi code
 * points and no control character, U+0000-001F, U+007F or U+0080-009F; the event time lies in
 * lo..hi µs). Anything unusual (another header, truncation, an over-long varint, a negative or
 * too-long length, a branch or symbol out of range, invalid UTF-8, trailing bytes, a value beyond
 * its limit) leaves the record's slot None, and the caller decodes it with fastavro and checks
 * every limit, which yields the value or the DecodeError (dead letter) exactly as before.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
} cursor_t;

/* Zigzag varint of at most 10 bytes with no bits beyond 64; 0 = read, -1 = not readable here. */
static int varint(cursor_t *c, long long *out) {
    unsigned long long acc = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (c->p == c->end) return -1;
        unsigned char byte = *c->p++;
        if (shift == 63 && byte > 1) return -1;
        acc |= (unsigned long long)(byte & 0x7F) << shift;
        if ((byte & 0x80) == 0) {
            *out = (long long)(acc >> 1) ^ -(long long)(acc & 1);
            return 0;
        }
    }
    return -1;
}

/* A field's limit: lo..hi code points for a string, lo..hi for a long. */
typedef struct {
    long long lo;
    long long hi;
} limit_t;

/* A control character in UTF-8 text: C0, DEL, or C1 (encoded C2 80..C2 9F). */
static int has_control(const unsigned char *p, long long n) {
    for (long long i = 0; i < n; i++) {
        unsigned char b = p[i];
        if (b < 0x20 || b == 0x7F) return 1;
        if (b == 0xC2 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] <= 0x9F) return 1;
    }
    return 0;
}

/* An Avro string inside `lim` as a new str (interned when asked), or NULL (error cleared) when
 * not readable here. n bytes hold between n/4 and n code points. */
static PyObject *text(cursor_t *c, int intern, const limit_t *lim) {
    long long n;
    if (varint(c, &n) < 0 || n < 0 || n > (long long)(c->end - c->p)) return NULL;
    if (n < lim->lo || n / 4 > lim->hi || has_control(c->p, n)) return NULL;
    PyObject *s = PyUnicode_DecodeUTF8((const char *)c->p, (Py_ssize_t)n, "strict");
    if (s == NULL) { PyErr_Clear(); return NULL; }
    if (PyUnicode_GET_LENGTH(s) < lim->lo || PyUnicode_GET_LENGTH(s) > lim->hi) { Py_DECREF(s); return NULL; }
    c->p += n;
    if (intern) PyUnicode_InternInPlace(&s);
    return s;
}

/* A long enum index below `count`, or -1. */
static long long symbol(cursor_t *c, long long count) {
    long long i;
    if (varint(c, &i) < 0 || i < 0 || i >= count) return -1;
    return i;
}

/* The limits in field order: impression_id, event_time, advertiser_id, campaign_id, partner_id,
 * household_id. */
enum { L_IMPRESSION, L_TIME, L_ADVERTISER, L_CAMPAIGN, L_PARTNER, L_HOUSEHOLD, L_COUNT };

static PyObject *one(cursor_t *c, PyObject *ivt_symbols, long long device_symbols, long long source_symbols,
                     const limit_t *lim) {
    PyObject *impression_id = NULL, *advertiser = NULL, *campaign = NULL, *partner = NULL, *household = NULL;
    PyObject *event_time = NULL;
    long long t, branch, ivt;
    if ((impression_id = text(c, 0, &lim[L_IMPRESSION])) == NULL) goto fail;
    if (varint(c, &t) < 0 || t < lim[L_TIME].lo || t > lim[L_TIME].hi) goto fail;
    if ((advertiser = text(c, 1, &lim[L_ADVERTISER])) == NULL) goto fail;
    if ((campaign = text(c, 1, &lim[L_CAMPAIGN])) == NULL) goto fail;
    if (varint(c, &branch) < 0 || (branch != 0 && branch != 1)) goto fail;  /* ["null", "string"] */
    if (branch == 1) {
        if ((partner = text(c, 1, &lim[L_PARTNER])) == NULL) goto fail;
    } else {
        partner = Py_NewRef(Py_None);
    }
    if ((household = text(c, 0, &lim[L_HOUSEHOLD])) == NULL) goto fail;
    if (symbol(c, device_symbols) < 0) goto fail;
    if ((ivt = symbol(c, PyTuple_GET_SIZE(ivt_symbols))) < 0) goto fail;
    if (symbol(c, source_symbols) < 0) goto fail;
    if (c->p != c->end) goto fail;
    if ((event_time = PyLong_FromLongLong(t)) == NULL) goto fail;
    PyObject *row = PyTuple_New(7);
    if (row == NULL) goto fail;
    /* PyTuple_SET_ITEM steals each reference */
    PyTuple_SET_ITEM(row, 0, impression_id);
    PyTuple_SET_ITEM(row, 1, event_time);
    PyTuple_SET_ITEM(row, 2, advertiser);
    PyTuple_SET_ITEM(row, 3, campaign);
    PyTuple_SET_ITEM(row, 4, partner);
    PyTuple_SET_ITEM(row, 5, household);
    PyTuple_SET_ITEM(row, 6, Py_NewRef(PyTuple_GET_ITEM(ivt_symbols, (Py_ssize_t)ivt)));
    return row;
fail:
    Py_XDECREF(impression_id);
    Py_XDECREF(advertiser);
    Py_XDECREF(campaign);
    Py_XDECREF(partner);
    Py_XDECREF(household);
    Py_XDECREF(event_time);
    return NULL;
}

static PyObject *read_batch(PyObject *self, PyObject *args) {
    PyObject *values, *ivt_symbols;
    const char *header;
    Py_ssize_t header_len, device_symbols, source_symbols;
    limit_t lim[L_COUNT];
    if (!PyArg_ParseTuple(args, "O!y#O!nn((LL)(LL)(LL)(LL)(LL)(LL))", &PyList_Type, &values, &header, &header_len,
                          &PyTuple_Type, &ivt_symbols, &device_symbols, &source_symbols,
                          &lim[0].lo, &lim[0].hi, &lim[1].lo, &lim[1].hi, &lim[2].lo, &lim[2].hi,
                          &lim[3].lo, &lim[3].hi, &lim[4].lo, &lim[4].hi, &lim[5].lo, &lim[5].hi))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(values);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(values, i);
        PyObject *row = NULL;
        if (PyBytes_Check(item) && PyBytes_GET_SIZE(item) >= header_len
                && memcmp(PyBytes_AS_STRING(item), header, (size_t)header_len) == 0) {
            cursor_t c = {(const unsigned char *)PyBytes_AS_STRING(item) + header_len,
                          (const unsigned char *)PyBytes_AS_STRING(item) + PyBytes_GET_SIZE(item)};
            row = one(&c, ivt_symbols, device_symbols, source_symbols, lim);
            if (row == NULL && PyErr_Occurred()) { Py_DECREF(out); return NULL; }  /* out of memory */
        }
        PyList_SET_ITEM(out, i, row == NULL ? Py_NewRef(Py_None) : row);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"read_batch", read_batch, METH_VARARGS,
     "read_batch(values, header, ivt_symbols, device_symbols, source_symbols, limits) -> list of (impression_id, "
     "event_time_us, advertiser_id, campaign_id, partner_id, household_id, ivt) tuples, None where the caller "
     "must decode with fastavro (limits: (lo, hi) per field from impression_id to household_id; a record with a "
     "value beyond its limit is None too)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_impression_reader", NULL, -1, methods};

PyMODINIT_FUNC PyInit__impression_reader(void) { return PyModule_Create(&module); }
