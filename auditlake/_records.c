/* Verify's fast path for comparing the ledger's columns with the sealed record.
 *
 * match_records(template, leaf_data, leaf_offsets, columns) -> matched
 *
 * A row matches when its record (leaf) is exactly the text the template spells from the
 * row's columns. Every value is written so that the text has one reading (strings without
 * quotes or backslashes; a verbatim column only when it is one
 * brace-balanced object), so a matched row's record holds exactly the column values. A row
 * that does not match is left to the caller's exact check, which parses the record; this
 * function never decides that a row is wrong.
 *
 * template: a tuple of steps, each a tuple:
 *   (0, text)       literal bytes
 *   (1, c)          string column c as "value", or null when it is NULL
 *   (2, c)          string column c verbatim (never NULL); one brace-balanced JSON object
 *   (3, c)          int64 column c in decimal
 *   (4, 0)          any quoted string without escapes
 *   (6, c)          a quoted RFC 3339 instant (an offset or Z, at most microseconds) that is
 *                   int64 column c (microseconds since the epoch, UTC)
 *   (5, n, cols)    null when all of the columns in cols are NULL, else the next n steps
 * columns: per column (data, offsets, validity, indices): a string column's data buffer and
 *   int64 offsets, or an int64 column's values and None; validity a bitmap of the rows or
 *   None; indices None, or for a dictionary-encoded string column the rows' int32 indices
 *   into the strings given by data and offsets.
 * Returns n bytes, one flag per row: 1 = matched.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { LITERAL, STRING, VERBATIM, INT64, ANY_STRING, OPTIONAL, INSTANT };
#define MAX_STEPS 256
#define MAX_COLUMNS 64
#define MAX_GROUP 16

typedef struct {
    int kind, arg, count;
    const char *text;
    Py_ssize_t len;
    int cols[MAX_GROUP];
    int ncols;
} Step;

typedef struct {
    Py_buffer data, offsets, validity, indices;
    int has_offsets, has_validity, has_indices;
    Py_ssize_t values;  /* strings in data/offsets */
} Column;

static int is_valid(const Column *c, Py_ssize_t i) {
    if (!c->has_validity) return 1;
    const unsigned char *bits = c->validity.buf;
    return (bits[i >> 3] >> (i & 7)) & 1;
}

/* A string usable between quotes as is: no '"' or '\\' (a control byte cannot stand in a
 * JSON string: a record holding one is not one the sealer wrote, and its chain link fails). */
static int plain(const char *s, Py_ssize_t n) {
    return !memchr(s, '"', (size_t)n) && !memchr(s, '\\', (size_t)n);
}

/* One JSON object whose closing brace is the last byte (strings and escapes skipped). */
static int balanced_object(const char *s, Py_ssize_t n) {
    if (n < 2 || s[0] != '{') return 0;
    int depth = 0, in_string = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char ch = s[i];
        if (in_string) {
            if (ch == '\\') i++;
            else if (ch == '"') in_string = 0;
            continue;
        }
        if (ch == '"') in_string = 1;
        else if (ch == '{' || ch == '[') depth++;
        else if (ch == '}' || ch == ']') {
            if (--depth == 0 && i != n - 1) return 0;
            if (depth < 0) return 0;
        }
    }
    return depth == 0 && !in_string;
}

static int digits(const char *s, int n, int *out) {
    *out = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        *out = *out * 10 + (s[i] - '0');
    }
    return 1;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM) as microseconds since the epoch; 0 if the
 * text is not exactly that with valid fields (such an instant is left to the exact check). */
static int parse_instant(const char *s, Py_ssize_t n, int64_t *micros) {
    static const int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, se, frac = 0, oh = 0, om = 0;
    if (n < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') return 0;
    if (!digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) || !digits(s + 11, 2, &h) ||
        !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &se)) return 0;
    Py_ssize_t at = 19;
    if (s[at] == '.') {
        int k = 0;
        at++;
        while (at < n && s[at] >= '0' && s[at] <= '9' && k < 7) {
            frac = frac * 10 + (s[at] - '0');
            at++;
            k++;
        }
        if (k < 1 || k > 6) return 0;
        for (; k < 6; k++) frac *= 10;
    }
    int sign = 0;
    if (at == n - 1 && s[at] == 'Z') {
        sign = 0;
    } else if (at == n - 6 && (s[at] == '+' || s[at] == '-') && s[at + 3] == ':' &&
               digits(s + at + 1, 2, &oh) && digits(s + at + 4, 2, &om) && oh <= 23 && om <= 59) {
        sign = s[at] == '+' ? 1 : -1;
    } else {
        return 0;
    }
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > month_days[mo - 1] + (mo == 2 && leap) || h > 23 || mi > 59 || se > 59)
        return 0;
    int64_t seconds = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - sign * (oh * 3600 + om * 60);
    *micros = seconds * 1000000 + frac;
    return 1;
}

static int match_row(const Step *steps, int nsteps, const Column *cols, Py_ssize_t row,
                     const char *leaf, Py_ssize_t len) {
    Py_ssize_t at = 0;
    for (int i = 0; i < nsteps; i++) {
        const Step *st = &steps[i];
        switch (st->kind) {
        case LITERAL:
            if (len - at < st->len || memcmp(leaf + at, st->text, (size_t)st->len)) return 0;
            at += st->len;
            break;
        case STRING:
        case VERBATIM: {
            const Column *c = &cols[st->arg];
            if (!is_valid(c, row)) {
                if (st->kind == VERBATIM || len - at < 4 || memcmp(leaf + at, "null", 4)) return 0;
                at += 4;
                break;
            }
            const int64_t *o = c->offsets.buf;
            Py_ssize_t k = c->has_indices ? ((const int32_t *)c->indices.buf)[row] : row;
            const char *v = (const char *)c->data.buf + o[k];
            Py_ssize_t n = (Py_ssize_t)(o[k + 1] - o[k]);
            if (st->kind == STRING) {
                if (len - at < n + 2 || leaf[at] != '"' || leaf[at + n + 1] != '"' ||
                    memcmp(leaf + at + 1, v, (size_t)n) || !plain(v, n)) return 0;
                at += n + 2;
            } else {
                if (len - at < n || memcmp(leaf + at, v, (size_t)n) || !balanced_object(v, n)) return 0;
                at += n;
            }
            break;
        }
        case INT64: {
            const Column *c = &cols[st->arg];
            if (!is_valid(c, row)) return 0;
            char digits[24];
            int n = snprintf(digits, sizeof digits, "%lld", (long long)((const int64_t *)c->data.buf)[row]);
            if (len - at < n || memcmp(leaf + at, digits, (size_t)n)) return 0;
            at += n;
            break;
        }
        case ANY_STRING:
        case INSTANT: {
            if (at >= len || leaf[at] != '"') return 0;
            const char *close = memchr(leaf + at + 1, '"', (size_t)(len - at - 1));
            if (!close || !plain(leaf + at + 1, close - (leaf + at + 1))) return 0;
            if (st->kind == INSTANT) {
                const Column *c = &cols[st->arg];
                int64_t micros;
                if (!is_valid(c, row) || !parse_instant(leaf + at + 1, close - (leaf + at + 1), &micros) ||
                    micros != ((const int64_t *)c->data.buf)[row]) return 0;
            }
            at = close - leaf + 1;
            break;
        }
        case OPTIONAL: {
            int all_null = 1;
            for (int k = 0; k < st->ncols; k++)
                if (is_valid(&cols[st->cols[k]], row)) all_null = 0;
            if (all_null) {
                if (len - at < 4 || memcmp(leaf + at, "null", 4)) return 0;
                at += 4;
                i += st->count;
            }
            break;
        }
        }
    }
    return at == len;
}

static void release(Column *cols, int n, Py_buffer *leaf_data, Py_buffer *leaf_offsets) {
    for (int i = 0; i < n; i++) {
        PyBuffer_Release(&cols[i].data);
        if (cols[i].has_offsets) PyBuffer_Release(&cols[i].offsets);
        if (cols[i].has_validity) PyBuffer_Release(&cols[i].validity);
        if (cols[i].has_indices) PyBuffer_Release(&cols[i].indices);
    }
    PyBuffer_Release(leaf_data);
    PyBuffer_Release(leaf_offsets);
}

static int parse_steps(PyObject *template, Step *steps, int *nsteps, int ncolumns) {
    Py_ssize_t n = PyTuple_Size(template);
    if (n < 0 || n > MAX_STEPS) {
        PyErr_SetString(PyExc_ValueError, "template must be a tuple of at most 256 steps");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyTuple_GetItem(template, i), *cols = NULL;
        Step *st = &steps[i];
        memset(st, 0, sizeof *st);
        if (!PyTuple_Check(t) || PyTuple_Size(t) < 2) goto bad;
        st->kind = (int)PyLong_AsLong(PyTuple_GetItem(t, 0));
        PyObject *arg = PyTuple_GetItem(t, 1);
        if (st->kind == LITERAL) {
            char *text;
            if (PyBytes_AsStringAndSize(arg, &text, &st->len) < 0) return -1;
            st->text = text;
            continue;
        }
        st->arg = (int)PyLong_AsLong(arg);
        if (PyErr_Occurred()) return -1;
        if (st->kind == ANY_STRING) {
            continue;
        } else if (st->kind == OPTIONAL) {
            st->count = st->arg;
            if (PyTuple_Size(t) != 3 || st->count < 0 || i + st->count >= n) goto bad;
            cols = PyTuple_GetItem(t, 2);
            if (!PyTuple_Check(cols) || PyTuple_Size(cols) > MAX_GROUP) goto bad;
            st->ncols = (int)PyTuple_Size(cols);
            for (int k = 0; k < st->ncols; k++) {
                st->cols[k] = (int)PyLong_AsLong(PyTuple_GetItem(cols, k));
                if (st->cols[k] < 0 || st->cols[k] >= ncolumns) goto bad;
            }
        } else if (!(st->kind >= STRING && st->kind <= INT64) && st->kind != INSTANT) {
            goto bad;
        } else if (st->arg < 0 || st->arg >= ncolumns) {
            goto bad;
        }
    }
    *nsteps = (int)n;
    return 0;
bad:
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "malformed template step");
    return -1;
}

static PyObject *match_records(PyObject *self, PyObject *args) {
    PyObject *template, *leaf_data_obj, *leaf_offsets_obj, *columns;
    if (!PyArg_ParseTuple(args, "O!OOO!", &PyTuple_Type, &template, &leaf_data_obj, &leaf_offsets_obj,
                          &PyTuple_Type, &columns)) return NULL;
    Py_ssize_t ncolumns = PyTuple_Size(columns);
    if (ncolumns > MAX_COLUMNS) return PyErr_Format(PyExc_ValueError, "at most %d columns", MAX_COLUMNS);
    Step local[MAX_STEPS];
    int nsteps;
    if (parse_steps(template, local, &nsteps, (int)ncolumns) < 0) return NULL;

    Py_buffer leaf_data, leaf_offsets;
    Column cols[MAX_COLUMNS];
    memset(cols, 0, sizeof cols);
    if (PyObject_GetBuffer(leaf_data_obj, &leaf_data, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(leaf_offsets_obj, &leaf_offsets, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&leaf_data);
        return NULL;
    }
    Py_ssize_t n = leaf_offsets.len / (Py_ssize_t)sizeof(int64_t) - 1;
    int got = 0;
    PyObject *result = NULL;
    if (n < 0 || leaf_offsets.len % sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "leaf offsets must hold n + 1 int64 values");
        goto done;
    }
    const int64_t *lo = leaf_offsets.buf;
    for (Py_ssize_t i = 0; i < n; i++)
        if (lo[i] < 0 || lo[i + 1] < lo[i] || lo[i + 1] > leaf_data.len) {
            PyErr_SetString(PyExc_ValueError, "leaf offsets out of range");
            goto done;
        }
    for (; got < ncolumns; got++) {
        PyObject *c = PyTuple_GetItem(columns, got);
        Column *col = &cols[got];
        if (!PyTuple_Check(c) || PyTuple_Size(c) != 4) {
            PyErr_SetString(PyExc_ValueError, "a column is (data, offsets, validity, indices)");
            goto done;
        }
        /* got + 1 columns are released from here on: every buffer taken sets its flag. */
        if (PyObject_GetBuffer(PyTuple_GetItem(c, 0), &col->data, PyBUF_SIMPLE) < 0) goto done;
        PyObject *off = PyTuple_GetItem(c, 1), *val = PyTuple_GetItem(c, 2), *idx = PyTuple_GetItem(c, 3);
        int ok = 1;
        if (off != Py_None) ok = (col->has_offsets = PyObject_GetBuffer(off, &col->offsets, PyBUF_SIMPLE) == 0);
        if (ok && val != Py_None) ok = (col->has_validity = PyObject_GetBuffer(val, &col->validity, PyBUF_SIMPLE) == 0);
        if (ok && idx != Py_None) ok = (col->has_indices = PyObject_GetBuffer(idx, &col->indices, PyBUF_SIMPLE) == 0);
        if (!ok) {
            got++;
            goto done;
        }
        /* Sizes: every offset inside the data, every row inside the bitmap and the indices,
         * every index a string of the dictionary. */
        ok = col->has_validity ? col->validity.len * 8 >= n : 1;
        if (col->has_offsets) {
            const int64_t *o = col->offsets.buf;
            col->values = col->offsets.len / (Py_ssize_t)sizeof(int64_t) - 1;
            ok = ok && col->values >= 0 && col->offsets.len % sizeof(int64_t) == 0 &&
                 (col->has_indices || col->values == n);
            for (Py_ssize_t i = 0; ok && i < col->values; i++)
                ok = o[i] >= 0 && o[i + 1] >= o[i] && o[i + 1] <= col->data.len;
        } else {
            ok = ok && !col->has_indices && col->data.len >= n * (Py_ssize_t)sizeof(int64_t);
        }
        if (ok && col->has_indices) {
            const int32_t *ix = col->indices.buf;
            ok = col->indices.len >= n * (Py_ssize_t)sizeof(int32_t);
            for (Py_ssize_t i = 0; ok && i < n; i++)
                ok = !is_valid(col, i) || (ix[i] >= 0 && ix[i] < col->values);
        }
        if (!ok) {
            PyErr_SetString(PyExc_ValueError, "a column does not fit the rows");
            got++;
            goto done;
        }
    }
    for (int i = 0; i < nsteps; i++) {
        const Step *st = &local[i];
        int need_offsets = st->kind == STRING || st->kind == VERBATIM;
        if ((need_offsets || st->kind == INT64 || st->kind == INSTANT) && cols[st->arg].has_offsets != need_offsets) {
            PyErr_SetString(PyExc_ValueError, "a step's column has the wrong kind");
            goto done;
        }
    }

    PyObject *flags = PyBytes_FromStringAndSize(NULL, n);
    if (!flags) goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(flags);
    const char *leaf = leaf_data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < n; r++)
        out[r] = (unsigned char)match_row(local, nsteps, cols, r, leaf + lo[r], (Py_ssize_t)(lo[r + 1] - lo[r]));
    Py_END_ALLOW_THREADS
    result = flags;
done:
    release(cols, got, &leaf_data, &leaf_offsets);
    return result;
}

static PyMethodDef methods[] = {
    {"match_records", match_records, METH_VARARGS, "Rows whose record is exactly the template's text."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_records", "Verify's record matcher.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__records(void) { return PyModule_Create(&module); }
