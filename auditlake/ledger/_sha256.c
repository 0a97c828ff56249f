/* Batch SHA-256 for the ledger: leaf hashes, HMAC links and Merkle parents of many items in
 * one call, so the per-item cost is OpenSSL's compression function (SHA-NI where the CPU
 * has it), not a Python call. The GIL is released while hashing.
 *
 * Independent items go 16 at a time through the AVX-512 hasher (_sha256_x16.h) where the
 * CPU has it; simd() says whether. Items are given as Arrow binary arrays: a data buffer
 * and n + 1 int64 offsets (callers cast to large_binary). The Python wrappers in merkle.py
 * and chain.py define the meaning; tests compare every function with hashlib/hmac.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_API_COMPAT 10101
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#include "../_sha256_x16.h"

#define HASH 32

typedef struct {
    Py_buffer data, offsets;
    Py_ssize_t n;
} Items;

/* Parse a (data, offsets) pair of buffers into n items, checking the offsets stay inside data. */
static int items_get(PyObject *data, PyObject *offsets, Items *it) {
    if (PyObject_GetBuffer(data, &it->data, PyBUF_SIMPLE) < 0) return -1;
    if (PyObject_GetBuffer(offsets, &it->offsets, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&it->data);
        return -1;
    }
    if (it->offsets.len < (Py_ssize_t)sizeof(int64_t) || it->offsets.len % sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "offsets must hold n + 1 int64 values");
        goto fail;
    }
    it->n = it->offsets.len / (Py_ssize_t)sizeof(int64_t) - 1;
    const int64_t *o = (const int64_t *)it->offsets.buf;
    for (Py_ssize_t i = 0; i < it->n; i++) {
        if (o[i] < 0 || o[i + 1] < o[i] || o[i + 1] > it->data.len) {
            PyErr_SetString(PyExc_ValueError, "offsets out of range of the data");
            goto fail;
        }
    }
    return 0;
fail:
    PyBuffer_Release(&it->data);
    PyBuffer_Release(&it->offsets);
    return -1;
}

static void items_release(Items *it) {
    PyBuffer_Release(&it->data);
    PyBuffer_Release(&it->offsets);
}

static PyObject *new_output(Py_ssize_t n, unsigned char **out) {
    PyObject *result = PyBytes_FromStringAndSize(NULL, n * HASH);
    if (result) *out = (unsigned char *)PyBytes_AS_STRING(result);
    return result;
}

#ifdef SHA256_X16
/* The 16 padded messages of one sha256_x16 call, in a buffer grown as needed. */
typedef struct {
    unsigned char *buf;
    size_t cap;
    int32_t off[16], nblocks[16];
} Lanes;

/* Items r..r+15 as lanes, each after head_len bytes of its head (heads + l * head_step),
 * `before` bytes having been absorbed ahead of each; -1 without memory, or past the 32-bit
 * lane offsets (the caller then hashes them one at a time). */
static int lanes_fill(Lanes *lanes, const unsigned char *d, const int64_t *o, Py_ssize_t r, const unsigned char *heads,
                      size_t head_len, size_t head_step, int64_t before) {
    size_t at = 0;
    for (int l = 0; l < 16; l++) {
        size_t len = (size_t)(o[r + l + 1] - o[r + l]), need = at + head_len + len + 72;
        if (need > INT32_MAX) return -1;
        if (need > lanes->cap) {
            unsigned char *bigger = realloc(lanes->buf, need * 2);
            if (!bigger) return -1;
            lanes->buf = bigger;
            lanes->cap = need * 2;
        }
        memcpy(lanes->buf + at, heads + l * head_step, head_len);
        memcpy(lanes->buf + at + head_len, d + o[r + l], len);
        lanes->off[l] = (int32_t)at;
        lanes->nblocks[l] = sha256_pad(lanes->buf + at, (int64_t)(head_len + len), before);
        at += 64 * (size_t)lanes->nblocks[l];
    }
    return 0;
}

/* A context's chaining state, as sha256_x16 starts from it. */
static void state_of(const SHA256_CTX *c, uint32_t state[8]) {
    for (int k = 0; k < 8; k++) state[k] = (uint32_t)c->h[k];
}
#endif

/* HMAC-SHA-256 contexts that absorbed the padded key (RFC 2104). */
static int hmac_pads(Py_buffer *key, SHA256_CTX *inner, SHA256_CTX *outer) {
    unsigned char k[64] = {0}, pad[64];
    if (key->len > 64) SHA256(key->buf, (size_t)key->len, k);
    else memcpy(k, key->buf, (size_t)key->len);
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
    SHA256_Init(inner);
    SHA256_Update(inner, pad, 64);
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
    SHA256_Init(outer);
    SHA256_Update(outer, pad, 64);
    return 0;
}

static void hmac_link(const SHA256_CTX *inner, const SHA256_CTX *outer, const unsigned char *prev,
                      const unsigned char *leaf, size_t len, unsigned char *out) {
    SHA256_CTX c = *inner;
    unsigned char mid[HASH];
    if (prev) SHA256_Update(&c, prev, HASH);
    SHA256_Update(&c, leaf, len);
    SHA256_Final(mid, &c);
    c = *outer;
    SHA256_Update(&c, mid, HASH);
    SHA256_Final(out, &c);
}

/* leaf_hashes(data, offsets) -> SHA-256(0x00 || item) of each item, concatenated. */
static PyObject *leaf_hashes(PyObject *self, PyObject *args) {
    PyObject *data, *offsets;
    Items it;
    unsigned char *out;
    if (!PyArg_ParseTuple(args, "OO", &data, &offsets) || items_get(data, offsets, &it) < 0) return NULL;
    PyObject *result = new_output(it.n, &out);
    if (result) {
        const unsigned char *d = it.data.buf;
        const int64_t *o = it.offsets.buf;
        static const unsigned char prefix = 0x00;
        Py_ssize_t i = 0;
        Py_BEGIN_ALLOW_THREADS
#ifdef SHA256_X16
        Lanes lanes = {0};
        for (; x16_enabled && i + 16 <= it.n && lanes_fill(&lanes, d, o, i, &prefix, 1, 0, 0) == 0; i += 16)
            sha256_x16(lanes.buf, lanes.off, lanes.nblocks, H0, (uint8_t(*)[32])(out + i * HASH));
        free(lanes.buf);
#endif
        SHA256_CTX c;
        for (; i < it.n; i++) {
            SHA256_Init(&c);
            SHA256_Update(&c, &prefix, 1);
            SHA256_Update(&c, d + o[i], (size_t)(o[i + 1] - o[i]));
            SHA256_Final(out + i * HASH, &c);
        }
        Py_END_ALLOW_THREADS
    }
    items_release(&it);
    return result;
}

/* leaf_hashes_views(views, buffers) -> the leaf hashes of an Arrow binary/string view array:
 * 16-byte views (int32 length, then the bytes inline when at most 12, else a 4-byte prefix,
 * an int32 buffer index and an int32 offset) over a tuple of data buffers. Polars hands its
 * strings over this way; hashing them in place saves a copy of every row. */
static PyObject *leaf_hashes_views(PyObject *self, PyObject *args) {
    Py_buffer views;
    PyObject *tuple, *result = NULL;
    unsigned char *out;
    if (!PyArg_ParseTuple(args, "y*O!", &views, &PyTuple_Type, &tuple)) return NULL;
    Py_ssize_t nbuf = PyTuple_GET_SIZE(tuple), got = 0;
    Py_buffer *bufs = PyMem_Calloc(nbuf ? nbuf : 1, sizeof(Py_buffer));
    if (!bufs) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < nbuf; got++)
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(tuple, got), &bufs[got], PyBUF_SIMPLE) < 0) goto done;
    if (views.len % 16) {
        PyErr_SetString(PyExc_ValueError, "views must be 16 bytes each");
        goto done;
    }
    Py_ssize_t n = views.len / 16;
    const unsigned char *v = views.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t len, index, offset;
        memcpy(&len, v + 16 * i, 4);
        if (len < 0) goto bad;
        if (len <= 12) continue;
        memcpy(&index, v + 16 * i + 8, 4);
        memcpy(&offset, v + 16 * i + 12, 4);
        if (index < 0 || index >= nbuf || offset < 0 || (Py_ssize_t)offset + len > bufs[index].len) goto bad;
    }
    if ((result = new_output(n, &out))) {
        static const unsigned char prefix = 0x00;
        Py_BEGIN_ALLOW_THREADS
        SHA256_CTX c;
        for (Py_ssize_t i = 0; i < n; i++) {
            int32_t len, index, offset;
            const unsigned char *view = v + 16 * i, *bytes;
            memcpy(&len, view, 4);
            if (len <= 12) {
                bytes = view + 4;
            } else {
                memcpy(&index, view + 8, 4);
                memcpy(&offset, view + 12, 4);
                bytes = (const unsigned char *)bufs[index].buf + offset;
            }
            SHA256_Init(&c);
            SHA256_Update(&c, &prefix, 1);
            SHA256_Update(&c, bytes, (size_t)len);
            SHA256_Final(out + i * HASH, &c);
        }
        Py_END_ALLOW_THREADS
    }
    goto done;
bad:
    PyErr_SetString(PyExc_ValueError, "a view points outside its data buffers");
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
    PyBuffer_Release(&views);
    return result;
}

/* node_hashes(children) -> SHA-256(0x01 || left || right) of each 64-byte pair, concatenated. */
static PyObject *node_hashes(PyObject *self, PyObject *args) {
    Py_buffer children;
    unsigned char *out;
    if (!PyArg_ParseTuple(args, "y*", &children)) return NULL;
    if (children.len % (2 * HASH)) {
        PyBuffer_Release(&children);
        return PyErr_Format(PyExc_ValueError, "children must be pairs of %d-byte hashes", HASH);
    }
    Py_ssize_t n = children.len / (2 * HASH);
    PyObject *result = new_output(n, &out);
    if (result) {
        const unsigned char *d = children.buf;
        static const unsigned char prefix = 0x01;
        Py_BEGIN_ALLOW_THREADS
        SHA256_CTX c;
        for (Py_ssize_t i = 0; i < n; i++) {
            SHA256_Init(&c);
            SHA256_Update(&c, &prefix, 1);
            SHA256_Update(&c, d + i * 2 * HASH, 2 * HASH);
            SHA256_Final(out + i * HASH, &c);
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&children);
    return result;
}

/* HMAC-SHA-256(key, prev_i || item i) of each item, concatenated. Chained: prev_0 = prevs (one
 * hash) and prev_i = the link before; else prevs holds one hash per item (independent links,
 * as a verifier reading rows in any order checks them). */
static PyObject *links(PyObject *args, int chained) {
    Py_buffer key, prevs;
    PyObject *data, *offsets, *result = NULL;
    Items it;
    unsigned char *out;
    if (!PyArg_ParseTuple(args, "y*y*OO", &key, &prevs, &data, &offsets)) return NULL;
    if (items_get(data, offsets, &it) < 0) goto done;
    int plain = !chained && prevs.len == 0; /* HMAC of each item alone */
    if (!plain && prevs.len != (chained ? 1 : it.n) * HASH) {
        PyErr_Format(PyExc_ValueError, chained ? "prev must be a %d-byte hash" : "prevs must be empty or hold one %d-byte hash per item",
                     HASH);
    } else if ((result = new_output(it.n, &out))) {
        SHA256_CTX inner, outer;
        hmac_pads(&key, &inner, &outer);
        const unsigned char *d = it.data.buf, *p = prevs.buf;
        const int64_t *o = it.offsets.buf;
        Py_ssize_t i = 0;
        Py_BEGIN_ALLOW_THREADS
#ifdef SHA256_X16
        if (!chained && x16_enabled) {
            /* Inner hashes of 16 independent links, then their outer hashes (one block each). */
            uint32_t inner_state[8], outer_state[8];
            state_of(&inner, inner_state);
            state_of(&outer, outer_state);
            Lanes lanes = {0};
            static const unsigned char none = 0; /* the head of a plain HMAC: nothing */
            unsigned char mids[16][64];
            int32_t mid_off[16], one[16];
            for (; i + 16 <= it.n && lanes_fill(&lanes, d, o, i, plain ? &none : p + i * HASH, plain ? 0 : HASH, plain ? 0 : HASH, 64) == 0;
                 i += 16) {
                unsigned char mid[16][HASH];
                sha256_x16(lanes.buf, lanes.off, lanes.nblocks, inner_state, mid);
                for (int l = 0; l < 16; l++) {
                    memcpy(mids[l], mid[l], HASH);
                    one[l] = sha256_pad(mids[l], HASH, 64);
                    mid_off[l] = 64 * l;
                }
                sha256_x16(&mids[0][0], mid_off, one, outer_state, (uint8_t(*)[32])(out + i * HASH));
            }
            free(lanes.buf);
        }
#endif
        for (; i < it.n; i++) {
            const unsigned char *prev = chained ? (i ? out + (i - 1) * HASH : p) : plain ? NULL : p + i * HASH;
            hmac_link(&inner, &outer, prev, d + o[i], (size_t)(o[i + 1] - o[i]), out + i * HASH);
        }
        Py_END_ALLOW_THREADS
    }
    items_release(&it);
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&prevs);
    return result;
}

/* hmacs(key, prevs, data, offsets): independent links, prevs being n concatenated hashes;
 * with prevs empty, HMAC-SHA-256(key, item) of each item. */
static PyObject *hmacs(PyObject *self, PyObject *args) { return links(args, 0); }

/* hmac_chain(key, prev, data, offsets): the chain h_i = HMAC(key, h_{i-1} || item i), h_{-1} = prev. */
static PyObject *hmac_chain(PyObject *self, PyObject *args) { return links(args, 1); }

static PyMethodDef methods[] = {
    {"leaf_hashes", leaf_hashes, METH_VARARGS, "SHA-256(0x00 || item) of each item, concatenated."},
    {"leaf_hashes_views", leaf_hashes_views, METH_VARARGS, "Leaf hashes of an Arrow view array's items."},
    {"node_hashes", node_hashes, METH_VARARGS, "SHA-256(0x01 || left || right) of each pair, concatenated."},
    {"hmacs", hmacs, METH_VARARGS, "HMAC-SHA-256(key, prevs[i] || item i) (or of item i alone) of each item, concatenated."},
    {"hmac_chain", hmac_chain, METH_VARARGS, "Chained HMAC-SHA-256 links after prev, concatenated."},
    {"simd", simd, METH_VARARGS, "Whether independent items are hashed 16 at a time with AVX-512; set it (tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sha256", "Batch SHA-256 for the ledger.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__sha256(void) {
#ifdef SHA256_X16
    x16_enabled = x16_supported();
#endif
    return PyModule_Create(&module);
}
