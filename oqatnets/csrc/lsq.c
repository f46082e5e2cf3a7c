/* LSQ fake quantization, forward and backward, one pass each over a dense buffer (oqatnets._lsq_kernel).
 *
 * The same operations as oqatnets.quant._LSQ in the same order, so the forward and the input
 * gradient are bit-identical to eager PyTorch: v = x / s, clamp to [lo, hi] (NaN kept), round half
 * to even (nearbyint under the default rounding mode), times s. "inside" is the strict interior, as
 * torch.ops.aten.hardtanh_backward has it (NaN counts as outside, as in its vectorised path).
 *
 * The step's gradient sum(g * (round(clamp(v)) - v * inside)) is summed per block of BLOCK elements
 * into partial[], and the blocks in order in double: the same value on any number of threads.
 *
 * The lsq_hardswish_* variants quantize hardswish(x) without writing it: the activation is
 * computed in the same pass with torch's CPU formulas (forward x * min(max(x + 3, 0), 6) / 6,
 * backward blend(blend(g * (x / 3 + 1/2), g, x >= 3), 0, x <= -3) as its vectorised kernel has
 * them), so the output and the gradient with respect to x equal F.hardswish followed by LSQ.
 *
 * The lsq_scaled_* variants quantize x * gate[n, c] (a squeeze-excite gate, one factor per image and
 * channel of an (N, C, H, W) tensor in channels-last or NCHW memory order) without writing the
 * product: the output and the gradient with respect to x equal x * gate followed by LSQ; the gate's
 * gradient sum over H, W of g * x is summed in double, each image (or plane) by one thread in
 * order, and the step's gradient per image (or plane), so both are the same on any number of threads.
 */
#include <math.h>
#include <stdint.h>

#define BLOCK 4096
#define PARALLEL_MIN 65536 /* below this, a parallel region costs more than it saves */

#define IDENTITY(T, x) (x)
#define IDENTITY_GRAD(T, g, x) (g)
#define HARDSWISH(T, x) ((x) * HS_CLAMP(T, (x) + (T)3) / (T)6)
#define HS_CLAMP(T, t) ((t) < (T)0 ? (T)0 : ((t) > (T)6 ? (T)6 : (t)))
#define HARDSWISH_GRAD(T, g, x)                                                                            \
    ((x) <= (T)-3 ? (T)0 : ((x) >= (T)3 ? (g) : (g) * ((x) / (T)3 + (T)0.5)))

#define DEFINE_LSQ(NAME, T, SUFFIX, ROUND, ACT, ACT_GRAD)                                                  \
void NAME##_forward_##SUFFIX(const T *restrict x, T *restrict out, int64_t n, T s, T lo, T hi, int threads) { \
    (void)threads; /* unused when built without OpenMP */                                                   \
    _Pragma("omp parallel for simd num_threads(threads) schedule(static) if(n >= PARALLEL_MIN)")           \
    for (int64_t i = 0; i < n; ++i) {                                                                       \
        T v = ACT(T, x[i]) / s;                                                                             \
        v = v < lo ? lo : (v > hi ? hi : v);                                                                \
        out[i] = ROUND(v) * s;                                                                              \
    }                                                                                                       \
}                                                                                                           \
                                                                                                            \
double NAME##_backward_##SUFFIX(const T *restrict g, const T *restrict x, T *restrict gx,                  \
                                double *restrict partial, int64_t n, T s, T lo, T hi, int threads) {        \
    (void)threads;                                                                                          \
    int64_t blocks = (n + BLOCK - 1) / BLOCK;                                                               \
    _Pragma("omp parallel for num_threads(threads) schedule(static) if(n >= PARALLEL_MIN)")                \
    for (int64_t b = 0; b < blocks; ++b) {                                                                  \
        int64_t end = (b + 1) * BLOCK < n ? (b + 1) * BLOCK : n;                                            \
        T acc = 0;                                                                                          \
        _Pragma("omp simd reduction(+:acc)")                                                                \
        for (int64_t i = b * BLOCK; i < end; ++i) {                                                         \
            T xi = x[i];                                                                                    \
            T v = ACT(T, xi) / s;                                                                           \
            T c = v < lo ? lo : (v > hi ? hi : v);                                                          \
            int inside = (v > lo) & (v < hi);                                                               \
            T ga = inside ? g[i] : (T)0;                                                                    \
            gx[i] = ACT_GRAD(T, ga, xi);                                                                    \
            acc += g[i] * (ROUND(c) - (inside ? v : (T)0));                                                 \
        }                                                                                                   \
        partial[b] = (double)acc;                                                                           \
    }                                                                                                       \
    double total = 0.0;                                                                                     \
    for (int64_t b = 0; b < blocks; ++b) {                                                                  \
        total += partial[b];                                                                                \
    }                                                                                                       \
    return total;                                                                                           \
}

DEFINE_LSQ(lsq, float, f32, nearbyintf, IDENTITY, IDENTITY_GRAD)
DEFINE_LSQ(lsq, double, f64, nearbyint, IDENTITY, IDENTITY_GRAD)
DEFINE_LSQ(lsq_hardswish, float, f32, nearbyintf, HARDSWISH, HARDSWISH_GRAD)
DEFINE_LSQ(lsq_hardswish, double, f64, nearbyint, HARDSWISH, HARDSWISH_GRAD)

/* The gate's gradient is summed in T over CHUNK values of a plane (NCHW) or ROWS rows (channels-last), and
 * those sums in double: mixing the types in one loop would keep the compiler from vectorising it. */
#define CHUNK 1024
#define ROWS 64

#define DEFINE_LSQ_SCALED(T, SUFFIX, ROUND)                                                                \
/* One channels-last row: `len` channels, each with its own gate value; adds g * x to gsum[c]. */          \
static inline T scaled_row_##SUFFIX(const T *restrict x, const T *restrict g, const T *restrict gate,      \
                                    T *restrict gx, T *restrict gsum, int64_t len, T s, T lo, T hi) {       \
    T acc = 0;                                                                                              \
    _Pragma("omp simd reduction(+:acc)")                                                                    \
    for (int64_t c = 0; c < len; ++c) {                                                                     \
        T xi = x[c];                                                                                        \
        T v = xi * gate[c] / s;                                                                             \
        T q = v < lo ? lo : (v > hi ? hi : v);                                                              \
        int inside = (v > lo) & (v < hi);                                                                   \
        T ga = inside ? g[c] : (T)0;                                                                        \
        gx[c] = ga * gate[c];                                                                               \
        gsum[c] += ga * xi;                                                                                 \
        acc += g[c] * (ROUND(q) - (inside ? v : (T)0));                                                     \
    }                                                                                                       \
    return acc;                                                                                             \
}                                                                                                           \
                                                                                                            \
/* Part of one NCHW plane: `len` values sharing the gate value `gate`; returns the step sum, adds the       \
 * gate's to *gsum. */                                                                                      \
static inline T scaled_span_##SUFFIX(const T *restrict x, const T *restrict g, T gate, T *restrict gx,     \
                                     T *restrict gsum, int64_t len, T s, T lo, T hi) {                      \
    T acc = 0, gs = 0;                                                                                      \
    _Pragma("omp simd reduction(+:acc, gs)")                                                                \
    for (int64_t i = 0; i < len; ++i) {                                                                     \
        T xi = x[i];                                                                                        \
        T v = xi * gate / s;                                                                                \
        T q = v < lo ? lo : (v > hi ? hi : v);                                                              \
        int inside = (v > lo) & (v < hi);                                                                   \
        T ga = inside ? g[i] : (T)0;                                                                        \
        gx[i] = ga * gate;                                                                                  \
        gs += ga * xi;                                                                                      \
        acc += g[i] * (ROUND(q) - (inside ? v : (T)0));                                                     \
    }                                                                                                       \
    *gsum = gs;                                                                                             \
    return acc;                                                                                             \
}                                                                                                           \
                                                                                                            \
static inline void scaled_values_##SUFFIX(const T *restrict x, T gate, T *restrict out, int64_t len,       \
                                          T s, T lo, T hi) {                                                \
    _Pragma("omp simd")                                                                                     \
    for (int64_t i = 0; i < len; ++i) {                                                                     \
        T v = x[i] * gate / s;                                                                              \
        v = v < lo ? lo : (v > hi ? hi : v);                                                                \
        out[i] = ROUND(v) * s;                                                                              \
    }                                                                                                       \
}                                                                                                           \
                                                                                                            \
static inline void scaled_row_values_##SUFFIX(const T *restrict x, const T *restrict gate, T *restrict out, \
                                              int64_t len, T s, T lo, T hi) {                               \
    _Pragma("omp simd")                                                                                     \
    for (int64_t c = 0; c < len; ++c) {                                                                     \
        T v = x[c] * gate[c] / s;                                                                           \
        v = v < lo ? lo : (v > hi ? hi : v);                                                                \
        out[c] = ROUND(v) * s;                                                                              \
    }                                                                                                       \
}                                                                                                           \
                                                                                                            \
void lsq_scaled_forward_##SUFFIX(const T *restrict x, const T *restrict gate, T *restrict out,              \
                                 int64_t images, int64_t channels, int64_t plane, int channels_last,        \
                                 T s, T lo, T hi, int threads) {                                            \
    (void)threads;                                                                                          \
    int64_t n = images * channels * plane;                                                                  \
    if (channels_last) { /* rows of `channels` values, one gate row per image */                            \
        _Pragma("omp parallel for num_threads(threads) schedule(static) if(n >= PARALLEL_MIN)")            \
        for (int64_t m = 0; m < images; ++m) {                                                              \
            for (int64_t at = m * plane * channels; at < (m + 1) * plane * channels; at += channels) {      \
                scaled_row_values_##SUFFIX(x + at, gate + m * channels, out + at, channels, s, lo, hi);     \
            }                                                                                               \
        }                                                                                                   \
    } else { /* planes of `plane` values, one gate value per plane */                                       \
        _Pragma("omp parallel for num_threads(threads) schedule(static) if(n >= PARALLEL_MIN)")            \
        for (int64_t p = 0; p < images * channels; ++p) {                                                   \
            scaled_values_##SUFFIX(x + p * plane, gate[p], out + p * plane, plane, s, lo, hi);              \
        }                                                                                                   \
    }                                                                                                       \
}                                                                                                           \
                                                                                                            \
/* gsum: images * channels doubles, the gate's gradient; scratch: images * channels values of T;           \
 * partial: images (channels-last) or images * channels (NCHW) doubles. Returns the step's gradient sum. */ \
double lsq_scaled_backward_##SUFFIX(const T *restrict g, const T *restrict x, const T *restrict gate,       \
                                    T *restrict gx, double *restrict gsum, T *restrict scratch,             \
                                    double *restrict partial,                                               \
                                    int64_t images, int64_t channels, int64_t plane, int channels_last,     \
                                    T s, T lo, T hi, int threads) {                                         \
    (void)threads;                                                                                          \
    int64_t n = images * channels * plane;                                                                  \
    int64_t parts = channels_last ? images : images * channels;                                             \
    if (channels_last) { /* one image per thread at a time: its rows in order */                            \
        _Pragma("omp parallel for num_threads(threads) schedule(static) if(n >= PARALLEL_MIN)")            \
        for (int64_t m = 0; m < images; ++m) {                                                              \
            double *restrict sums = gsum + m * channels;                                                    \
            T *restrict part = scratch + m * channels;                                                      \
            for (int64_t c = 0; c < channels; ++c) {                                                        \
                sums[c] = 0.0;                                                                              \
            }                                                                                               \
            double total = 0.0;                                                                             \
            for (int64_t first = m * plane; first < (m + 1) * plane; first += ROWS) {                       \
                int64_t last = first + ROWS < (m + 1) * plane ? first + ROWS : (m + 1) * plane;             \
                for (int64_t c = 0; c < channels; ++c) {                                                    \
                    part[c] = 0;                                                                            \
                }                                                                                           \
                for (int64_t r = first; r < last; ++r) {                                                    \
                    int64_t at = r * channels;                                                              \
                    total += (double)scaled_row_##SUFFIX(x + at, g + at, gate + m * channels, gx + at,      \
                                                         part, channels, s, lo, hi);                        \
                }                                                                                           \
                for (int64_t c = 0; c < channels; ++c) {                                                    \
                    sums[c] += (double)part[c];                                                             \
                }                                                                                           \
            }                                                                                               \
            partial[m] = total;                                                                             \
        }                                                                                                   \
    } else { /* one plane per thread at a time, in chunks */                                                \
        _Pragma("omp parallel for num_threads(threads) schedule(static) if(n >= PARALLEL_MIN)")            \
        for (int64_t p = 0; p < images * channels; ++p) {                                                   \
            double total = 0.0, sums = 0.0;                                                                 \
            for (int64_t at = p * plane; at < (p + 1) * plane; at += CHUNK) {                               \
                int64_t len = (p + 1) * plane - at < CHUNK ? (p + 1) * plane - at : CHUNK;                  \
                T chunk;                                                                                    \
                total += (double)scaled_span_##SUFFIX(x + at, g + at, gate[p], gx + at, &chunk, len,        \
                                                      s, lo, hi);                                           \
                sums += (double)chunk;                                                                      \
            }                                                                                               \
            gsum[p] = sums;                                                                                 \
            partial[p] = total;                                                                             \
        }                                                                                                   \
    }                                                                                                       \
    double total = 0.0;                                                                                     \
    for (int64_t b = 0; b < parts; ++b) {                                                                   \
        total += partial[b];                                                                                \
    }                                                                                                       \
    return total;                                                                                           \
}

DEFINE_LSQ_SCALED(float, f32, nearbyintf)
DEFINE_LSQ_SCALED(double, f64, nearbyint)
