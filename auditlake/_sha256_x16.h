/* SHA-256 of 16 messages at once in AVX-512 (one message per 32-bit lane): about 1.6x the
 * throughput of OpenSSL's SHA extensions on this project's machines. Shared by the batch
 * hasher (_sha256.c) and the record text helpers (_records.c); each includes it once.
 *
 * The messages are padded side by side in one buffer (sha256_pad): lane i's nblocks[i]
 * blocks start at buf + off[i]; a lane with no blocks is idle. `init` is the state the
 * lanes start from: H0 for a plain hash, or a state that absorbed a 64-byte block first
 * (an HMAC pad), whose bytes sha256_pad then counts in the length. Tests check every use
 * against OpenSSL and hmac. SHA256_X16 is defined where the compiler can build it; x16_on()
 * says whether this CPU runs it.
 */
#ifndef AUDITLAKE_SHA256_X16_H
#define AUDITLAKE_SHA256_X16_H
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#define SHA256_X16
#include <immintrin.h>

static const uint32_t K256[64] = {
0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,
0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,
0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,
0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,
0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,
0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,
0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,
0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2};
static const uint32_t H0[8] = {0x6a09e667,0xbb67ae85,0x3c6ef372,0xa54ff53a,0x510e527f,0x9b05688c,0x1f83d9ab,0x5be0cd19};

__attribute__((target("avx512f,avx512bw")))
static void sha256_x16(const uint8_t *buf, const int32_t off[16], const int32_t nblocks[16], const uint32_t init[8],
                       uint8_t out[16][32]) {
    __m512i s[8];
    for (int k = 0; k < 8; k++) s[k] = _mm512_set1_epi32((int)init[k]);
    const __m512i bswap = _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
    __m512i vo = _mm512_loadu_si512(off), vn = _mm512_loadu_si512(nblocks);
    int maxb = 0;
    for (int i = 0; i < 16; i++) if (nblocks[i] > maxb) maxb = nblocks[i];
    for (int j = 0; j < maxb; j++) {
        __mmask16 act = _mm512_cmpgt_epi32_mask(vn, _mm512_set1_epi32(j));
        __m512i base = _mm512_add_epi32(vo, _mm512_set1_epi32(64 * j));
        __m512i w[16];
        for (int t = 0; t < 16; t++) {
            __m512i idx = _mm512_add_epi32(base, _mm512_set1_epi32(4 * t));
            __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), act, idx, buf, 1);
            w[t] = _mm512_shuffle_epi8(v, bswap);
        }
        __m512i a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
        for (int t = 0; t < 64; t++) {
            __m512i wt;
            if (t < 16) wt = w[t];
            else {
                __m512i w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
                __m512i s0 = _mm512_ternarylogic_epi32(_mm512_ror_epi32(w15, 7), _mm512_ror_epi32(w15, 18), _mm512_srli_epi32(w15, 3), 0x96);
                __m512i s1 = _mm512_ternarylogic_epi32(_mm512_ror_epi32(w2, 17), _mm512_ror_epi32(w2, 19), _mm512_srli_epi32(w2, 10), 0x96);
                wt = _mm512_add_epi32(_mm512_add_epi32(w[t & 15], s0), _mm512_add_epi32(w[(t - 7) & 15], s1));
                w[t & 15] = wt;
            }
            __m512i S1 = _mm512_ternarylogic_epi32(_mm512_ror_epi32(e, 6), _mm512_ror_epi32(e, 11), _mm512_ror_epi32(e, 25), 0x96);
            __m512i ch = _mm512_ternarylogic_epi32(e, f, g, 0xCA);
            __m512i t1 = _mm512_add_epi32(_mm512_add_epi32(h, S1), _mm512_add_epi32(ch, _mm512_add_epi32(wt, _mm512_set1_epi32((int)K256[t]))));
            __m512i S0 = _mm512_ternarylogic_epi32(_mm512_ror_epi32(a, 2), _mm512_ror_epi32(a, 13), _mm512_ror_epi32(a, 22), 0x96);
            __m512i mj = _mm512_ternarylogic_epi32(a, b, c, 0xE8);
            h = g; g = f; f = e; e = _mm512_add_epi32(d, t1); d = c; c = b; b = a; a = _mm512_add_epi32(t1, _mm512_add_epi32(S0, mj));
        }
        s[0] = _mm512_mask_add_epi32(s[0], act, s[0], a); s[1] = _mm512_mask_add_epi32(s[1], act, s[1], b);
        s[2] = _mm512_mask_add_epi32(s[2], act, s[2], c); s[3] = _mm512_mask_add_epi32(s[3], act, s[3], d);
        s[4] = _mm512_mask_add_epi32(s[4], act, s[4], e); s[5] = _mm512_mask_add_epi32(s[5], act, s[5], f);
        s[6] = _mm512_mask_add_epi32(s[6], act, s[6], g); s[7] = _mm512_mask_add_epi32(s[7], act, s[7], h);
    }
    uint32_t tmp[8][16];
    for (int k = 0; k < 8; k++) _mm512_storeu_si512(tmp[k], _mm512_shuffle_epi8(s[k], bswap));
    for (int i = 0; i < 16; i++) for (int k = 0; k < 8; k++) memcpy(out[i] + 4 * k, &tmp[k][i], 4);
}

/* SHA-256 padding after a message of len bytes at m (room for len + 72 bytes), `before`
 * bytes having been absorbed ahead of it (0, or 64 after an HMAC pad); its blocks. */
static int32_t sha256_pad(unsigned char *m, int64_t len, int64_t before) {
    int64_t total = (len + 9 + 63) / 64 * 64;
    memset(m + len, 0, (size_t)(total - len));
    m[len] = 0x80;
    uint64_t bits = (uint64_t)(before + len) * 8;
    for (int k = 0; k < 8; k++) m[total - 1 - k] = (unsigned char)(bits >> (8 * k));
    return (int32_t)(total / 64);
}

static int x16_enabled;

/* Whether the CPU (and the OS, which must save the AVX-512 registers) runs sha256_x16. */
static int x16_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}
#endif

/* simd(enabled=None) -> bool: whether this module hashes 16 at a time with AVX-512 (where
 * the CPU has it); `enabled` False turns it off, True back on if the CPU allows (tests). */
static PyObject *simd(PyObject *self, PyObject *args) {
    PyObject *enabled = Py_None;
    if (!PyArg_ParseTuple(args, "|O", &enabled)) return NULL;
#ifdef SHA256_X16
    if (enabled != Py_None) {
        int on = PyObject_IsTrue(enabled);
        if (on < 0) return NULL;
        x16_enabled = on && x16_supported();
    }
    return PyBool_FromLong(x16_enabled);
#else
    return PyBool_FromLong(0);
#endif
}
#endif
