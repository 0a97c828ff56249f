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
 *
 * json_objects(keys, columns, n) -> (data, offsets)
 *
 * Export's rows as RFC 8785 JSON text: row r is keys[0] value0 keys[1] value1 ... "}",
 * where keys[i] is the literal text before column i's value (e.g. '{"a":' then ',"b":'),
 * a string value is written with JCS escapes (only '"', '\\' and control characters are
 * escaped; \b \t \n \f \r, else \u00xx), an int64 in decimal and NULL as null.
 * Columns as above, without dictionaries. Returns the rows' UTF-8 bytes and their n + 1
 * int64 offsets (an arrow large_string's buffers).
 *
 * json_leaf_hashes(keys, columns, n) -> hashes
 *
 * The RFC 6962 leaf hash SHA-256(0x00 || row) of each of those rows, packed (32 bytes per
 * row), without keeping the text: each row is written to a small buffer and hashed there,
 * 16 rows at a time with AVX-512 where the CPU has it (simd() says whether).
 *
 * instants_text(column, n) -> (data, offsets) or None
 *
 * An int64 column (microseconds since the epoch, UTC; as above, without offsets or
 * indices) as RFC 3339 text with six decimals and Z, "2026-03-01T12:00:00.000000Z" (27
 * bytes; strftime's "%Y-%m-%dT%H:%M:%S%.6fZ"), a NULL row as empty text. None when a
 * valid row's year is outside 0000-9999, which that form cannot spell.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_API_COMPAT 10101
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include "_sha256_x16.h"

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
    int has_data, has_offsets, has_validity, has_indices;
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

/* An int64 in decimal, as printf's %lld, to out (room for 20 bytes); its length. */
static int decimal(int64_t v, char *out) {
    char tmp[20];
    int n = 0;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    int len = 0;
    if (v < 0) out[len++] = '-';
    while (n) out[len++] = tmp[--n];
    return len;
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
            int n = decimal(((const int64_t *)c->data.buf)[row], digits);
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

/* Takes the buffers of one column (data, offsets, validity, indices) for n rows, checking
 * that they fit: every offset inside the data, every row inside the bitmap and the indices,
 * every index a string of the dictionary. The column's flags say what to release, also
 * after a failure. */
static int take_column(PyObject *c, Column *col, Py_ssize_t n) {
    if (!PyTuple_Check(c) || PyTuple_Size(c) != 4) {
        PyErr_SetString(PyExc_ValueError, "a column is (data, offsets, validity, indices)");
        return -1;
    }
    if (PyObject_GetBuffer(PyTuple_GetItem(c, 0), &col->data, PyBUF_SIMPLE) < 0) return -1;
    col->has_data = 1;
    PyObject *off = PyTuple_GetItem(c, 1), *val = PyTuple_GetItem(c, 2), *idx = PyTuple_GetItem(c, 3);
    if (off != Py_None && !(col->has_offsets = PyObject_GetBuffer(off, &col->offsets, PyBUF_SIMPLE) == 0)) return -1;
    if (val != Py_None && !(col->has_validity = PyObject_GetBuffer(val, &col->validity, PyBUF_SIMPLE) == 0)) return -1;
    if (idx != Py_None && !(col->has_indices = PyObject_GetBuffer(idx, &col->indices, PyBUF_SIMPLE) == 0)) return -1;
    int ok = col->has_validity ? col->validity.len * 8 >= n : 1;
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
        return -1;
    }
    return 0;
}

static void release(Column *cols, int n) {
    for (int i = 0; i < n; i++) {
        if (cols[i].has_data) PyBuffer_Release(&cols[i].data);
        if (cols[i].has_offsets) PyBuffer_Release(&cols[i].offsets);
        if (cols[i].has_validity) PyBuffer_Release(&cols[i].validity);
        if (cols[i].has_indices) PyBuffer_Release(&cols[i].indices);
    }
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
    for (; got < ncolumns; got++)
        if (take_column(PyTuple_GetItem(columns, got), &cols[got], n) < 0) {
            got++;
            goto done;
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
    release(cols, got);
    PyBuffer_Release(&leaf_data);
    PyBuffer_Release(&leaf_offsets);
    return result;
}

/* Per byte, the length of its JCS escape, or 0 when it stands for itself. */
static unsigned char escape_len[256];

static void init_escapes(void) {
    for (int ch = 0; ch < 0x20; ch++) escape_len[ch] = 6; /* \u00xx */
    escape_len['\b'] = escape_len['\t'] = escape_len['\n'] = escape_len['\f'] = escape_len['\r'] = 2;
    escape_len['"'] = escape_len['\\'] = 2;
}

/* The index of the first byte at or after i that needs an escape ('"', '\\' or a control
 * character), or n: 16 bytes at a time with SSE2. */
static Py_ssize_t next_escape(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) {
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), control = _mm_set1_epi8(0x1f);
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                   _mm_cmpeq_epi8(_mm_min_epu8(v, control), v)); /* v <= 0x1f */
        int mask = _mm_movemask_epi8(hit);
        if (mask) return i + __builtin_ctz((unsigned)mask);
    }
#endif
    for (; i < n; i++)
        if (escape_len[s[i]]) return i;
    return n;
}

/* The length of one string value's JCS text, quotes included. */
static Py_ssize_t json_string_len(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t len = n + 2;
    for (Py_ssize_t i = next_escape(s, 0, n); i < n; i = next_escape(s, i + 1, n)) len += escape_len[s[i]] - 1;
    return len;
}

/* Writes one string value's JCS text (quoted) to out; its length. Runs of bytes that stand
 * for themselves are copied whole. */
static Py_ssize_t json_string(const unsigned char *s, Py_ssize_t n, char *out) {
    static const char hex[] = "0123456789abcdef";
    char *at = out;
    *at++ = '"';
    Py_ssize_t run = 0;
    for (Py_ssize_t i = next_escape(s, 0, n); i < n; i = next_escape(s, i + 1, n)) {
        unsigned char ch = s[i];
        memcpy(at, s + run, (size_t)(i - run));
        at += i - run;
        run = i + 1;
        *at++ = '\\';
        switch (ch) {
        case '"': *at++ = '"'; break;
        case '\\': *at++ = '\\'; break;
        case '\b': *at++ = 'b'; break;
        case '\t': *at++ = 't'; break;
        case '\n': *at++ = 'n'; break;
        case '\f': *at++ = 'f'; break;
        case '\r': *at++ = 'r'; break;
        default:
            *at++ = 'u'; *at++ = '0'; *at++ = '0'; *at++ = hex[ch >> 4]; *at++ = hex[ch & 15];
        }
    }
    memcpy(at, s + run, (size_t)(n - run));
    at += n - run;
    *at++ = '"';
    return at - out;
}

/* Row r's text written to out (if not NULL); its length. */
static Py_ssize_t json_row(const Column *cols, int ncols, const char *const *keys, const Py_ssize_t *key_lens,
                           Py_ssize_t r, char *out) {
    Py_ssize_t len = 0;
    for (int c = 0; c < ncols; c++) {
        const Column *col = &cols[c];
        if (out) memcpy(out + len, keys[c], (size_t)key_lens[c]);
        len += key_lens[c];
        if (!is_valid(col, r)) {
            if (out) memcpy(out + len, "null", 4);
            len += 4;
        } else if (col->has_offsets) {
            const int64_t *o = col->offsets.buf;
            const unsigned char *v = (const unsigned char *)col->data.buf + o[r];
            Py_ssize_t k = (Py_ssize_t)(o[r + 1] - o[r]);
            len += out ? json_string(v, k, out + len) : json_string_len(v, k);
        } else {
            char digits[24];
            int k = decimal(((const int64_t *)col->data.buf)[r], digits);
            if (out) memcpy(out + len, digits, (size_t)k);
            len += k;
        }
    }
    if (out) out[len] = '}';
    return len + 1;
}

/* The arguments of json_objects and json_leaf_hashes: keys, columns and n. */
typedef struct {
    const char *keys[MAX_COLUMNS];
    Py_ssize_t key_lens[MAX_COLUMNS];
    Column cols[MAX_COLUMNS];
    int ncols, got;
    Py_ssize_t n;
} Rows;

static int take_rows(PyObject *args, Rows *rows) {
    PyObject *keys, *columns;
    memset(rows, 0, sizeof *rows);
    if (!PyArg_ParseTuple(args, "O!O!n", &PyTuple_Type, &keys, &PyTuple_Type, &columns, &rows->n)) return -1;
    Py_ssize_t ncols = PyTuple_Size(columns);
    if (ncols < 1 || ncols > MAX_COLUMNS || PyTuple_Size(keys) != ncols || rows->n < 0) {
        PyErr_Format(PyExc_ValueError, "one key per column, 1 to %d columns, n >= 0", MAX_COLUMNS);
        return -1;
    }
    rows->ncols = (int)ncols;
    for (int c = 0; c < rows->ncols; c++) {
        char *text;
        if (PyBytes_AsStringAndSize(PyTuple_GetItem(keys, c), &text, &rows->key_lens[c]) < 0) return -1;
        rows->keys[c] = text;
    }
    for (; rows->got < rows->ncols; rows->got++) {
        Column *col = &rows->cols[rows->got];
        if (take_column(PyTuple_GetItem(columns, rows->got), col, rows->n) < 0 || col->has_indices) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "no dictionary columns here");
            rows->got++;
            return -1;
        }
    }
    return 0;
}

static Py_ssize_t rows_text(const Rows *rows, Py_ssize_t r, char *out) {
    return json_row(rows->cols, rows->ncols, rows->keys, rows->key_lens, r, out);
}

/* An upper bound of row r's text length (every byte escaped as \u00xx), without a scan. */
static Py_ssize_t rows_bound(const Rows *rows, Py_ssize_t r) {
    Py_ssize_t len = 1;
    for (int c = 0; c < rows->ncols; c++) {
        const Column *col = &rows->cols[c];
        len += rows->key_lens[c] + 24;
        if (col->has_offsets) {
            const int64_t *o = col->offsets.buf;
            len += 6 * (Py_ssize_t)(o[r + 1] - o[r]);
        }
    }
    return len;
}

static PyObject *json_objects(PyObject *self, PyObject *args) {
    Rows rows;
    PyObject *data = NULL, *offsets = NULL, *result = NULL;
    if (take_rows(args, &rows) < 0) goto done;
    Py_ssize_t n = rows.n;
    offsets = PyBytes_FromStringAndSize(NULL, (n + 1) * (Py_ssize_t)sizeof(int64_t));
    if (!offsets) goto done;
    int64_t *o = (int64_t *)PyBytes_AS_STRING(offsets);
    o[0] = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < n; r++) o[r + 1] = o[r] + rows_text(&rows, r, NULL);
    Py_END_ALLOW_THREADS
    data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)o[n]);
    if (!data) goto done;
    char *out = PyBytes_AS_STRING(data);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < n; r++) rows_text(&rows, r, out + o[r]);
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(2, data, offsets);
done:
    Py_XDECREF(data);
    Py_XDECREF(offsets);
    release(rows.cols, rows.got);
    return result;
}


/* Row r's leaf text (0x00 || JSON) to buf, growing it to hold the row's bound plus
 * `spare` bytes past `at`; its length, or -1 without memory. */
static Py_ssize_t leaf_text(const Rows *rows, Py_ssize_t r, char **buf, Py_ssize_t *cap, Py_ssize_t at,
                            Py_ssize_t spare) {
    Py_ssize_t need = at + rows_bound(rows, r) + 1 + spare;
    if (need > *cap) {
        char *bigger = realloc(*buf, (size_t)(need * 2));
        if (!bigger) return -1;
        *buf = bigger;
        *cap = need * 2;
    }
    (*buf)[at] = 0; /* RFC 6962 leaf prefix */
    return rows_text(rows, r, *buf + at + 1) + 1;
}

static PyObject *json_leaf_hashes(PyObject *self, PyObject *args) {
    Rows rows;
    PyObject *hashes = NULL;
    char *buf = NULL;
    if (take_rows(args, &rows) < 0) goto done;
    hashes = PyBytes_FromStringAndSize(NULL, rows.n * SHA256_DIGEST_LENGTH);
    if (!hashes) goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(hashes);
    Py_ssize_t cap = 0, r = 0;
    int no_memory = 0;
    Py_BEGIN_ALLOW_THREADS
#ifdef SHA256_X16
    /* Whole groups of 16 rows, padded side by side in buf (lane offsets are 32-bit). */
    for (; x16_enabled && r + 16 <= rows.n && !no_memory; r += 16) {
        int32_t off[16], nblocks[16];
        Py_ssize_t at = 0;
        for (int l = 0; l < 16 && !no_memory; l++) {
            Py_ssize_t len = leaf_text(&rows, r + l, &buf, &cap, at, 72);
            no_memory = len < 0;
            if (!no_memory) {
                off[l] = (int32_t)at;
                nblocks[l] = sha256_pad((unsigned char *)buf + at, len, 0);
                at += 64 * (Py_ssize_t)nblocks[l];
            }
            if (at > INT32_MAX) break; /* huge rows: left to the one-at-a-time loop */
        }
        if (no_memory || at > INT32_MAX) break;
        sha256_x16((const uint8_t *)buf, off, nblocks, H0, (uint8_t(*)[32])(out + r * SHA256_DIGEST_LENGTH));
    }
#endif
    for (; r < rows.n && !no_memory; r++) {
        Py_ssize_t len = leaf_text(&rows, r, &buf, &cap, 0, 0);
        no_memory = len < 0;
        if (no_memory) break;
        SHA256_CTX ctx; /* not the one-shot SHA256(): in OpenSSL 3 it looks the digest up per call */
        SHA256_Init(&ctx);
        SHA256_Update(&ctx, buf, (size_t)len);
        SHA256_Final(out + r * SHA256_DIGEST_LENGTH, &ctx);
    }
    Py_END_ALLOW_THREADS
    if (no_memory) {
        Py_CLEAR(hashes);
        PyErr_NoMemory();
    }
done:
    free(buf);
    release(rows.cols, rows.got);
    return hashes;
}

/* A proleptic Gregorian date from days since 1970-01-01 (H. Hinnant's civil_from_days). */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static const char DIGIT_PAIRS[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* v (0-99) as two digits. */
static void put2(char *out, int64_t v) {
    memcpy(out, DIGIT_PAIRS + 2 * v, 2);
}

#define INSTANT_LEN 27

static PyObject *instants_text(PyObject *self, PyObject *args) {
    PyObject *column, *data = NULL, *offsets = NULL, *result = NULL;
    Column col;
    Py_ssize_t n;
    memset(&col, 0, sizeof col);
    if (!PyArg_ParseTuple(args, "On", &column, &n)) return NULL;
    if (n < 0 || take_column(column, &col, n) < 0) goto done;
    if (col.has_offsets || col.has_indices) {
        PyErr_SetString(PyExc_ValueError, "instants_text takes an int64 column");
        goto done;
    }
    offsets = PyBytes_FromStringAndSize(NULL, (n + 1) * (Py_ssize_t)sizeof(int64_t));
    data = offsets ? PyBytes_FromStringAndSize(NULL, n * INSTANT_LEN) : NULL;
    if (!data) goto done;
    int64_t *o = (int64_t *)PyBytes_AS_STRING(offsets);
    char *out = PyBytes_AS_STRING(data);
    const int64_t *us = col.data.buf;
    int out_of_range = 0;
    Py_BEGIN_ALLOW_THREADS
    o[0] = 0;
    for (Py_ssize_t r = 0; r < n && !out_of_range; r++) {
        if (!is_valid(&col, r)) {
            o[r + 1] = o[r];
            continue;
        }
        /* floor division: an instant before 1970 has a negative day and a positive time */
        int64_t v = us[r], days = v / 86400000000LL, rem = v % 86400000000LL;
        if (rem < 0) {
            rem += 86400000000LL;
            days--;
        }
        int64_t y;
        int m, d;
        civil_from_days(days, &y, &m, &d);
        if (y < 0 || y > 9999) {
            out_of_range = 1;
            break;
        }
        int64_t sec = rem / 1000000;
        char *t = out + o[r];
        memcpy(t, "0000-00-00T00:00:00.000000Z", INSTANT_LEN);
        int64_t fraction = rem % 1000000;
        put2(t, y / 100);
        put2(t + 2, y % 100);
        put2(t + 5, m);
        put2(t + 8, d);
        put2(t + 11, sec / 3600);
        put2(t + 14, sec / 60 % 60);
        put2(t + 17, sec % 60);
        put2(t + 20, fraction / 10000);
        put2(t + 22, fraction / 100 % 100);
        put2(t + 24, fraction % 100);
        o[r + 1] = o[r] + INSTANT_LEN;
    }
    Py_END_ALLOW_THREADS
    if (out_of_range) {
        result = Py_None;
        Py_INCREF(result);
    } else if (_PyBytes_Resize(&data, (Py_ssize_t)o[n]) == 0) {
        result = PyTuple_Pack(2, data, offsets);
    }
done:
    Py_XDECREF(data);
    Py_XDECREF(offsets);
    release(&col, 1);
    return result;
}

/* repeated_name(text) -> None | bytes | True
 *
 * For a JSON text that parsed: a member name that occurs twice in one object (its raw
 * bytes between the quotes), True when no name repeats byte for byte but some name holds
 * an escape (then only a decoding check can tell "a" from "\u0061"), else None. Each
 * object's names are sorted when it closes: n log n, whatever a line's shape. */
typedef struct {
    const char *p;
    Py_ssize_t n;
} Span;

static int span_cmp(const void *a, const void *b) {
    const Span *x = a, *y = b;
    if (x->n != y->n) return x->n < y->n ? -1 : 1;
    return memcmp(x->p, y->p, (size_t)x->n);
}

/* Room for one more in a growable array that starts in `local` (no allocation for the usual
 * line); 0 without memory. */
static int grow(void **items, Py_ssize_t *cap, Py_ssize_t used, size_t size, void *local) {
    if (used < *cap) return 1;
    void *bigger = malloc(size * (size_t)(*cap * 2));
    if (!bigger) return 0;
    memcpy(bigger, *items, size * (size_t)used);
    if (*items != local) free(*items);
    *items = bigger;
    *cap *= 2;
    return 1;
}

static PyObject *repeated_name(PyObject *self, PyObject *args) {
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    const char *s = b.buf;
    Py_ssize_t len = b.len, found = -1, found_n = 0;
    int escaped = 0, nomem = 0;
    /* names: every open object's member names so far; frames: where each open container's
     * names start in `names` (-1 for an array). */
    Span local_names[256];
    Py_ssize_t local_frames[64];
    Span *names = local_names;
    Py_ssize_t *frames = local_frames, names_cap = 256, frames_cap = 64, top = 0, depth = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < len && found < 0 && !nomem; i++) {
        char c = s[i];
        if (c == '"') {
            Py_ssize_t start = ++i;
            int esc = 0;
            while (i < len && s[i] != '"') {
                if (s[i] == '\\') {
                    esc = 1;
                    i++;
                }
                i++;
            }
            if (i >= len) break;
            Py_ssize_t j = i + 1;
            while (j < len && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r')) j++;
            if (j < len && s[j] == ':' && depth > 0 && frames[depth - 1] >= 0) {
                if (!grow((void **)&names, &names_cap, top, sizeof(Span), local_names)) {
                    nomem = 1;
                    break;
                }
                names[top].p = s + start;
                names[top].n = i - start;
                top++;
                escaped |= esc;
            }
        } else if (c == '{' || c == '[') {
            if (!grow((void **)&frames, &frames_cap, depth, sizeof(Py_ssize_t), local_frames)) {
                nomem = 1;
                break;
            }
            frames[depth++] = c == '{' ? top : -1;
        } else if ((c == '}' || c == ']') && depth > 0) {
            Py_ssize_t first = frames[--depth];
            if (first >= 0 && top - first > 1) {
                qsort(names + first, (size_t)(top - first), sizeof(Span), span_cmp);
                for (Py_ssize_t k = first + 1; k < top; k++) {
                    if (span_cmp(&names[k - 1], &names[k]) == 0) {
                        found = names[k].p - s;
                        found_n = names[k].n;
                        break;
                    }
                }
            }
            if (first >= 0) top = first;
        }
    }
    Py_END_ALLOW_THREADS
    if (names != local_names) free(names);
    if (frames != local_frames) free(frames);
    PyObject *result;
    if (nomem) {
        result = PyErr_NoMemory();
    } else if (found >= 0) {
        result = PyBytes_FromStringAndSize(s + found, found_n);
    } else {
        result = escaped ? Py_True : Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&b);
    return result;
}

static PyMethodDef methods[] = {
    {"match_records", match_records, METH_VARARGS, "Rows whose record is exactly the template's text."},
    {"json_objects", json_objects, METH_VARARGS, "Rows of columns as RFC 8785 JSON objects."},
    {"json_leaf_hashes", json_leaf_hashes, METH_VARARGS, "RFC 6962 leaf hashes of those rows."},
    {"instants_text", instants_text, METH_VARARGS, "int64 microseconds as RFC 3339 UTC text."},
    {"simd", simd, METH_VARARGS, "Whether the leaf hasher uses AVX-512; set it (tests)."},
    {"repeated_name", repeated_name, METH_VARARGS, "A member name that repeats in one object of a JSON text."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_records", "Record text: verify's matcher, export's JSON rows, ingest's repeated-name check.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__records(void) {
    init_escapes();
#ifdef SHA256_X16
    x16_enabled = x16_supported();
#endif
    return PyModule_Create(&module);
}
