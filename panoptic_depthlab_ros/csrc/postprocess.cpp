// Per-pixel passes of the CPU post-processing, compiled (panoptic_depthlab_ros/native.py loads this
// library with ctypes; without it the same results come from torch ops, kernels.py / segment_stats.py).
//
// Why compiled: each pass reads every pixel once and does a few operations per pixel; as torch ops
// the same work takes several passes with temporaries (docs/performance.md#post-processing).
// Plain C ABI and raw pointers: no Python or torch headers, so it builds in seconds with any C++17
// compiler (setup.py for pip, CMakeLists.txt for colcon, the same flags). A function whose results
// must round exactly as torch's ops do is marked PDL_EXACT: no fused multiply-add there.
//
// Every function works on a range of rows, so that Python threads (parallel.py; ctypes
// releases the GIL) run parts side by side; results never depend on how the work is split.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// One build for every x86-64 CPU: the loader picks the AVX2 + FMA copy where the CPU has them.
#define PDL_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define PDL_CLONES
#endif
#if defined(__GNUC__) && !defined(__clang__)
#define PDL_EXACT __attribute__((optimize("fp-contract=off")))
#else
#define PDL_EXACT  // clang contracts only within one expression, and only with -ffp-contract=on
#endif

namespace {

// exp(x) for x <= 0 (a logit minus its pixel's maximum): Cephes' range reduction and polynomial,
// within 2 ulp of the exact value; below -87.3 it gives exp(-87.3) (~1e-38, a probability of zero
// for every purpose). Branch-free, so that the loops over it vectorise.
inline float exp_nonpositive(float x) {
    x = std::max(x, -87.3f);
    const float big = x * 1.44269504088896341f + 12582912.0f;  // 1.5 * 2^23: round(x / ln 2) in the low bits
    const float n = big - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits;
    std::memcpy(&bits, &big, sizeof bits);
    const int32_t scale_bits = (bits + 127) << 23;  // 2^n: n + 127 in the exponent field
    float scale;
    std::memcpy(&scale, &scale_bits, sizeof scale);
    return p * scale;
}

constexpr int64_t kBlock = 256;  // pixels per block of a row: the block's running maxima stay in L1

}  // namespace

extern "C" {

// Rows [r0, r1) of scores x [C, H, W] (float32; element (c, y, i) at x[c * channel_stride + y *
// row_stride + i]: a cropped view reads in place): label [H, W] = the first class with the maximum
// score (torch.argmax: the first NaN if any), probability [H, W] (or null) = its softmax
// probability, 1 / sum_k exp(x_k - max) (NaN where a score is NaN). Outputs contiguous.
PDL_CLONES
void pdl_argmax_probability(const float* x, int64_t num_classes, int64_t channel_stride, int64_t row_stride,
                            int64_t width, int64_t r0, int64_t r1, uint8_t* label, float* probability) {
    float top[kBlock], total[kBlock];
    int32_t best[kBlock];
    for (int64_t y = r0; y < r1; ++y) {
        for (int64_t b0 = 0; b0 < width; b0 += kBlock) {
            const int64_t n = std::min(kBlock, width - b0);
            const float* x0 = x + y * row_stride + b0;
            const int64_t out = y * width + b0;
            int32_t nan = 0;
            for (int64_t i = 0; i < n; ++i) {
                top[i] = x0[i];
                best[i] = 0;
                nan |= x0[i] != x0[i];
            }
            for (int64_t c = 1; c < num_classes; ++c) {
                const float* xc = x0 + c * channel_stride;
                for (int64_t i = 0; i < n; ++i) {
                    const float v = xc[i];
                    const bool greater = v > top[i];
                    nan |= v != v;
                    top[i] = greater ? v : top[i];
                    best[i] = greater ? static_cast<int32_t>(c) : best[i];
                }
            }
            for (int64_t i = 0; i < n; ++i) label[out + i] = static_cast<uint8_t>(best[i]);
            if (probability) {
                for (int64_t i = 0; i < n; ++i) total[i] = 0.0f;
                for (int64_t c = 0; c < num_classes; ++c) {
                    const float* xc = x0 + c * channel_stride;
                    for (int64_t i = 0; i < n; ++i) total[i] += exp_nonpositive(xc[i] - top[i]);
                }
                for (int64_t i = 0; i < n; ++i) probability[out + i] = 1.0f / total[i];
            }
            if (nan) {  // rare: the first NaN of each such pixel is its label, its probability NaN
                for (int64_t i = 0; i < n; ++i) {
                    for (int64_t c = 0; c < num_classes; ++c) {
                        const float v = x0[c * channel_stride + i];
                        if (v != v) {
                            label[out + i] = static_cast<uint8_t>(c);
                            if (probability) probability[out + i] = v;
                            break;
                        }
                    }
                }
            }
        }
    }
}

}  // extern "C"
