/* The native CPU decode step: one new token per row through every block of a decoder, in C.
 *
 * Why it exists (see kernels/native.py for the whole story): at batch size 1 a decoding step
 * multiplies one vector by every weight matrix of the model. Done with PyTorch operations, a
 * 30-layer model runs ~1,000 small operations per token, each with a few microseconds of
 * dispatch, and PyTorch's quantized matrix-vector kernels read their weights at about half the
 * memory speed. Here one call runs all layers: the matrix-vector products read int8, int4
 * (Q4_1 blocks) or fp32 weights and multiply them with fp32 activations, and everything in
 * between (norms, RoPE, the KV cache, attention, activations, residuals) is a short loop.
 *
 * The arithmetic is exactly the model's (model/decoder.py, model/fused_attention.py,
 * model/layers.py), in fp32: tests compare every piece with the PyTorch path.
 *
 * Threads: OpenMP. When PyTorch is loaded first (it is), this library's libgomp.so.1 is
 * PyTorch's own, so both share one pool of threads (torch.set_num_threads applies here too).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define LLMFS_AVX2 1
#else
#define LLMFS_AVX2 0
#endif

#define LLMFS_ABI_VERSION 5
/* With this many activation rows or more, a quantized row is converted to fp32 once and reused. */
#define DEQUANTIZE_FROM_ROWS 4

enum { FORMAT_F32 = 0, FORMAT_INT8 = 1, FORMAT_Q4_1 = 2 };
enum { NORM_LAYER = 0, NORM_RMS = 1 };
enum { MLP_GELU = 0, MLP_RELU2 = 1, MLP_SWIGLU = 2 };

/* One weight matrix (rows = out_features, cols = in_features) and what goes with it.
 *   FORMAT_F32:  weight float[rows][stride]
 *   FORMAT_INT8: weight int8[rows][stride], scale float[rows]:  W[r][j] = q[r][j] * scale[r]
 *   FORMAT_Q4_1: weight bytes[rows][stride], each row cols/32 blocks of 20 bytes:
 *                fp16 d, fp16 m, 16 bytes qs; weight k of the block (k < 16) is qs[k] & 15,
 *                weight 16 + k is qs[k] >> 4, and W = q * d + m (llama.cpp's Q4_1 block). */
typedef struct {
    int32_t format, rows, cols, stride;
    const void *weight;
    const float *scale;
    const float *bias; /* NULL: no bias */
} Linear;

typedef struct {
    const float *weight, *bias; /* bias NULL for RMSNorm; weight NULL: no norm */
} Norm;

typedef struct {
    Norm norm1, norm2, q_norm, k_norm;
    Linear qkv, out, up, gate, down; /* gate.weight NULL unless SwiGLU */
} Layer;

typedef struct {
    int32_t n_layers, emb_dim, n_heads, n_kv_heads, head_dim, hidden_dim;
    int32_t norm_kind, mlp_kind, rope, sliding_window; /* sliding_window 0: none */
    float norm_eps;
    const Layer *layers;
    Norm final_norm;
    const float *rope_cos, *rope_sin; /* (context, head_dim), NULL without RoPE */
} Model;

int llmfs_abi_version(void) { return LLMFS_ABI_VERSION; }

const char *llmfs_instruction_set(void) { return LLMFS_AVX2 ? "AVX2+FMA" : "portable C"; }

/* How many threads the parallel loops use: PyTorch's setting, handed over by the caller
 * (torch.set_num_threads may have been called in another thread than the one decoding). */
static int threads = 1;

void llmfs_set_threads(int n) { threads = n > 0 ? n : 1; }

/* ---- scalar helpers ------------------------------------------------------------------------ */

static inline float f16_to_f32(uint16_t h) {
#if LLMFS_AVX2
    return _cvtsh_ss(h);
#else
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ffu, bits;
    if (exponent == 0) {
        float f = ldexpf((float)mantissa, -24); /* zero or subnormal */
        return sign ? -f : f;
    }
    if (exponent == 31) bits = sign | 0x7f800000u | (mantissa << 13);
    else bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
#endif
}

#if LLMFS_AVX2
static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

/* ---- dot products: one weight row with one activation row ----------------------------------- */

static float dot_f32(const float *w, const float *x, int n) {
    int j = 0;
    float sum = 0.0f;
#if LLMFS_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (; j + 32 <= n; j += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(x + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 8), _mm256_loadu_ps(x + j + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 16), _mm256_loadu_ps(x + j + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 24), _mm256_loadu_ps(x + j + 24), a3);
    }
    sum = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
    for (; j < n; j++) sum += w[j] * x[j];
    return sum;
}

static float dot_i8(const int8_t *q, const float *x, int n) {
    int j = 0;
    float sum = 0.0f;
#if LLMFS_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (; j + 32 <= n; j += 32) {
        __m128i lo = _mm_loadu_si128((const __m128i *)(q + j)), hi = _mm_loadu_si128((const __m128i *)(q + j + 16));
        a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), _mm256_loadu_ps(x + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(x + j + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), _mm256_loadu_ps(x + j + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(x + j + 24), a3);
    }
    sum = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
    for (; j < n; j++) sum += (float)q[j] * x[j];
    return sum;
}

/* The activations a Q4_1 matrix multiplies, prepared once per row of x: each block of 32 values
 * as int16 with its own scale (xq * xscale ~ x, to within 2**-16 of the block's largest |x|), and
 * the exact fp32 sum of the block (for the minimum's term). Integer products of the 4-bit weights
 * with 16-bit activations take half the instructions of converting every weight to float, and
 * lose far less than rounding the activations to bf16 would (8 bits). */
typedef struct {
    const int16_t *xq;
    const float *xscale, *xsum;
} BlockActivations;

static void prepare_blocks(const float *x, int cols, int16_t *xq, float *xscale, float *xsum) {
    for (int g = 0; g < cols / 32; g++) {
        const float *xb = x + (size_t)g * 32;
        float largest = 0.0f, sum = 0.0f;
        for (int k = 0; k < 32; k++) {
            float a = fabsf(xb[k]);
            if (a > largest) largest = a;
            sum += xb[k];
        }
        float scale = largest / 32767.0f, inverse = largest > 0.0f ? 32767.0f / largest : 0.0f;
        for (int k = 0; k < 32; k++) xq[g * 32 + k] = (int16_t)lrintf(xb[k] * inverse);
        xscale[g] = scale;
        xsum[g] = sum;
    }
}

/* sum_k W[k] x[k] over a row of Q4_1 blocks = sum_blocks d * xscale * (q . xq) + m * sum(x of the block). */
static float dot_q4_1(const uint8_t *row, BlockActivations a, int nblocks) {
    float minimum_terms = 0.0f, sum = 0.0f;
    int g = 0;
#if LLMFS_AVX2
    const __m128i low_nibbles = _mm_set1_epi8(0x0f);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; g + 2 <= nblocks; g += 2) {
        __m256 partial[2];
        for (int i = 0; i < 2; i++) {
            const uint8_t *block = row + (size_t)(g + i) * 20;
            uint16_t d16, m16;
            memcpy(&d16, block, 2);
            memcpy(&m16, block + 2, 2);
            __m128i qs = _mm_loadu_si128((const __m128i *)(block + 4));
            __m128i lo = _mm_and_si128(qs, low_nibbles), hi = _mm_and_si128(_mm_srli_epi16(qs, 4), low_nibbles);
            const __m256i *xq = (const __m256i *)(a.xq + (size_t)(g + i) * 32);
            __m256i dots = _mm256_add_epi32(_mm256_madd_epi16(_mm256_cvtepu8_epi16(lo), _mm256_loadu_si256(xq)),
                                            _mm256_madd_epi16(_mm256_cvtepu8_epi16(hi), _mm256_loadu_si256(xq + 1)));
            partial[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(dots), _mm256_set1_ps(_cvtsh_ss(d16) * a.xscale[g + i]));
            minimum_terms += _cvtsh_ss(m16) * a.xsum[g + i];
        }
        acc0 = _mm256_add_ps(acc0, partial[0]);
        acc1 = _mm256_add_ps(acc1, partial[1]);
    }
    sum = hsum256(_mm256_add_ps(acc0, acc1));
#endif
    for (; g < nblocks; g++) {
        const uint8_t *block = row + (size_t)g * 20;
        uint16_t d16, m16;
        memcpy(&d16, block, 2);
        memcpy(&m16, block + 2, 2);
        const int16_t *xq = a.xq + (size_t)g * 32;
        int32_t dot = 0;
        for (int k = 0; k < 16; k++) dot += (block[4 + k] & 15) * xq[k] + (block[4 + k] >> 4) * xq[16 + k];
        sum += f16_to_f32(d16) * a.xscale[g] * (float)dot;
        minimum_terms += f16_to_f32(m16) * a.xsum[g];
    }
    return sum + minimum_terms;
}

/* Row r of W as fp32 (cols floats). */
static void dequantize_row(const Linear *L, int r, float *out) {
    const char *base = (const char *)L->weight;
    if (L->format == FORMAT_F32) {
        memcpy(out, (const float *)base + (size_t)r * L->stride, L->cols * sizeof(float));
    } else if (L->format == FORMAT_INT8) {
        const int8_t *q = (const int8_t *)base + (size_t)r * L->stride;
        for (int j = 0; j < L->cols; j++) out[j] = (float)q[j] * L->scale[r];
    } else {
        const uint8_t *row = (const uint8_t *)base + (size_t)r * L->stride;
        for (int g = 0; g < L->cols / 32; g++) {
            const uint8_t *block = row + (size_t)g * 20;
            uint16_t d16, m16;
            memcpy(&d16, block, 2);
            memcpy(&m16, block + 2, 2);
            float d = f16_to_f32(d16), m = f16_to_f32(m16);
            for (int k = 0; k < 16; k++) {
                out[g * 32 + k] = (float)(block[4 + k] & 15) * d + m;
                out[g * 32 + 16 + k] = (float)(block[4 + k] >> 4) * d + m;
            }
        }
    }
}

/* Rows first .. first + count - 1 of W as floats (count, cols): fp32, or bf16 (rounded to the
 * nearest, ties to even) when `bf16` is set. For many activation rows at once (a prompt's
 * prefill) a float matrix product (BLAS) beats any matrix-vector loop; the caller converts a
 * large matrix a slice at a time into one reused buffer. */
void llmfs_dequantize_rows(const Linear *L, int first, int count, void *out, int bf16) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int r = 0; r < count; r++) {
        if (!bf16) {
            dequantize_row(L, first + r, (float *)out + (size_t)r * L->cols);
            continue;
        }
        float row[L->cols];
        uint16_t *target = (uint16_t *)out + (size_t)r * L->cols;
        dequantize_row(L, first + r, row);
        for (int j = 0; j < L->cols; j++) {
            uint32_t bits;
            memcpy(&bits, &row[j], sizeof bits);
            target[j] = (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
        }
    }
}

static float dot_row(const Linear *L, int r, const float *x, BlockActivations a) {
    const char *base = (const char *)L->weight;
    switch (L->format) {
    case FORMAT_F32:
        return dot_f32((const float *)base + (size_t)r * L->stride, x, L->cols);
    case FORMAT_INT8:
        return L->scale[r] * dot_i8((const int8_t *)base + (size_t)r * L->stride, x, L->cols);
    default:
        return dot_q4_1((const uint8_t *)base + (size_t)r * L->stride, a, L->cols / 32);
    }
}

/* Floats of scratch memory a product with `cols` inputs over B rows needs (block activations). */
static size_t activation_floats(int B, int cols) { return (size_t)B * (cols / 2 + 2 * (cols / 32) + 8); }

/* y (B, rows) = x (B, cols) W^T + bias, the rows shared out among the threads; a weight row is
 * read once for all B activation rows. Up to two matrices on the same x in one parallel loop
 * (the gate and up projections of SwiGLU). scratch: activation_floats(B, cols) floats. */
static void linear_pair(const Linear *L1, float *y1, const Linear *L2, float *y2, const float *x, int B, float *scratch) {
    const int cols = L1->cols, nblocks = cols / 32;
    int16_t *xq = (int16_t *)scratch;
    float *xscale = scratch + (size_t)B * cols / 2, *xsum = xscale + (size_t)B * nblocks;
    if (L1->format == FORMAT_Q4_1 || (L2 && L2->format == FORMAT_Q4_1))
        for (int b = 0; b < B; b++)
            prepare_blocks(x + (size_t)b * cols, cols, xq + (size_t)b * cols, xscale + (size_t)b * nblocks,
                           xsum + (size_t)b * nblocks);
    int rows1 = L1->rows, total = rows1 + (L2 ? L2->rows : 0);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int i = 0; i < total; i++) {
        const Linear *L = i < rows1 ? L1 : L2;
        float *y = i < rows1 ? y1 : y2;
        int r = i < rows1 ? i : i - rows1;
        if (B >= DEQUANTIZE_FROM_ROWS && L->format != FORMAT_F32) {
            float row[cols]; /* the weight row in fp32 once, then one dot product per activation row */
            dequantize_row(L, r, row);
            for (int b = 0; b < B; b++)
                y[(size_t)b * L->rows + r] = dot_f32(row, x + (size_t)b * cols, cols) + (L->bias ? L->bias[r] : 0.0f);
            continue;
        }
        for (int b = 0; b < B; b++) {
            BlockActivations a = {xq + (size_t)b * cols, xscale + (size_t)b * nblocks, xsum + (size_t)b * nblocks};
            float v = dot_row(L, r, x + (size_t)b * cols, a);
            if (L->bias) v += L->bias[r];
            y[(size_t)b * L->rows + r] = v;
        }
    }
}

/* The matrix product of one layer on its own (also what Int8Linear / Int4Linear use for a few rows). */
int64_t llmfs_linear_work_floats(int B, int cols) { return (int64_t)activation_floats(B, cols); }

void llmfs_linear(const Linear *L, const float *x, int B, float *y, float *scratch) {
    linear_pair(L, y, NULL, NULL, x, B, scratch);
}

/* ---- the pieces of a block ------------------------------------------------------------------- */

static void norm_row(const Norm *n, int kind, float eps, const float *x, float *y, int dim) {
    if (kind == NORM_RMS) {
        float squares = 0.0f;
        for (int j = 0; j < dim; j++) squares += x[j] * x[j];
        float inv = 1.0f / sqrtf(squares / dim + eps);
        for (int j = 0; j < dim; j++) y[j] = n->weight[j] * (x[j] * inv);
    } else {
        float mean = 0.0f, var = 0.0f;
        for (int j = 0; j < dim; j++) mean += x[j];
        mean /= dim;
        for (int j = 0; j < dim; j++) var += (x[j] - mean) * (x[j] - mean);
        float inv = 1.0f / sqrtf(var / dim + eps);
        for (int j = 0; j < dim; j++) y[j] = (x[j] - mean) * inv * n->weight[j] + n->bias[j];
    }
}

/* Rotate-half RoPE of one head vector at one position (model/rope.py: x * cos + rotate_half(x) * sin). */
static void rope_row(float *v, const float *cos, const float *sin, int head_dim) {
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        float a = v[i], b = v[i + half];
        v[i] = a * cos[i] - b * sin[i];
        v[i + half] = b * cos[i + half] + a * sin[i + half];
    }
}

static float gelu_tanh(float x) {
    return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

/* ---- one decoding step ---------------------------------------------------------------------- */

/* Floats of scratch memory one step needs (the caller allocates them). */
int64_t llmfs_decode_work_floats(const Model *m, int B, int max_len) {
    int64_t q_dim = (int64_t)m->n_heads * m->head_dim, kv_dim = (int64_t)m->n_kv_heads * m->head_dim;
    int64_t widest = m->hidden_dim > m->emb_dim ? m->hidden_dim : m->emb_dim; /* the widest input of a product */
    if (q_dim > widest) widest = q_dim;
    return (int64_t)B * (m->emb_dim            /* normed input */
                         + q_dim + 2 * kv_dim  /* queries, keys, values */
                         + q_dim               /* attention output */
                         + m->emb_dim          /* a projection's output */
                         + 2 * (int64_t)m->hidden_dim /* feed-forward */
                         + (int64_t)activation_floats(1, (int)widest) /* a product's prepared input */
                         + (int64_t)m->n_heads * max_len); /* attention scores */
}

/* x (B, emb_dim): the embedded new token of each row (positions already added for learned
 * positions); on return, the final-normed hidden states. positions (B,): each row's position
 * (RoPE). keys/values: the KV cache, (n_layers, B, n_kv_heads, max_len, head_dim) fp32; the new
 * token goes to column `length`, and row b attends to columns max(pad[b], window start) .. length.
 * pad (B,) or NULL. Returns 0, or -1 when `work` is too small. */
int llmfs_decode_step(const Model *m, float *x, int B, const int64_t *positions, float *keys, float *values,
                      int max_len, int length, const int64_t *pad, float *work, int64_t work_floats) {
    if (work_floats < llmfs_decode_work_floats(m, B, max_len) || length >= max_len) return -1;
    const int E = m->emb_dim, H = m->n_heads, Hkv = m->n_kv_heads, hd = m->head_dim, F = m->hidden_dim;
    const int q_dim = H * hd, kv_dim = Hkv * hd, qkv_dim = q_dim + 2 * kv_dim, group = H / Hkv;
    float *normed = work, *qkv = normed + (size_t)B * E, *context = qkv + (size_t)B * qkv_dim;
    float *projected = context + (size_t)B * q_dim, *ff1 = projected + (size_t)B * E, *ff2 = ff1 + (size_t)B * F;
    int widest = F > E ? F : E;
    if (q_dim > widest) widest = q_dim;
    float *xsum = ff2 + (size_t)B * F, *scores = xsum + activation_floats(B, widest);
    const float scale = 1.0f / sqrtf((float)hd);

    for (int l = 0; l < m->n_layers; l++) {
        const Layer *layer = &m->layers[l];
        /* attention: x + out(attend(rope(qkv(norm1(x))))) */
        for (int b = 0; b < B; b++) norm_row(&layer->norm1, m->norm_kind, m->norm_eps, x + (size_t)b * E, normed + (size_t)b * E, E);
        linear_pair(&layer->qkv, qkv, NULL, NULL, normed, B, xsum);
        for (int b = 0; b < B; b++) {
            float *row = qkv + (size_t)b * qkv_dim;
            for (int h = 0; h < H + Hkv; h++) { /* queries' heads, then keys' heads */
                float *v = row + (size_t)h * hd;
                const Norm *qk = h < H ? &layer->q_norm : &layer->k_norm;
                if (qk->weight) norm_row(qk, NORM_RMS, m->norm_eps, v, v, hd);
                if (m->rope) rope_row(v, m->rope_cos + (size_t)positions[b] * hd, m->rope_sin + (size_t)positions[b] * hd, hd);
            }
            for (int h = 0; h < Hkv; h++) { /* store the new key and value in column `length` */
                size_t at = ((((size_t)l * B + b) * Hkv + h) * max_len + length) * hd;
                memcpy(keys + at, row + q_dim + (size_t)h * hd, hd * sizeof(float));
                memcpy(values + at, row + q_dim + kv_dim + (size_t)h * hd, hd * sizeof(float));
            }
        }
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int bh = 0; bh < B * H; bh++) {
            int b = bh / H, h = bh % H, kv_head = h / group;
            int start = pad ? (int)pad[b] : 0;
            if (m->sliding_window > 0 && length - m->sliding_window + 1 > start) start = length - m->sliding_window + 1;
            if (start > length) start = length; /* the new token always sees itself */
            const float *q = qkv + (size_t)b * qkv_dim + (size_t)h * hd;
            size_t base = (((size_t)l * B + b) * Hkv + kv_head) * max_len;
            const float *K = keys + base * hd, *V = values + base * hd;
            float *s = scores + (size_t)bh * max_len, best = -INFINITY, total = 0.0f;
            for (int c = start; c <= length; c++) {
                s[c] = dot_f32(K + (size_t)c * hd, q, hd) * scale;
                if (s[c] > best) best = s[c];
            }
            for (int c = start; c <= length; c++) { s[c] = expf(s[c] - best); total += s[c]; }
            float *out = context + (size_t)b * q_dim + (size_t)h * hd;
            for (int i = 0; i < hd; i++) out[i] = 0.0f;
            for (int c = start; c <= length; c++) {
                const float *v = V + (size_t)c * hd;
                float p = s[c] / total;
                for (int i = 0; i < hd; i++) out[i] += p * v[i];
            }
        }
        linear_pair(&layer->out, projected, NULL, NULL, context, B, xsum);
        for (size_t i = 0; i < (size_t)B * E; i++) x[i] += projected[i];

        /* feed-forward: x + down(act(up(norm2(x)))) */
        for (int b = 0; b < B; b++) norm_row(&layer->norm2, m->norm_kind, m->norm_eps, x + (size_t)b * E, normed + (size_t)b * E, E);
        if (m->mlp_kind == MLP_SWIGLU) {
            linear_pair(&layer->gate, ff1, &layer->up, ff2, normed, B, xsum);
            for (size_t i = 0; i < (size_t)B * F; i++) ff1[i] = ff1[i] / (1.0f + expf(-ff1[i])) * ff2[i];
        } else {
            linear_pair(&layer->up, ff1, NULL, NULL, normed, B, xsum);
            for (size_t i = 0; i < (size_t)B * F; i++) {
                float u = ff1[i];
                ff1[i] = m->mlp_kind == MLP_GELU ? gelu_tanh(u) : (u > 0.0f ? u * u : 0.0f);
            }
        }
        linear_pair(&layer->down, projected, NULL, NULL, ff1, B, xsum);
        for (size_t i = 0; i < (size_t)B * E; i++) x[i] += projected[i];
    }
    for (int b = 0; b < B; b++) {
        norm_row(&m->final_norm, m->norm_kind, m->norm_eps, x + (size_t)b * E, normed, E);
        memcpy(x + (size_t)b * E, normed, E * sizeof(float));
    }
    return 0;
}

/* ---- the pieces of a prefill (many tokens per row) --------------------------------------------
 * A prompt's matrix products are compute-bound and go to BLAS (in Python); what lies between them
 * is done here, one pass over all tokens per piece, instead of a dozen PyTorch operations each. */

/* y = norm(x) for `rows` rows of `dim`; with `delta`, first x += delta (the residual add). */
void llmfs_add_norm_rows(const Model *m, const Norm *n, float *x, const float *delta, float *y, int rows) {
    const int dim = m->emb_dim;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * dim;
        if (delta)
            for (int j = 0; j < dim; j++) xr[j] += delta[(size_t)r * dim + j];
        norm_row(n, m->norm_kind, m->norm_eps, xr, y + (size_t)r * dim, dim);
    }
}

/* qkv (B * T, q_dim + 2 kv_dim) of layer l: QK-norm and RoPE of the queries and keys in place (at
 * positions (B * T,)), and the keys and values stored in the cache's columns length .. length + T - 1. */
void llmfs_rope_and_store(const Model *m, int l, float *qkv, int B, int T, const int64_t *positions,
                          float *keys, float *values, int max_len, int length) {
    const Layer *layer = &m->layers[l];
    const int H = m->n_heads, Hkv = m->n_kv_heads, hd = m->head_dim;
    const int q_dim = H * hd, kv_dim = Hkv * hd, qkv_dim = q_dim + 2 * kv_dim;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int bt = 0; bt < B * T; bt++) {
        int b = bt / T, t = bt % T;
        float *row = qkv + (size_t)bt * qkv_dim;
        for (int h = 0; h < H + Hkv; h++) {
            float *v = row + (size_t)h * hd;
            const Norm *qk = h < H ? &layer->q_norm : &layer->k_norm;
            if (qk->weight) norm_row(qk, NORM_RMS, m->norm_eps, v, v, hd);
            if (m->rope) rope_row(v, m->rope_cos + (size_t)positions[bt] * hd, m->rope_sin + (size_t)positions[bt] * hd, hd);
        }
        for (int h = 0; h < Hkv; h++) {
            size_t at = ((((size_t)l * B + b) * Hkv + h) * max_len + length + t) * hd;
            memcpy(keys + at, row + q_dim + (size_t)h * hd, hd * sizeof(float));
            memcpy(values + at, row + q_dim + kv_dim + (size_t)h * hd, hd * sizeof(float));
        }
    }
}

/* The feed-forward's activation in place: a = silu(a) * up (SwiGLU), or gelu(a), or relu(a)^2. */
void llmfs_activation(const Model *m, float *a, const float *up, int64_t n) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < n; i++) {
        float u = a[i];
        if (m->mlp_kind == MLP_SWIGLU) a[i] = u / (1.0f + expf(-u)) * up[i];
        else if (m->mlp_kind == MLP_GELU) a[i] = gelu_tanh(u);
        else a[i] = u > 0.0f ? u * u : 0.0f;
    }
}
