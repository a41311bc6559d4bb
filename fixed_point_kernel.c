/* One masked-conv layer of the fixed-point context model at the positions of one wave (fixed_point_pc.py's
 * decoder), in one call instead of numpy's gather, product, bias, floor, residual, clamp and scatter calls.
 *
 * Built by fixed_point_kernel.py with the system C compiler and called through ctypes (which releases the
 * GIL, so the two parts of a wave run in two threads at once). The product is BLAS's sgemm, passed in as a
 * function pointer (scipy's Cython BLAS), so it is the same near-peak product as numpy's. Every value is an
 * integer times a power of two within float32's exact range (fixed_point_pc._float32_clamp), so the result
 * does not depend on the order of the additions: it equals the numpy path's bit for bit.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef void (*sgemm_t)(char *, char *, int *, int *, int *, float *, float *, int *, float *, int *, float *,
                        float *, int *);

/* n positions (flat grid indices idx) of a layer whose input src has f features per position:
 *   cols[i] = the 3-position windows src[idx[i] + rowoff[r] .. + 3] of the R kernel rows (n x K, K = 3 R f)
 *   acc = cols @ w (K x m, pre-scaled by 2^-F)
 *   acc = clamp(floor(acc + b) + res[idx], lo, hi); dst[idx] = acc (res, dst: NULL for none)
 * cols must hold n * K floats and acc n * m. Returns 0. */
int cpm_layer(int64_t n, const int64_t *idx, const float *src, int f, const int64_t *rowoff, int R,
              const float *w, const float *b, int m, const float *res, float *dst, float lo, float hi,
              float *cols, float *acc, void *sgemm_ptr)
{
    sgemm_t sgemm = (sgemm_t)sgemm_ptr;
    const int K = R * 3 * f;
    const size_t window = (size_t)3 * f * sizeof(float);
    for (int64_t i = 0; i < n; i++) {
        float *c = cols + i * K;
        for (int r = 0; r < R; r++)
            memcpy(c + r * 3 * f, src + (idx[i] + rowoff[r]) * f, window);
    }
    if (n > 0) {
        /* row-major acc (n x m) = cols (n x K) @ w (K x m) is column-major acc^T = w^T @ cols^T */
        char no = 'N';
        int m_ = m, n_ = (int)n, k_ = K, lda = m, ldb = K, ldc = m;
        float one = 1.f, zero = 0.f;
        sgemm(&no, &no, &m_, &n_, &k_, &one, (float *)w, &lda, cols, &ldb, &zero, acc, &ldc);
    }
    for (int64_t i = 0; i < n; i++) {
        float *a = acc + i * m;
        const int64_t p = idx[i] * m;
        for (int j = 0; j < m; j++) {
            float v = floorf(a[j] + b[j]);
            if (res) v += res[p + j];
            a[j] = v < lo ? lo : (v > hi ? hi : v);
        }
        if (dst) memcpy(dst + p, a, (size_t)m * sizeof(float));
    }
    return 0;
}

/* arithmetic_coding.freqs_from_int_logits for n rows of L <= 7 integer logits (its fast path, with the same
 * packed sort key: see arithmetic_coding/freqs.py for the definition and why the key orders the same way):
 * freqs[i, s] = 1 + floor(w_s (total - L) / sum(w)) + (s among the rem largest remainders),
 * w_s = exp_table[min(round_half_up((max - logit_s) / 2^(frac_bits - 8)), size - 1)]. Returns 0, or -1 if
 * L is out of range. */
int cpm_freqs(int64_t n, int L, const int64_t *logits, int frac_bits, const int64_t *exp_table,
              int64_t table_size, int64_t total, int64_t *freqs)
{
    if (L < 1 || L > 7) return -1;
    const int64_t budget = total - L, max_idx = table_size - 1, d_max = ((int64_t)1 << 27) - 1;
    const int shift = frac_bits - 8;
    int64_t d[7], w[7], q[7], key[7];
    for (int64_t i = 0; i < n; i++) {
        const int64_t *lg = logits + i * L;
        int64_t mx = lg[0], sum = 0, qsum = 0;
        for (int s = 1; s < L; s++) if (lg[s] > mx) mx = lg[s];
        for (int s = 0; s < L; s++) {
            int64_t dd = mx - lg[s], d8;
            d[s] = dd;
            if (shift > 0) d8 = ((dd >> (shift - 1)) + 1) >> 1;
            else if (shift == 0) d8 = dd;
            else d8 = (dd < max_idx ? dd : max_idx) << (-shift);
            w[s] = exp_table[d8 < max_idx ? d8 : max_idx];
            sum += w[s];
        }
        for (int s = 0; s < L; s++) {
            int64_t wb = w[s] * budget;
            q[s] = wb / sum;
            qsum += q[s];
            key[s] = ((((sum - (wb - q[s] * sum)) << 27) | (d[s] < d_max ? d[s] : d_max)) << 3) | s;
        }
        const int64_t rem = budget - qsum;
        for (int s = 0; s < L; s++) {
            int smaller = 0;
            for (int t = 0; t < L; t++) smaller += key[t] < key[s];
            freqs[i * L + s] = 1 + q[s] + (smaller < rem);
        }
    }
    return 0;
}
