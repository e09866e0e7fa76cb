// DA-top-k (sparse.h). Per shard, the k_s-th largest order-preserving u32 key T is found without
// sorting, then one pass in index order takes every key > T and the first ties at T, which gives
// ascending indices and "lower index wins" for free.
//  - k_s <= shard / 8 (LM head, top-k' of a vocabulary): sample-select. A strided sample of 4096
//    gives a threshold that keeps ~1.25 k_s + margin elements; one vectorised filtering pass over
//    the shard collects them; an exact radix select runs over those only. If the sample misjudged
//    (too few or too many survivors), fall back to:
//  - radix select (11 + 11 + 10 bits: a histogram over the whole shard, then over the candidates of
//    the threshold's bucket), or for a shard of at most 256 keys nth_element on a copy of them,
//    and a branch-free output pass.
// Branches that depend on the values cost ~50 % mispredictions on fresh data, which a benchmark
// repeating one vector hides (the predictor learns it): nth_element on 1638 new activations took
// 13-15 us inside a decode step against 1.3 us in such a loop; the radix select takes 6-8 us there.
// Shards run on the thread pool when they are large. Plain C++ (SSE2 where available), the same on
// every kernel path.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>  // baseline on x86-64
#endif

#include "sparse.h"
#include "threadpool.h"

namespace hire {
namespace {

constexpr int64_t kParallelN = 1 << 16;  // below this, shards run on the calling thread
constexpr int64_t kSelectBucket = 256;   // a threshold bucket this small is finished by nth_element
constexpr int64_t kSmallShard = 256;     // a shard this small skips the histograms altogether

// Order-preserving key: larger value -> larger key; -0 == +0; NaN (any sign) -> 0, below -inf.
// Branch-free: value signs are random, and a mispredicted branch per element costs more than all of
// the arithmetic here.
template <bool kAbs>
inline uint32_t rank_key(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  if (kAbs) b &= 0x7fffffffu;
  b &= 0u - static_cast<uint32_t>(b != 0x80000000u);                        // -0 -> +0
  const uint32_t flip = static_cast<uint32_t>(static_cast<int32_t>(b) >> 31) | 0x80000000u;
  const uint32_t not_nan = 0u - static_cast<uint32_t>((b & 0x7fffffffu) <= 0x7f800000u);
  return (b ^ flip) & not_nan;
}

inline float key_to_float(uint32_t key) {  // inverse of rank_key<false> for key > 0
  const uint32_t b = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

struct TopkScratch {
  std::vector<uint32_t> keys, ck, tmp;
  std::vector<int32_t> ci;
  uint32_t hist[4][2048];
};
// Reached through a call the compiler cannot see into: handed a thread_local's address directly,
// GCC specialised radix_threshold on it and looked the address up again (__tls_get_addr) on every
// histogram step, 14 % of a top-k of 8192.
__attribute__((noinline)) TopkScratch& topk_scratch() {
  thread_local TopkScratch s;
  return s;
}

template <class T>
T* grow(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

// Walks hist (n bins) from the top; returns the bin holding the k-th largest and adds the counts of
// the bins above it to *above.
inline int walk(const uint32_t* hist, int n, int64_t k, int64_t* above) {
  int64_t acc = *above;
  int b = n - 1;
  for (; b > 0; --b) {
    if (acc + hist[b] >= k) break;
    acc += hist[b];
  }
  *above = acc;
  return b;
}

// buf[0, count) = value(j) for every j < n with keep(j), in order; returns count. buf holds n + 1.
// Branch-free, along four independent running counts over the quarters of [0, n), each appending
// into its own stretch of buf, then joined: one count carried a store-address dependency from
// element to element, and took half of a top-k of 8192.
template <class T, class Value, class Keep>
int64_t append_where(int64_t n, T* buf, Value value, Keep keep) {
  const int64_t q = n / 4;
  int64_t c0 = 0, c1 = q, c2 = 2 * q, c3 = 3 * q;
  for (int64_t j = 0; j < q; ++j) {
    buf[c0] = value(j);
    buf[c1] = value(q + j);
    buf[c2] = value(2 * q + j);
    buf[c3] = value(3 * q + j);
    c0 += keep(j);
    c1 += keep(q + j);
    c2 += keep(2 * q + j);
    c3 += keep(3 * q + j);
  }
  for (int64_t j = 4 * q; j < n; ++j) {  // the tail joins the last quarter, whose stretch runs to n
    buf[c3] = value(j);
    c3 += keep(j);
  }
  int64_t count = c0;
  for (const auto& [from, to] : {std::pair<int64_t, int64_t>{q, c1}, {2 * q, c2}, {3 * q, c3}}) {
    std::memmove(buf + count, buf + from, static_cast<size_t>(to - from) * sizeof(T));
    count += to - from;
  }
  return count;
}

// The k-th largest of keys[0, n) (0 < k <= n) by radix select (11 + 11 + 10 bits); *above = how many
// keys are larger. keys is left untouched.
uint32_t radix_threshold(const uint32_t* keys, int64_t n, int64_t k, TopkScratch& s, int64_t* above) {
  // Level 1: top 11 bits, four interleaved histograms (repeated bins do not serialise).
  std::memset(s.hist, 0, sizeof(s.hist));
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    ++s.hist[0][keys[i] >> 21];
    ++s.hist[1][keys[i + 1] >> 21];
    ++s.hist[2][keys[i + 2] >> 21];
    ++s.hist[3][keys[i + 3] >> 21];
  }
  for (; i < n; ++i) ++s.hist[0][keys[i] >> 21];
  for (int b = 0; b < 2048; ++b) s.hist[0][b] += s.hist[1][b] + s.hist[2][b] + s.hist[3][b];
  *above = 0;
  const uint32_t b1 = static_cast<uint32_t>(walk(s.hist[0], 2048, k, above));
  // Candidates: the keys of that bucket.
  uint32_t* cand = grow(s.tmp, n + 1);
  const int64_t nc = append_where(
      n, cand, [&](int64_t j) { return keys[j]; }, [&](int64_t j) { return (keys[j] >> 21) == b1; });
  if (nc <= kSelectBucket) {
    // A small bucket: select the rank directly instead of two more histogram levels, whose fixed
    // cost (clearing and walking 2048 + 1024 bins) dominates for a few hundred keys.
    const int64_t r = k - *above;  // 1-based rank of the threshold inside the bucket
    std::nth_element(cand, cand + (r - 1), cand + nc, std::greater<uint32_t>());
    const uint32_t t = cand[r - 1];
    int64_t gt = 0;
    for (int64_t j = 0; j < r - 1; ++j) gt += cand[j] > t;  // [0, r-1) holds keys >= t
    *above += gt;
    return t;
  }
  // Level 2: next 11 bits, over the candidates.
  uint32_t* h = s.hist[1];
  std::memset(h, 0, 2048 * sizeof(uint32_t));
  for (int64_t j = 0; j < nc; ++j) ++h[(cand[j] >> 10) & 2047u];
  const uint32_t b2 = static_cast<uint32_t>(walk(h, 2048, k, above));
  int64_t nc2 = 0;
  for (int64_t j = 0; j < nc; ++j) {
    cand[nc2] = cand[j];
    nc2 += ((cand[j] >> 10) & 2047u) == b2;
  }
  // Level 3: last 10 bits.
  std::memset(h, 0, 1024 * sizeof(uint32_t));
  for (int64_t j = 0; j < nc2; ++j) ++h[cand[j] & 1023u];
  const uint32_t b3 = static_cast<uint32_t>(walk(h, 1024, k, above));
  return (b1 << 21) | (b2 << 10) | b3;
}

template <bool kAbs>
void make_keys(const float* v, int64_t m, uint32_t* keys) {
  for (int64_t i = 0; i < m; ++i) keys[i] = rank_key<kAbs>(v[i]);  // vectorises
}

// Appends (key, index) of every v[j] >= tf (|v[j]| when kAbs) to ck / ci in index order; returns the
// count. Blocks of 16 are tested first (vectorised), so a rare hit costs little.
template <bool kAbs>
int64_t filter(const float* v, int64_t m, float tf, uint32_t* ck, int32_t* ci, int64_t cap) {
  int64_t n = 0, j = 0;
  for (; j + 16 <= m; j += 16) {
#if defined(__SSE2__)
    const __m128 t4 = _mm_set1_ps(tf);
    __m128 a = _mm_loadu_ps(v + j), b = _mm_loadu_ps(v + j + 4);
    __m128 c = _mm_loadu_ps(v + j + 8), d = _mm_loadu_ps(v + j + 12);
    if (kAbs) {
      const __m128 sign = _mm_set1_ps(-0.0f);
      a = _mm_andnot_ps(sign, a);
      b = _mm_andnot_ps(sign, b);
      c = _mm_andnot_ps(sign, c);
      d = _mm_andnot_ps(sign, d);
    }
    const __m128 hit = _mm_or_ps(_mm_or_ps(_mm_cmpge_ps(a, t4), _mm_cmpge_ps(b, t4)),
                                 _mm_or_ps(_mm_cmpge_ps(c, t4), _mm_cmpge_ps(d, t4)));
    if (_mm_movemask_ps(hit) == 0) continue;
#else
    int any = 0;
    for (int l = 0; l < 16; ++l) any |= (kAbs ? std::fabs(v[j + l]) : v[j + l]) >= tf;
    if (!any) continue;
#endif
    for (int l = 0; l < 16; ++l) {
      if ((kAbs ? std::fabs(v[j + l]) : v[j + l]) >= tf) {
        if (n == cap) return -1;
        ck[n] = rank_key<kAbs>(v[j + l]);
        ci[n++] = static_cast<int32_t>(j + l);
      }
    }
  }
  for (; j < m; ++j) {
    if ((kAbs ? std::fabs(v[j]) : v[j]) >= tf) {
      if (n == cap) return -1;
      ck[n] = rank_key<kAbs>(v[j]);
      ci[n++] = static_cast<int32_t>(j);
    }
  }
  return n;
}

// Sample-select: a threshold from a strided sample that keeps ~1.25 ks + margin elements, then one
// filtering pass and an exact radix select over the survivors. Returns false (nothing written) when
// the sample guessed too high or too low; the caller then runs the plain radix select.
template <bool kAbs>
bool sample_select(const float* v, int64_t lo, int64_t m, int64_t ks, int32_t* out, TopkScratch& s) {
  const int64_t S = std::min<int64_t>(4096, m / 8);
  const int64_t stride = m / S;
  uint32_t* sk = grow(s.keys, S);
  for (int64_t i = 0; i < S; ++i) sk[i] = rank_key<kAbs>(v[i * stride]);
  const double expect = static_cast<double>(ks) * static_cast<double>(S) / static_cast<double>(m);
  const int64_t r = static_cast<int64_t>(expect * 1.25 + 4.0 * std::sqrt(expect) + 16.0);
  if (r >= S) return false;
  int64_t above;
  const uint32_t t_lo = radix_threshold(sk, S, r, s, &above);
  if (t_lo == 0) return false;  // NaNs in play: no float threshold
  const float tf = key_to_float(t_lo);
  // At most ~4x the expected survivors; more means the sample misled us (or heavy ties).
  const int64_t cap = std::min<int64_t>(m, 4 * (r + 16) * stride);
  uint32_t* ck = grow(s.ck, cap);
  int32_t* ci = grow(s.ci, cap);
  const int64_t nc = filter<kAbs>(v, m, tf, ck, ci, cap);
  if (nc < ks) return false;
  const uint32_t t = radix_threshold(ck, nc, ks, s, &above);
  int64_t ties = ks - above;
  int64_t n = 0;
  for (int64_t j = 0; j < nc; ++j) {  // ci is compacted in place (n <= j)
    const uint32_t key = ck[j];
    const int64_t eq = key == t;
    const int64_t take = (key > t) | (eq & (ties > 0));
    ties -= eq;
    ci[n] = ci[j];
    n += take;
  }
  for (int64_t j = 0; j < ks; ++j) out[j] = static_cast<int32_t>(lo + ci[j]);
  return true;
}

// ks (0 < ks < m) largest of values[lo, lo + m), ascending, into out.
void select_shard(const float* values, int64_t lo, int64_t m, int64_t ks, bool by_abs, int32_t* out,
                  TopkScratch& s) {
  const float* v = values + lo;
  if (m >= 4096 && ks * 8 <= m) {
    if (by_abs ? sample_select<true>(v, lo, m, ks, out, s) : sample_select<false>(v, lo, m, ks, out, s)) return;
  }
  uint32_t* keys = grow(s.keys, m);
  if (by_abs) {
    make_keys<true>(v, m, keys);
  } else {
    make_keys<false>(v, m, keys);
  }
  int64_t above;
  uint32_t t;
  if (m <= kSmallShard) {
    // A few hundred keys: the histograms' fixed cost (clearing and walking 2048 bins) is more than
    // nth_element's mispredictions.
    uint32_t* c = grow(s.tmp, m);
    std::memcpy(c, keys, static_cast<size_t>(m) * sizeof(uint32_t));
    std::nth_element(c, c + (ks - 1), c + m, std::greater<uint32_t>());
    t = c[ks - 1];
    above = 0;
    for (int64_t j = 0; j < ks - 1; ++j) above += c[j] > t;  // [0, ks-1) holds keys >= t
  } else {
    t = radix_threshold(keys, m, ks, s, &above);
  }
  const int64_t ties = ks - above;  // keys == t to take (the first ones)
  int32_t equal = 0;  // 32-bit lanes: m < 2^31
  for (int64_t j = 0; j < m; ++j) equal += keys[j] == t;  // vectorises
  if (equal == ties) {  // every key >= t goes in
    int32_t* stage = grow(s.ci, m + 1);
    const int64_t n = append_where(
        m, stage, [&](int64_t j) { return static_cast<int32_t>(lo + j); }, [&](int64_t j) { return keys[j] >= t; });
    std::memcpy(out, stage, static_cast<size_t>(n) * sizeof(int32_t));
    return;
  }
  // Some keys equal to t stay out: the first `ties` of them go in. Branch-free (a hit rate near 20%
  // would mispredict constantly), staged in ci: one slot past the last hit is written.
  int32_t* stage = grow(s.ci, ks + 1);
  int64_t n = 0, left = ties;
  for (int64_t j = 0; j < m; ++j) {
    const uint32_t key = keys[j];
    const int64_t eq = key == t;
    const int64_t take = (key > t) | (eq & (left > 0));
    left -= eq;
    stage[n] = static_cast<int32_t>(lo + j);
    n += take;
  }
  std::memcpy(out, stage, static_cast<size_t>(ks) * sizeof(int32_t));
}

}  // namespace

// Shard s of P over n: [floor(s n / P), floor((s+1) n / P)), keeping k_s = floor(k/P) + (s < k % P).
void topk_shard_range(int64_t n, int64_t k, int64_t P, int64_t s, int64_t* lo, int64_t* m, int64_t* ks) {
  *lo = static_cast<int64_t>((static_cast<__int128>(s) * n) / P);
  const int64_t hi = static_cast<int64_t>((static_cast<__int128>(s + 1) * n) / P);
  *m = hi - *lo;
  *ks = std::min(k / P + (s < k % P ? 1 : 0), *m);
}

void topk_shard(const float* values, int64_t lo, int64_t m, int64_t ks, bool by_abs, int32_t* out) {
  if (ks <= 0) return;
  if (ks >= m) {
    for (int64_t j = 0; j < m; ++j) out[j] = static_cast<int32_t>(lo + j);
    return;
  }
  select_shard(values, lo, m, ks, by_abs, out, topk_scratch());
}

int64_t topk_count(int64_t n, int64_t k, int64_t shards) {
  if (k >= n) return n;
  int64_t total = 0;
  for (int64_t s = 0; s < shards; ++s) {
    int64_t lo, m, ks;
    topk_shard_range(n, k, shards, s, &lo, &m, &ks);
    total += ks;
  }
  return total;
}

int64_t topk(const float* values, int64_t n, int64_t k, bool by_abs, int64_t shards, int32_t* out) {
  if (n <= 0 || k <= 0) return 0;
  if (k >= n) {
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(i);
    return n;
  }
  std::vector<int64_t> offset(static_cast<size_t>(shards) + 1, 0);
  for (int64_t s = 0; s < shards; ++s) {
    int64_t lo, m, ks;
    topk_shard_range(n, k, shards, s, &lo, &m, &ks);
    offset[s + 1] = offset[s] + ks;
  }
  auto run = [&](int64_t s, int) {
    int64_t lo, m, ks;
    topk_shard_range(n, k, shards, s, &lo, &m, &ks);
    topk_shard(values, lo, m, ks, by_abs, out + offset[s]);
  };
  // Parallel only when each shard has real work: the sampling path (k / n <= 1/8) finishes a 128K
  // shard in ~30 us, less than a wake-up of the pool costs when the other core is busy.
  if (shards > 1 && n >= kParallelN && (k * 8 > n || n >= 8 * kParallelN)) {
    ThreadPool::instance().parallel_for(shards, run);
  } else {
    for (int64_t s = 0; s < shards; ++s) run(s, 0);
  }
  return offset[shards];
}

}  // namespace hire
