/* The weight gradient of a depthwise convolution over channels-last tensors (oqatnets._lsq_kernel).
 *
 * oneDNN computes it for 5x5 and 7x7 kernels 10-35x slower than the forward pass on the same tensors
 * (docs/BENCHMARKS.md §1); this is the direct sum
 *     gw[dy][dx][c] = sum over n, oy, ox of x[n][oy*s + dy - p][ox*s + dx - p][c] * g[n][oy][ox][c]
 * (taps that fall on the zero padding add nothing), vectorised over the contiguous channels. Each
 * sample sums into partial[n] in a fixed order and the samples are added in order: the same value
 * on any number of threads.
 */
#include <stdint.h>

#define DEFINE_DEPTHWISE(T, SUFFIX)                                                                         \
void depthwise_weight_grad_##SUFFIX(const T *restrict x, const T *restrict g, T *restrict partial,         \
                                    T *restrict gw, int64_t n, int64_t h, int64_t w, int64_t c,             \
                                    int64_t ho, int64_t wo, int64_t k, int64_t s, int64_t p, int threads) { \
    (void)threads; /* unused when built without OpenMP */                                                   \
    int64_t taps = k * k * c;                                                                               \
    _Pragma("omp parallel for num_threads(threads) schedule(static)")                                      \
    for (int64_t b = 0; b < n; ++b) {                                                                       \
        T *restrict acc = partial + b * taps;                                                               \
        for (int64_t j = 0; j < taps; ++j) acc[j] = 0;                                                      \
        for (int64_t oy = 0; oy < ho; ++oy) {                                                               \
            for (int64_t dy = 0; dy < k; ++dy) {                                                            \
                int64_t iy = oy * s + dy - p;                                                               \
                if (iy < 0 || iy >= h) continue;                                                            \
                for (int64_t ox = 0; ox < wo; ++ox) {                                                       \
                    const T *restrict gr = g + ((b * ho + oy) * wo + ox) * c;                               \
                    for (int64_t dx = 0; dx < k; ++dx) {                                                    \
                        int64_t ix = ox * s + dx - p;                                                       \
                        if (ix < 0 || ix >= w) continue;                                                    \
                        const T *restrict xr = x + ((b * h + iy) * w + ix) * c;                             \
                        T *restrict a = acc + (dy * k + dx) * c;                                            \
                        _Pragma("omp simd")                                                                 \
                        for (int64_t j = 0; j < c; ++j) a[j] += xr[j] * gr[j];                              \
                    }                                                                                       \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
    }                                                                                                       \
    _Pragma("omp parallel for num_threads(threads) schedule(static)")                                      \
    for (int64_t j = 0; j < taps; ++j) {                                                                    \
        T sum = 0;                                                                                          \
        for (int64_t b = 0; b < n; ++b) sum += partial[b * taps + j];                                       \
        gw[j] = sum;                                                                                        \
    }                                                                                                       \
}

DEFINE_DEPTHWISE(float, f32)
DEFINE_DEPTHWISE(double, f64)
