// Ternary x INT8 matrix products on the CPU, in the 2-bit layout mote-convert stores (no repacking).
//
// Layout (docs/format.md): with R = ceil(out / 4), weight row j*R + r is the 2-bit field j of packed
// byte [r, k]; a field holds code + 1 in {0, 1, 2}. One packed row therefore feeds four output rows,
// and a dot product is computed on the fields directly, with the correction of llama.cpp's TQ2_0 and
// bitnet.cpp's I2_S kernels:
//
//     sum_k (c_k - 1) * q_k = sum_k c_k * q_k - sum_k q_k        (c_k in {0, 1, 2}, q_k int8)
//
// Integer accumulation is exact (|q| <= 128, codes <= 2: int16 pair sums <= 512, int32 totals), so
// every path returns the same int32 values as the pure-torch reference. The AVX-512 VNNI and AVX2
// paths are compiled with function target attributes and chosen at run time by the CPU's features;
// the scalar path runs everywhere.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define MOTE_X86 1
#endif

namespace {

// acc[j] = sum_k field_j(w[k]) * x[k] for the four fields of one packed row.
void dot4_scalar(const uint8_t* w, const int8_t* x, int64_t k_len, int32_t acc[4]) {
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (int64_t k = 0; k < k_len; ++k) {
    const int32_t b = w[k];
    const int32_t q = x[k];
    a0 += (b & 3) * q;
    a1 += ((b >> 2) & 3) * q;
    a2 += ((b >> 4) & 3) * q;
    a3 += ((b >> 6) & 3) * q;
  }
  acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
}

#ifdef MOTE_X86
__attribute__((target("avx2"))) inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

__attribute__((target("avx2"))) void dot4_avx2(const uint8_t* w, const int8_t* x, int64_t k_len, int32_t acc[4]) {
  const __m256i mask = _mm256_set1_epi8(3);
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  int64_t k = 0;
  // Blocks of up to 32 x 32 bytes: int16 lanes sum at most 32 pair sums of <= 512 (16384) before
  // they are widened to int32, which halves the widening work.
  while (k + 32 <= k_len) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    const int64_t end = (k_len - k) / 32 > 32 ? k + 32 * 32 : k + ((k_len - k) / 32) * 32;
    for (; k < end; k += 32) {
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k));
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
      s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(_mm256_and_si256(b, mask), q));
      s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b, 2), mask), q));
      s2 = _mm256_add_epi16(s2, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b, 4), mask), q));
      s3 = _mm256_add_epi16(s3, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b, 6), mask), q));
    }
    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(s0, ones16));
    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(s1, ones16));
    a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(s2, ones16));
    a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(s3, ones16));
  }
  int32_t tail[4] = {0, 0, 0, 0};
  if (k < k_len) dot4_scalar(w + k, x + k, k_len - k, tail);
  acc[0] = hsum_epi32(a0) + tail[0];
  acc[1] = hsum_epi32(a1) + tail[1];
  acc[2] = hsum_epi32(a2) + tail[2];
  acc[3] = hsum_epi32(a3) + tail[3];
}

// AVX-512 VNNI: vpdpbusd multiplies u8 fields by s8 activations and adds groups of four straight
// into int32 lanes (no int16 stage, no saturation), 64 bytes at a time. NT tokens share each field
// extraction. A field is taken in place, by one mask (b & (3 << 2j) = 4^j * field j), not shifted
// down: its products are 4^j times the field's, every partial sum stays far below 2^31 (at most
// 192 * 128 * k_len), and the exact sum is recovered by one arithmetic shift at the end.
template <int NT>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void dot4_vnni(const uint8_t* w, const int8_t* const* xs,
                                                                       int64_t k_len, int32_t (*acc)[4]) {
  const __m512i m0 = _mm512_set1_epi8(0x03), m1 = _mm512_set1_epi8(0x0C), m2 = _mm512_set1_epi8(0x30),
                m3 = _mm512_set1_epi8(static_cast<char>(0xC0));
  __m512i a[NT][4];
  for (int t = 0; t < NT; ++t)
    for (int j = 0; j < 4; ++j) a[t][j] = _mm512_setzero_si512();
  int64_t k = 0;
  for (; k + 64 <= k_len; k += 64) {
    const __m512i b = _mm512_loadu_si512(w + k);
    const __m512i f0 = _mm512_and_si512(b, m0);
    const __m512i f1 = _mm512_and_si512(b, m1);
    const __m512i f2 = _mm512_and_si512(b, m2);
    const __m512i f3 = _mm512_and_si512(b, m3);
    for (int t = 0; t < NT; ++t) {
      const __m512i q = _mm512_loadu_si512(xs[t] + k);
      a[t][0] = _mm512_dpbusd_epi32(a[t][0], f0, q);
      a[t][1] = _mm512_dpbusd_epi32(a[t][1], f1, q);
      a[t][2] = _mm512_dpbusd_epi32(a[t][2], f2, q);
      a[t][3] = _mm512_dpbusd_epi32(a[t][3], f3, q);
    }
  }
  for (int t = 0; t < NT; ++t) {
    int32_t tail[4] = {0, 0, 0, 0};
    if (k < k_len) dot4_scalar(w + k, xs[t] + k, k_len - k, tail);
    for (int j = 0; j < 4; ++j) acc[t][j] = (_mm512_reduce_add_epi32(a[t][j]) >> (2 * j)) + tail[j];
  }
}

// The 16 horizontal sums of 16 int32 vectors at once, in order (a transposing add tree: 45
// instructions instead of 16 separate reductions of about 10 each).
__attribute__((target("avx512f"))) inline __m512i reduce16_epi32(const __m512i* v) {
  __m512i t[8], u[4];
  for (int i = 0; i < 8; ++i)
    t[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    u[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * i], t[2 * i + 1]), _mm512_unpackhi_epi64(t[2 * i], t[2 * i + 1]));
  // u[i]'s 128-bit lane l holds the lane-l partial sums of v[4i..4i+3]: add the four lanes
  const __m512i w0 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], 0x88), _mm512_shuffle_i32x4(u[0], u[1], 0xDD));
  const __m512i w1 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[2], u[3], 0x88), _mm512_shuffle_i32x4(u[2], u[3], 0xDD));
  return _mm512_add_epi32(_mm512_shuffle_i32x4(w0, w1, 0x88), _mm512_shuffle_i32x4(w0, w1, 0xDD));
}

// Two packed rows (eight output rows) for two tokens: every activation load serves both rows, so a
// chunk of 64 inputs costs 4 loads for 16 products instead of 3 for 8. Every accumulator is a named
// variable and each field is consumed as soon as it is taken: written as a template over arrays,
// GCC keeps the eight fields and the masks on the stack and copies the sixteen accumulators between
// registers every iteration (about 70 instructions for 28 that do work); this form keeps all in
// registers (16 accumulators, 2 activations, 2 packed vectors, 1 field, 4 masks) and runs near the
// core's vpdpbusd peak.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void dot8x2_vnni(const uint8_t* w0, const uint8_t* w1,
                                                                         const int8_t* const* xs, int64_t k_len,
                                                                         int32_t (*acc)[8]) {
  const __m512i m0 = _mm512_set1_epi8(0x03), m1 = _mm512_set1_epi8(0x0C), m2 = _mm512_set1_epi8(0x30),
                m3 = _mm512_set1_epi8(static_cast<char>(0xC0));
  const int8_t* x0 = xs[0];
  const int8_t* x1 = xs[1];
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  __m512i c0 = a0, c1 = a0, c2 = a0, c3 = a0, c4 = a0, c5 = a0, c6 = a0, c7 = a0;
  int64_t k = 0;
  for (; k + 64 <= k_len; k += 64) {
    const __m512i q0 = _mm512_loadu_si512(x0 + k), q1 = _mm512_loadu_si512(x1 + k);
    const __m512i b0 = _mm512_loadu_si512(w0 + k);
    __m512i f = _mm512_and_si512(b0, m0);
    a0 = _mm512_dpbusd_epi32(a0, f, q0); c0 = _mm512_dpbusd_epi32(c0, f, q1);
    f = _mm512_and_si512(b0, m1);
    a1 = _mm512_dpbusd_epi32(a1, f, q0); c1 = _mm512_dpbusd_epi32(c1, f, q1);
    f = _mm512_and_si512(b0, m2);
    a2 = _mm512_dpbusd_epi32(a2, f, q0); c2 = _mm512_dpbusd_epi32(c2, f, q1);
    f = _mm512_and_si512(b0, m3);
    a3 = _mm512_dpbusd_epi32(a3, f, q0); c3 = _mm512_dpbusd_epi32(c3, f, q1);
    const __m512i b1 = _mm512_loadu_si512(w1 + k);
    f = _mm512_and_si512(b1, m0);
    a4 = _mm512_dpbusd_epi32(a4, f, q0); c4 = _mm512_dpbusd_epi32(c4, f, q1);
    f = _mm512_and_si512(b1, m1);
    a5 = _mm512_dpbusd_epi32(a5, f, q0); c5 = _mm512_dpbusd_epi32(c5, f, q1);
    f = _mm512_and_si512(b1, m2);
    a6 = _mm512_dpbusd_epi32(a6, f, q0); c6 = _mm512_dpbusd_epi32(c6, f, q1);
    f = _mm512_and_si512(b1, m3);
    a7 = _mm512_dpbusd_epi32(a7, f, q0); c7 = _mm512_dpbusd_epi32(c7, f, q1);
  }
  const __m512i v[16] = {a0, a1, a2, a3, a4, a5, a6, a7, c0, c1, c2, c3, c4, c5, c6, c7};
  alignas(64) int32_t sums[2][8];
  _mm512_store_si512(sums, reduce16_epi32(v));
  for (int t = 0; t < 2; ++t) {
    int32_t tail0[4] = {0, 0, 0, 0}, tail1[4] = {0, 0, 0, 0};
    if (k < k_len) {
      dot4_scalar(w0 + k, xs[t] + k, k_len - k, tail0);
      dot4_scalar(w1 + k, xs[t] + k, k_len - k, tail1);
    }
    for (int j = 0; j < 4; ++j) {  // fields taken in place: shift back down by 4^j (see dot4_vnni)
      acc[t][j] = (sums[t][j] >> (2 * j)) + tail0[j];
      acc[t][4 + j] = (sums[t][4 + j] >> (2 * j)) + tail1[j];
    }
  }
}

bool cpu_has_vnni() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vnni");
  return has;
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif

using Dot4 = void (*)(const uint8_t*, const int8_t*, int64_t, int32_t*);
constexpr int kPairTokens = 2;  // tokens per row-pair pass: 2 x 8 accumulators

std::string resolve(const std::string& path) {
#ifdef MOTE_X86
  if (path == "auto") return cpu_has_vnni() ? "avx512vnni" : (cpu_has_avx2() ? "avx2" : "scalar");
  if (path == "avx512vnni") TORCH_CHECK(cpu_has_vnni(), "mote ternary kernel: this CPU has no AVX-512 VNNI");
  if (path == "avx2") TORCH_CHECK(cpu_has_avx2(), "mote ternary kernel: this CPU has no AVX2");
  TORCH_CHECK(path == "avx512vnni" || path == "avx2" || path == "scalar", "mote ternary kernel: unknown path ", path);
  return path;
#else
  TORCH_CHECK(path == "auto" || path == "scalar", "mote ternary kernel: unknown path ", path, " on this CPU");
  return "scalar";
#endif
}

Dot4 single_token(const std::string& resolved) {
#ifdef MOTE_X86
  if (resolved == "avx2") return dot4_avx2;
#endif
  return dot4_scalar;
}

// y[t, o] = sum_k T[o, k] * x[t, k] as int32, T the ternary codes of `packed` (uint8 [R, K]).
at::Tensor ternary_matmul(const at::Tensor& x, const at::Tensor& packed, int64_t out_features, c10::string_view path) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kChar, "x must be int8 [tokens, in]");
  TORCH_CHECK(packed.dim() == 2 && packed.scalar_type() == at::kByte, "packed must be uint8 [ceil(out/4), in]");
  TORCH_CHECK(x.device().is_cpu() && packed.device().is_cpu(), "the CPU kernel takes CPU tensors");
  const int64_t rows = packed.size(0), k_len = packed.size(1), tokens = x.size(0);
  TORCH_CHECK(x.size(1) == k_len, "x has ", x.size(1), " features, the weight ", k_len);
  TORCH_CHECK(out_features >= 0 && (out_features + 3) / 4 == rows, "packed rows ", rows, " do not fit ", out_features, " outputs");
  const at::Tensor xc = x.contiguous(), wc = packed.contiguous();
  at::Tensor y = at::empty({tokens, out_features}, x.options().dtype(at::kInt));
  const int8_t* xp = xc.data_ptr<int8_t>();
  const uint8_t* wp = wc.data_ptr<uint8_t>();
  int32_t* yp = y.data_ptr<int32_t>();
  const std::string resolved = resolve(std::string(path));
  const Dot4 dot4 = single_token(resolved);
  // sum_k x[t, k], once per token: the correction for codes stored as code + 1
  std::vector<int32_t> xsum(tokens, 0);
  for (int64_t t = 0; t < tokens; ++t) {
    int32_t s = 0;
    for (int64_t k = 0; k < k_len; ++k) s += xp[t * k_len + k];
    xsum[t] = s;
  }
  // Rows outer, tokens inner: a packed row (k_len bytes) stays in L1 while every token reads it.
  auto store = [&](int64_t t, int64_t r, const int32_t* acc) {
    for (int64_t j = 0; j < 4; ++j) {
      const int64_t o = j * rows + r;
      if (o < out_features) yp[t * out_features + o] = acc[j] - xsum[t];
    }
  };
  at::parallel_for(0, rows, 4, [&](int64_t r0, int64_t r1) {
    int32_t acc[4][4];
    const int8_t* xs[4];
    int64_t r = r0;
#ifdef MOTE_X86
    if (resolved == "avx512vnni" && tokens >= kPairTokens) {
      int32_t acc8[kPairTokens][8];
      for (; r + 2 <= r1; r += 2) {  // row pairs, kPairTokens tokens at a time
        const uint8_t* w0 = wp + r * k_len;
        int64_t t = 0;
        for (; t + kPairTokens <= tokens; t += kPairTokens) {
          for (int i = 0; i < kPairTokens; ++i) xs[i] = xp + (t + i) * k_len;
          dot8x2_vnni(w0, w0 + k_len, xs, k_len, acc8);
          for (int i = 0; i < kPairTokens; ++i) {
            store(t + i, r, acc8[i]);
            store(t + i, r + 1, acc8[i] + 4);
          }
        }
        for (; t < tokens; ++t) {  // the odd token: one row at a time
          xs[0] = xp + t * k_len;
          dot4_vnni<1>(w0, xs, k_len, acc);
          store(t, r, acc[0]);
          dot4_vnni<1>(w0 + k_len, xs, k_len, acc);
          store(t, r + 1, acc[0]);
        }
      }
    }
#endif
    for (; r < r1; ++r) {
      const uint8_t* wr = wp + r * k_len;
      int64_t t = 0;
#ifdef MOTE_X86
      if (resolved == "avx512vnni") {
        for (; t + 4 <= tokens; t += 4) {  // four tokens share each extraction of the fields
          for (int i = 0; i < 4; ++i) xs[i] = xp + (t + i) * k_len;
          dot4_vnni<4>(wr, xs, k_len, acc);
          for (int i = 0; i < 4; ++i) store(t + i, r, acc[i]);
        }
        for (; t < tokens; ++t) {
          xs[0] = xp + t * k_len;
          dot4_vnni<1>(wr, xs, k_len, acc);
          store(t, r, acc[0]);
        }
        continue;
      }
#endif
      for (; t < tokens; ++t) {
        dot4(wr, xp + t * k_len, k_len, acc[0]);
        store(t, r, acc[0]);
      }
    }
  });
  return y;
}

// The whole packed linear of one routed expert (docs/method.md), bit-identical to the torch reference
// (mote_convert.kernels.ternary_linear with the reference kernel): per-token absmax INT8 activations
// computed with the same float32 operations (127 * (1 / max(amax, 1e-5)), product, round half to even,
// clamp), the integer product above, then acc * (gamma / s_x) in float32. One call instead of a
// dozen small torch ops: what decoding (one token at a time) is made of.
at::Tensor ternary_linear_f32(const at::Tensor& x_in, const at::Tensor& packed, const at::Tensor& scale, int64_t out_features,
                              c10::string_view path) {
  TORCH_CHECK(x_in.dim() == 2, "x must be [tokens, in]");
  TORCH_CHECK(scale.numel() == 1 && scale.scalar_type() == at::kFloat, "scale must be one float32 value");
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t tokens = x.size(0), k_len = x.size(1);
  at::Tensor xq = at::empty({tokens, k_len}, x.options().dtype(at::kChar));
  std::vector<float> sx(tokens);
  const float* xp = x.data_ptr<float>();
  int8_t* qp = xq.data_ptr<int8_t>();
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = xp + t * k_len;
    float amax = 0.0f;
    for (int64_t k = 0; k < k_len; ++k) amax = std::max(amax, std::fabs(row[k]));
    // as torch evaluates `127 / t` (Tensor.__rtruediv__): a reciprocal, then the product
    const float s = (1.0f / std::max(amax, 1e-5f)) * 127.0f;
    for (int64_t k = 0; k < k_len; ++k) {
      const float v = std::nearbyint(row[k] * s);  // the default rounding mode: half to even, as torch.round
      qp[t * k_len + k] = static_cast<int8_t>(std::min(std::max(v, -128.0f), 127.0f));
    }
    sx[t] = s;
  }
  const at::Tensor acc = ternary_matmul(xq, packed, out_features, path);
  at::Tensor y = at::empty({tokens, out_features}, x.options());
  const float gamma = scale.item<float>();
  const int32_t* ap = acc.data_ptr<int32_t>();
  float* yp = y.data_ptr<float>();
  for (int64_t t = 0; t < tokens; ++t) {
    const float f = gamma / sx[t];
    for (int64_t o = 0; o < out_features; ++o) yp[t * out_features + o] = static_cast<float>(ap[t * out_features + o]) * f;
  }
  return y;
}

// --- quantize and pack (the converter's hot loop) -------------------------------------------------

// at::parallel_for, or the whole range on the calling thread when threads == 1: the converter packs
// in a worker thread beside a writer that needs a core of its own (0: torch's thread count).
template <typename F>
void parallel_range(int64_t begin, int64_t end, int64_t grain, int64_t threads, const F& f) {
  TORCH_CHECK(threads == 0 || threads == 1, "threads must be 0 (torch's) or 1");
  if (threads == 1) {
    if (begin < end) f(begin, end);
    return;
  }
  at::parallel_for(begin, end, grain, f);
}

// Each block's sum is one sequential chain of float64 adds (the reference's order), so a single
// chain is bound by the add's latency. Eight blocks are summed side by side instead: eight
// independent chains keep the adder busy, and each chain still adds its block first to last.
constexpr int64_t kChains = 8;

template <typename T>
inline double abs_f64(T v) {
  return std::fabs(static_cast<double>(static_cast<float>(v)));
}

template <typename T>
void block_sums_impl(const T* w, int64_t n, int64_t block, int64_t threads, double* out) {
  const int64_t blocks = (n + block - 1) / block;
  const int64_t full = n / block;  // blocks of exactly ``block`` elements
  const int64_t groups = full / kChains;
  parallel_range(0, groups, 1, threads, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const T* base = w + g * kChains * block;
      double acc[kChains] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
      for (int64_t i = 0; i < block; ++i) {
        for (int64_t c = 0; c < kChains; ++c) acc[c] += abs_f64(base[c * block + i]);
      }
      for (int64_t c = 0; c < kChains; ++c) out[g * kChains + c] = acc[c];
    }
  });
  for (int64_t b = groups * kChains; b < blocks; ++b) {  // the last few blocks, one chain each
    double acc = 0.0;
    const int64_t end = std::min(n, (b + 1) * block);
    for (int64_t i = b * block; i < end; ++i) acc += abs_f64(w[i]);
    out[b] = acc;
  }
}

// Sequential float64 sums of |W| over consecutive blocks (mote_convert.quant.ternary.block_sums).
at::Tensor absmean_block_sums(const at::Tensor& weight, int64_t block, int64_t threads) {
  TORCH_CHECK(block > 0, "block must be positive");
  const at::Tensor w = weight.contiguous();
  const int64_t n = w.numel();
  at::Tensor out = at::empty({(n + block - 1) / block}, w.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, w.scalar_type(), "absmean_block_sums", [&] {
    block_sums_impl<scalar_t>(w.data_ptr<scalar_t>(), n, block, threads, out.data_ptr<double>());
  });
  return out;
}

// The code of one weight, as the reference: float32 W / gamma, round half to even (vroundps, as
// torch.round), clamp to [-1, 1]. Inlined into loops the compiler vectorizes.
template <typename T>
inline float ternary_code(T w, float gamma) {
  const float v = __builtin_nearbyintf(static_cast<float>(w) / gamma);
  return v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v);
}

// One weight row's codes + 1 in {0, 1, 2}, shifted into field j of the packed row.
template <typename T>
inline void pack_row(const T* __restrict src, int64_t k_len, float gamma, int shift, uint8_t* __restrict dst) {
  for (int64_t k = 0; k < k_len; ++k) dst[k] |= static_cast<uint8_t>(static_cast<int32_t>(ternary_code(src[k], gamma) + 1.0f) << shift);
}

#ifdef MOTE_X86
template <typename T>
__attribute__((target("avx2"))) void pack_row_avx2(const T* __restrict src, int64_t k_len, float gamma, int shift, uint8_t* __restrict dst) {
  pack_row<T>(src, k_len, gamma, shift, dst);
}
#endif

template <typename T>
void pack_impl(const T* w, int64_t out_features, int64_t k_len, float gamma, int64_t threads, uint8_t* packed) {
  const int64_t rows = (out_features + 3) / 4;
  parallel_range(0, rows, 8, threads, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      uint8_t* dst = packed + r * k_len;
      for (int64_t k = 0; k < k_len; ++k) dst[k] = 0;  // padding rows stay 0b00
      for (int64_t j = 0; j < 4; ++j) {
        const int64_t row = j * rows + r;
        if (row >= out_features) break;
        // as the reference: float32 W / gamma, round half to even, clamp to [-1, 1], + 1
#ifdef MOTE_X86
        if (cpu_has_avx2()) {
          pack_row_avx2<T>(w + row * k_len, k_len, gamma, static_cast<int>(2 * j), dst);
          continue;
        }
#endif
        pack_row<T>(w + row * k_len, k_len, gamma, static_cast<int>(2 * j), dst);
      }
    }
  });
}

// clamp(round(W / gamma), -1, 1) + 1, 2-bit packed in the stored layout, in one pass over W.
at::Tensor ternary_pack(const at::Tensor& weight, double gamma, int64_t threads) {
  TORCH_CHECK(weight.dim() == 2, "weight must be [out, in]");
  const at::Tensor w = weight.contiguous();
  const int64_t out_features = w.size(0), k_len = w.size(1);
  at::Tensor packed = at::empty({(out_features + 3) / 4, k_len}, w.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, w.scalar_type(), "ternary_pack", [&] {
    pack_impl<scalar_t>(w.data_ptr<scalar_t>(), out_features, k_len, static_cast<float>(gamma), threads,
                        packed.data_ptr<uint8_t>());
  });
  return packed;
}

// The train mode's float32 codes clamp(round(W / gamma), -1, 1), written into ``out`` in one pass
// over W (the STE's forward and backward each need them; a reused ``out`` spares the allocation).
template <typename T>
inline void codes_row(const T* __restrict src, int64_t len, float gamma, float* __restrict dst) {
  for (int64_t k = 0; k < len; ++k) dst[k] = ternary_code(src[k], gamma);
}

#ifdef MOTE_X86
template <typename T>
__attribute__((target("avx2"))) void codes_row_avx2(const T* __restrict src, int64_t len, float gamma, float* __restrict dst) {
  codes_row<T>(src, len, gamma, dst);
}
#endif

void ternary_codes(const at::Tensor& weight, double gamma, const at::Tensor& out) {
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous() && out.numel() == weight.numel(),
              "out must be a contiguous float32 tensor of the weight's size");
  const at::Tensor w = weight.contiguous();
  const int64_t n = w.numel();
  constexpr int64_t kChunk = 1 << 16;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, w.scalar_type(), "ternary_codes", [&] {
    const scalar_t* src = w.data_ptr<scalar_t>();
    float* dst = out.data_ptr<float>();
    at::parallel_for(0, (n + kChunk - 1) / kChunk, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t start = c * kChunk, len = std::min(kChunk, n - start);
#ifdef MOTE_X86
        if (cpu_has_avx2()) {
          codes_row_avx2<scalar_t>(src + start, len, static_cast<float>(gamma), dst + start);
          continue;
        }
#endif
        codes_row<scalar_t>(src + start, len, static_cast<float>(gamma), dst + start);
      }
    });
  });
}

std::string best_path() { return resolve("auto"); }

}  // namespace

TORCH_LIBRARY(mote, m) {
  m.def("ternary_matmul(Tensor x, Tensor packed, int out_features, str path='auto') -> Tensor");
  m.def("ternary_linear(Tensor x, Tensor packed, Tensor scale, int out_features, str path='auto') -> Tensor");
  m.def("absmean_block_sums(Tensor weight, int block, int threads=0) -> Tensor");
  m.def("ternary_pack(Tensor weight, float gamma, int threads=0) -> Tensor");
  m.def("ternary_codes(Tensor weight, float gamma, Tensor(a!) out) -> ()");
  m.def("best_path() -> str");
}

TORCH_LIBRARY_IMPL(mote, CPU, m) {
  m.impl("ternary_matmul", &ternary_matmul);
  m.impl("ternary_linear", &ternary_linear_f32);
  m.impl("absmean_block_sums", &absmean_block_sums);
  m.impl("ternary_pack", &ternary_pack);
  m.impl("ternary_codes", &ternary_codes);
}

TORCH_LIBRARY_IMPL(mote, CompositeExplicitAutograd, m) {
  m.impl("best_path", []() { return best_path(); });
}
