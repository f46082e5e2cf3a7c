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
