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
#define PDL_EXACT  // clang: a pragma inside the function (it contracts within one expression by default)
#endif

namespace {

// exp(x) for x <= 0 (a logit minus its pixel's maximum): Cephes' range reduction and polynomial,
// within 1 ulp of the exact value (measured over [-87, 0]); below -87.3 it gives exp(-87.3)
// (~1e-38, a probability of zero for every purpose). Branch-free, so that the loops over it vectorise.
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

namespace {

// Sum of ranks [lo, hi) of the sorted a[0, c).
double sorted_sum(const float* a, int64_t lo, int64_t hi) {
    double sum = 0.0;
    for (int64_t i = lo; i < hi; ++i) sum += a[i];
    return sum;
}

// Order statistics of few values: partial sorts (std::nth_element) in place.
void order_small(float* a, int64_t c, int64_t cut, double* median, double* trimmed) {
    const int64_t m = (c - 1) / 2;
    std::nth_element(a, a + m, a + c);
    *median = a[m];
    if (cut > 0) {  // ranks [cut, c - cut) into place: those below go left, those above right
        std::nth_element(a, a + cut, a + c);
        std::nth_element(a + cut, a + (c - cut), a + c);
    }
    *trimmed = sorted_sum(a, cut, c - cut) / static_cast<double>(c - 2 * cut);
}

// Order statistics of many values (positive and finite: their bit patterns order like them):
// a histogram of the leading bits locates the bucket of each wanted rank, whose sums give the
// trimmed mean's whole buckets; only the values of the (up to three) buckets holding a wanted rank
// are sorted. Three streaming passes instead of partial sorts of the whole segment.
void order_large(const float* a, int64_t c, int64_t cut, double* median, double* trimmed) {
    constexpr int64_t kBuckets = 4096;
    uint32_t lo = UINT32_MAX, hi = 0;
    for (int64_t i = 0; i < c; ++i) {
        uint32_t b;
        std::memcpy(&b, a + i, 4);
        lo = std::min(lo, b);
        hi = std::max(hi, b);
    }
    int shift = 0;
    while ((hi >> shift) - (lo >> shift) + 1 > static_cast<uint32_t>(kBuckets)) ++shift;
    const uint32_t base = lo >> shift;
    std::vector<int64_t> count(kBuckets, 0);
    std::vector<double> sum(kBuckets, 0.0);
    for (int64_t i = 0; i < c; ++i) {
        uint32_t b;
        std::memcpy(&b, a + i, 4);
        const uint32_t k = (b >> shift) - base;
        count[k] += 1;
        sum[k] += a[i];
    }
    // The bucket of a rank, and the ranks before that bucket.
    auto locate = [&](int64_t rank, int64_t* before) {
        int64_t seen = 0, k = 0;
        while (seen + count[k] <= rank) seen += count[k++];
        *before = seen;
        return k;
    };
    int64_t before_m, before_lo, before_hi;
    const int64_t m = (c - 1) / 2;
    const int64_t k_m = locate(m, &before_m), k_lo = locate(cut, &before_lo), k_hi = locate(c - cut - 1, &before_hi);
    // The values of the wanted buckets, each collected and sorted once (the median's bucket is
    // often the trimmed range's first or last).
    const bool own_m = k_m != k_lo && k_m != k_hi;
    std::vector<float> in_m, in_lo, in_hi;
    for (int64_t i = 0; i < c; ++i) {
        uint32_t b;
        std::memcpy(&b, a + i, 4);
        const int64_t k = static_cast<int64_t>((b >> shift) - base);
        if (own_m && k == k_m) in_m.push_back(a[i]);
        if (k == k_lo) in_lo.push_back(a[i]);
        if (k == k_hi && k_hi != k_lo) in_hi.push_back(a[i]);
    }
    std::sort(in_m.begin(), in_m.end());
    std::sort(in_lo.begin(), in_lo.end());
    std::sort(in_hi.begin(), in_hi.end());
    const std::vector<float>& bucket_m = k_m == k_lo ? in_lo : (k_m == k_hi ? in_hi : in_m);
    *median = bucket_m[m - before_m];
    const int64_t end = c - cut;  // ranks [cut, end)
    double total;
    if (k_lo == k_hi) {
        total = sorted_sum(in_lo.data(), cut - before_lo, end - before_lo);
    } else {
        total = sorted_sum(in_lo.data(), cut - before_lo, static_cast<int64_t>(in_lo.size()));
        for (int64_t k = k_lo + 1; k < k_hi; ++k) total += sum[k];
        total += sorted_sum(in_hi.data(), 0, end - before_hi);
    }
    *trimmed = total / static_cast<double>(end - cut);
}

}  // namespace

extern "C" {

// What native.py checks before it uses this library: a build of older sources is refused, not called.
int64_t pdl_interface_version() { return 1; }

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

// Per-segment sums over rows [r0, r1) of seg [H, W] (int32 segment index; n and above: no segment)
// and the depth d [H, W] (float32), for one part of the image (the caller adds the parts in order).
// A depth counts where it is positive and finite and counted [H, W] (bool bytes, or null) marks it
// (the eroded segments); probability [H, W]
// (float32, or null) is summed over whole segments. Outputs, zeroed here, n entries each:
// extent [7n] int64 (area, y_min, y_max, x_min, x_max, sum y, sum x; an empty segment: 0, H, -1, W,
// -1, 0, 0), count [n] int64, moments [4n] double (sums of z, z^2, u z, v z), probability_sum [n].
void pdl_segment_sums(const int32_t* seg, const float* d, const uint8_t* counted, const float* probability,
                      int64_t height, int64_t width, int64_t r0, int64_t r1, int64_t n, int64_t* extent,
                      int64_t* count, double* moments, double* probability_sum) {
    int64_t *area = extent, *y_min = extent + n, *y_max = extent + 2 * n, *x_min = extent + 3 * n;
    int64_t *x_max = extent + 4 * n, *sum_y = extent + 5 * n, *sum_x = extent + 6 * n;
    double *sum_z = moments, *sum_zz = moments + n, *sum_uz = moments + 2 * n, *sum_vz = moments + 3 * n;
    for (int64_t k = 0; k < n; ++k) {
        area[k] = sum_y[k] = sum_x[k] = count[k] = 0;
        y_min[k] = height;
        x_min[k] = width;
        y_max[k] = x_max[k] = -1;
        sum_z[k] = sum_zz[k] = sum_uz[k] = sum_vz[k] = probability_sum[k] = 0.0;
    }
    // A segment's pixels come in runs along a row: each run is summed in registers, then added once.
    for (int64_t y = r0; y < r1; ++y) {
        const int32_t* s = seg + y * width;
        const float* z_row = d + y * width;
        const uint8_t* c_row = counted ? counted + y * width : nullptr;
        const float* p_row = probability ? probability + y * width : nullptr;
        int64_t x0 = 0;
        while (x0 < width) {
            const int32_t k = s[x0];
            int64_t x1 = x0 + 1;
            while (x1 < width && s[x1] == k) ++x1;
            if (k >= 0 && k < n) {
                const int64_t length = x1 - x0;
                area[k] += length;
                sum_y[k] += y * length;
                sum_x[k] += (x0 + x1 - 1) * length / 2;
                y_min[k] = std::min(y_min[k], y);
                y_max[k] = y;  // rows come in order
                x_min[k] = std::min(x_min[k], x0);
                x_max[k] = std::max(x_max[k], x1 - 1);
                if (p_row) {
                    double p = 0.0;
                    for (int64_t x = x0; x < x1; ++x) p += p_row[x];
                    probability_sum[k] += p;
                }
                int64_t c = 0;
                double z1 = 0.0, z2 = 0.0, zu = 0.0;
                for (int64_t x = x0; x < x1; ++x) {
                    if ((c_row && !c_row[x]) || !(z_row[x] > 0.0f && z_row[x] < INFINITY)) continue;
                    const double z = z_row[x];
                    c += 1;
                    z1 += z;
                    z2 += z * z;
                    zu += z * static_cast<double>(x);
                }
                count[k] += c;
                sum_z[k] += z1;
                sum_zz[k] += z2;
                sum_uz[k] += zu;
                sum_vz[k] += z1 * static_cast<double>(y);
            }
            x0 = x1;
        }
    }
}

// The depths of rows [r0, r1) that count (as in pdl_segment_sums), grouped by segment: each goes to values[next[k]++], next [n]
// holding where this part's depths of segment k start (so parts fill disjoint places).
void pdl_segment_gather(const int32_t* seg, const float* d, const uint8_t* counted, int64_t width, int64_t r0,
                        int64_t r1, int64_t n, int64_t* next, float* values) {
    for (int64_t p = r0 * width; p < r1 * width; ++p) {
        const int32_t k = seg[p];
        if (k < 0 || k >= n || (counted && !counted[p]) || !(d[p] > 0.0f && d[p] < INFINITY)) continue;
        values[next[k]++] = d[p];
    }
}

// Segments [k0, k1): minimum, lower median and trimmed mean (the mean of the ranks
// [floor(count * trim), count - floor(count * trim))) of the positive, finite values[start[k],
// start[k + 1]) (reordered here); NaN for a segment without values.
void pdl_segment_order(float* values, const int64_t* start, int64_t k0, int64_t k1, double trim, double* minimum,
                       double* median, double* trimmed) {
    for (int64_t k = k0; k < k1; ++k) {
        float* a = values + start[k];
        const int64_t c = start[k + 1] - start[k];
        if (c == 0) {
            minimum[k] = median[k] = trimmed[k] = NAN;
            continue;
        }
        minimum[k] = *std::min_element(a, a + c);
        const int64_t cut = static_cast<int64_t>(std::floor(static_cast<double>(c) * trim));
        if (c > 8192) {
            order_large(a, c, cut, median + k, trimmed + k);
        } else {
            order_small(a, c, cut, median + k, trimmed + k);
        }
    }
}

// Pixels index[i0, i1) (flat indices y * width + x) of the offsets offset [2, H, W] (float32; element
// (c, y, x) at offset[c * channel_stride + y * row_stride + x]) go to the nearest of the centers
// [K, 2] (float32 y, x) from where they point, (y + dy, x + dx): member[i] = its index. The squared
// distances in float32 as torch computes them (no fused multiply-add); ties and NaN go to the
// lowest index, as torch.argmin over the distances (a NaN location: center 0).
PDL_CLONES PDL_EXACT
void pdl_nearest_center(const float* offset, int64_t channel_stride, int64_t row_stride, int64_t width,
                        const int64_t* index, int64_t i0, int64_t i1, const float* centers, int64_t num_centers,
                        int64_t* member) {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
    float loc_y[kBlock], loc_x[kBlock], best_d[kBlock];
    int64_t best[kBlock];
    for (int64_t b0 = i0; b0 < i1; b0 += kBlock) {
        const int64_t n = std::min(kBlock, i1 - b0);
        for (int64_t i = 0; i < n; ++i) {
            const int64_t p = index[b0 + i];
            const int64_t y = p / width, x = p - y * width;
            const int64_t at = y * row_stride + x;
            loc_y[i] = static_cast<float>(y) + offset[at];
            loc_x[i] = static_cast<float>(x) + offset[channel_stride + at];
        }
        for (int64_t i = 0; i < n; ++i) {
            const float dy = centers[0] - loc_y[i], dx = centers[1] - loc_x[i];
            best_d[i] = dy * dy + dx * dx;
            best[i] = 0;
        }
        for (int64_t k = 1; k < num_centers; ++k) {
            const float cy = centers[2 * k], cx = centers[2 * k + 1];
            for (int64_t i = 0; i < n; ++i) {
                const float dy = cy - loc_y[i], dx = cx - loc_x[i];
                const float dist = dy * dy + dx * dx;
                const bool nearer = dist < best_d[i];
                best_d[i] = nearer ? dist : best_d[i];
                best[i] = nearer ? k : best[i];
            }
        }
        for (int64_t i = 0; i < n; ++i) member[b0 + i] = best[i];
    }
}

// Pixels index[i0, i1) (flat indices into labels, uint8 classes) belong to the instances
// member[i0, i1): counts [K, C] (int64, not zeroed here) += 1 at (member, label) of each.
void pdl_instance_class_counts(const uint8_t* labels, const int64_t* index, const int64_t* member, int64_t i0,
                               int64_t i1, int64_t num_classes, int64_t* counts) {
    for (int64_t i = i0; i < i1; ++i) counts[member[i] * num_classes + labels[index[i]]] += 1;
}

// The panoptic map and the segment map of pixels [p0, p1) from their classes (uint8 labels):
// panoptic = stuff_value[label], seg = stuff_seg[label] (int32 tables of the C classes).
void pdl_paint_classes(const uint8_t* labels, int64_t p0, int64_t p1, const int32_t* stuff_value,
                       const int32_t* stuff_seg, int32_t* panoptic, int32_t* seg) {
    for (int64_t p = p0; p < p1; ++p) {
        panoptic[p] = stuff_value[labels[p]];
        seg[p] = stuff_seg[labels[p]];
    }
}

// Then the thing pixels index[i0, i1) of the instances member[i0, i1): panoptic = thing_value[member],
// seg = thing_seg[member].
void pdl_paint_instances(const int64_t* index, const int64_t* member, int64_t i0, int64_t i1,
                         const int32_t* thing_value, const int32_t* thing_seg, int32_t* panoptic, int32_t* seg) {
    for (int64_t i = i0; i < i1; ++i) {
        panoptic[index[i]] = thing_value[member[i]];
        seg[index[i]] = thing_seg[member[i]];
    }
}

}  // extern "C"
