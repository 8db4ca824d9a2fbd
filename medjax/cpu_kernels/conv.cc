// Stride-1 "SAME" convolutions of channels-last float32 arrays in 2D and 3D, and
// their weight gradient, as XLA FFI handlers for JAX's CPU backend
// (medjax.cpu_kernels). 2D arrays are handled as 3D ones with depth 1.
//
//   conv:        y[n, d, h, w, o]  = sum_{a, i, j, c} x[n, d+a-pd, h+i-ph, w+j-pw, c] k[a, i, j, c, o]
//   weight grad: dk[a, i, j, c, o] = sum_{n, d, h, w} x[n, d+a-pd, h+i-ph, w+j-pw, c] g[n, d, h, w, o]
//
// with zeros outside the image, odd kernel sizes, p = (size - 1) / 2, and the
// output channels O a multiple of 16. The input gradient is `conv` of g with the
// kernel flipped and its channel axes swapped (done by the caller).
//
// Both loops keep a tile of results in 16-float vector registers (zmm with
// AVX-512) while the data it needs streams past:
// * conv: a run of kPixels output pixels along W x 16 or 32 output channels,
//   summed over all taps and input channels; each output image row reads the
//   kd * kh input rows it needs from zero-padded copies, so no tap needs a bounds
//   check;
// * weight grad: 8 input channels x 32 output channels of one tap, summed over a
//   chunk of image rows small enough to stay in the L2 cache across all tiles.
//   XLA computes this gradient as a convolution with batch and channel axes
//   swapped, behind two layout transposes of the operands.
// Image rows are shared out in chunks between XLA's intra-op threads through an
// atomic counter; the calling thread works too, and waits only for chunks that
// other threads have started, so it never waits on a task that has not run.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 16;
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

#ifdef __AVX512F__
constexpr int kPixels = 12;  // 12 x 2 accumulators of the 32 zmm registers
#else
constexpr int kPixels = 4;  // 4 x 2 x 2 of the 16 ymm registers
#endif

inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(Vec));
  return v;
}

inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof(Vec)); }

struct Shape {
  int64_t n, d, h, w, c, o;  // x [n, d, h, w, c], y and g [n, d, h, w, o]
  int64_t kd, kh, kw;        // kernel [kd, kh, kw, c, o]

  int64_t rows() const { return n * d * h; }
  int64_t taps() const { return kd * kh * kw; }
  // Image row (n, d + a - pd, h + i - ph) of output row r, or -1 outside.
  int64_t Source(int64_t r, int64_t a, int64_t i) const {
    const int64_t row = r % h, depth = (r / h) % d;
    const int64_t dd = depth + a - (kd - 1) / 2, hh = row + i - (kh - 1) / 2;
    if (dd < 0 || dd >= d || hh < 0 || hh >= h) return -1;
    return r - row - depth * h + dd * h + hh;
  }
};

int64_t Threads(ffi::ThreadPool& pool) { return std::max<int64_t>(1, pool.num_threads()); }

// Runs work(chunk, worker) for chunk in [0, chunks) on the calling thread and
// XLA's intra-op pool; worker is a dense index < the number of threads used.
template <typename Work>
void ParallelFor(ffi::ThreadPool& pool, int64_t chunks, Work work) {
  struct State {
    std::atomic<int64_t> next{0}, done{0}, workers{0};
  };
  auto state = std::make_shared<State>();
  auto run = [state, chunks, work] {
    int64_t chunk = state->next.fetch_add(1);
    if (chunk >= chunks) return;
    const int64_t worker = state->workers.fetch_add(1);
    for (; chunk < chunks; chunk = state->next.fetch_add(1)) {
      work(chunk, worker);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t threads = std::min<int64_t>(Threads(pool), chunks);
  // Tasks that start after all chunks are claimed return at once, touching only
  // `state`, which they share.
  for (int64_t t = 1; t < threads; ++t) {
    auto task = run;
    pool.Schedule(std::move(task));
  }
  run();
  while (state->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

// ---------------------------------------------------------------------------
// conv

template <int P, int OV>
void ConvTile(const Shape& s, const float* const* rows, const float* k, float* y,
              int64_t o0, int64_t p0) {
  Vec acc[P][OV];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < OV; ++v) acc[p][v] = Vec{};
  for (int64_t t = 0; t < s.kd * s.kh; ++t) {
    if (rows[t] == nullptr) continue;
    for (int64_t j = 0; j < s.kw; ++j) {
      const float* xq = rows[t] + (p0 + j) * s.c;
      const float* kq = k + (t * s.kw + j) * s.c * s.o + o0;
      for (int64_t c = 0; c < s.c; ++c) {
        Vec kv[OV];
        for (int v = 0; v < OV; ++v) kv[v] = Load(kq + c * s.o + v * kLanes);
        for (int p = 0; p < P; ++p) {
          const float xv = xq[p * s.c + c];
          for (int v = 0; v < OV; ++v) acc[p][v] += xv * kv[v];
        }
      }
    }
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < OV; ++v) Store(y + (p0 + p) * s.o + o0 + v * kLanes, acc[p][v]);
}

// The last, partial run of a row: P = 1 .. kPixels - 1 pixels.
template <int OV, int P = kPixels - 1>
void ConvTileTail(int pixels, const Shape& s, const float* const* rows, const float* k,
                  float* y, int64_t o0, int64_t p0) {
  if constexpr (P >= 1) {
    if (pixels == P) return ConvTile<P, OV>(s, rows, k, y, o0, p0);
    return ConvTileTail<OV, P - 1>(pixels, s, rows, k, y, o0, p0);
  }
}

template <int OV>
void ConvRow(const Shape& s, const float* const* rows, const float* k, float* y,
             int64_t o0) {
  const int64_t full = s.w / kPixels * kPixels;
  for (int64_t p0 = 0; p0 < full; p0 += kPixels)
    ConvTile<kPixels, OV>(s, rows, k, y, o0, p0);
  if (full < s.w) ConvTileTail<OV>(static_cast<int>(s.w - full), s, rows, k, y, o0, full);
}

void Conv(ffi::ThreadPool& pool, const Shape& s, const float* x, const float* k,
          float* y) {
  const int64_t taps = s.kd * s.kh, padded = s.w + s.kw - 1, pw = (s.kw - 1) / 2;
  const int64_t threads = Threads(pool);
  const int64_t per_chunk = std::max<int64_t>(1, s.rows() / (8 * threads));
  const int64_t chunks = (s.rows() + per_chunk - 1) / per_chunk;
  // per worker: the zero-padded input rows of the current output row
  std::vector<std::vector<float>> buffers(threads);
  ParallelFor(pool, chunks, [&](int64_t chunk, int64_t worker) {
    std::vector<float>& buffer = buffers[worker];
    if (buffer.empty()) buffer.assign(taps * padded * s.c, 0.0f);
    const float* rows[64];  // kd * kh <= 64, checked by the handler
    const int64_t r1 = std::min(s.rows(), (chunk + 1) * per_chunk);
    for (int64_t r = chunk * per_chunk; r < r1; ++r) {
      for (int64_t a = 0; a < s.kd; ++a)
        for (int64_t i = 0; i < s.kh; ++i) {
          const int64_t t = a * s.kh + i, src = s.Source(r, a, i);
          if (src < 0) {
            rows[t] = nullptr;
            continue;
          }
          float* dst = buffer.data() + t * padded * s.c;
          std::memcpy(dst + pw * s.c, x + src * s.w * s.c, s.w * s.c * sizeof(float));
          rows[t] = dst;
        }
      float* yr = y + r * s.w * s.o;
      int64_t o0 = 0;
      for (; o0 + 2 * kLanes <= s.o; o0 += 2 * kLanes) ConvRow<2>(s, rows, k, yr, o0);
      for (; o0 < s.o; o0 += kLanes) ConvRow<1>(s, rows, k, yr, o0);
    }
  });
}

// ---------------------------------------------------------------------------
// weight grad

// dk[a, i, j, c0 : c0 + CB, o0 : o0 + 16 OV] += over image rows [r0, r1)
template <int CB, int OV>
void GradTile(const Shape& s, const float* x, const float* g, float* dk, int64_t a,
              int64_t i, int64_t j, int64_t c0, int64_t o0, int64_t r0, int64_t r1) {
  Vec acc[CB][OV];
  for (int c = 0; c < CB; ++c)
    for (int v = 0; v < OV; ++v) acc[c][v] = Vec{};
  const int64_t pw = (s.kw - 1) / 2;
  const int64_t w0 = std::max<int64_t>(0, pw - j);
  const int64_t w1 = std::min<int64_t>(s.w, s.w + pw - j);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t src = s.Source(r, a, i);
    if (src < 0) continue;
    const float* xr = x + (src * s.w + w0 + j - pw) * s.c + c0;
    const float* gr = g + (r * s.w + w0) * s.o + o0;
    for (int64_t w = 0; w < w1 - w0; ++w) {
      const float* xp = xr + w * s.c;
      Vec gv[OV];
      for (int v = 0; v < OV; ++v) gv[v] = Load(gr + w * s.o + v * kLanes);
      for (int c = 0; c < CB; ++c) {
        const float xv = xp[c];
        for (int v = 0; v < OV; ++v) acc[c][v] += xv * gv[v];
      }
    }
  }
  float* out = dk + (((a * s.kh + i) * s.kw + j) * s.c + c0) * s.o + o0;
  for (int c = 0; c < CB; ++c)
    for (int v = 0; v < OV; ++v) {
      float* p = out + c * s.o + v * kLanes;
      Store(p, Load(p) + acc[c][v]);
    }
}

// CB = 1 .. 8 input channels
template <int OV, int CB = 8>
void GradTileAnyC(int cb, const Shape& s, const float* x, const float* g, float* dk,
                  int64_t a, int64_t i, int64_t j, int64_t c0, int64_t o0, int64_t r0,
                  int64_t r1) {
  if constexpr (CB >= 1) {
    if (cb == CB) return GradTile<CB, OV>(s, x, g, dk, a, i, j, c0, o0, r0, r1);
    return GradTileAnyC<OV, CB - 1>(cb, s, x, g, dk, a, i, j, c0, o0, r0, r1);
  }
}

void WeightGrad(ffi::ThreadPool& pool, const Shape& s, const float* x, const float* g,
                float* dk) {
  // image rows of x and g per chunk: about 256 KiB, to stay in L2 across tiles
  const int64_t row_bytes = s.w * (s.c + s.o) * sizeof(float);
  const int64_t per_chunk = std::max<int64_t>(1, (256 << 10) / row_bytes);
  const int64_t chunks = (s.rows() + per_chunk - 1) / per_chunk;
  const int64_t size = s.taps() * s.c * s.o;
  std::vector<std::vector<float>> partial(Threads(pool));  // one dk per worker
  ParallelFor(pool, chunks, [&](int64_t chunk, int64_t worker) {
    std::vector<float>& sum = partial[worker];
    if (sum.empty()) sum.assign(size, 0.0f);
    const int64_t r0 = chunk * per_chunk, r1 = std::min(s.rows(), r0 + per_chunk);
    for (int64_t a = 0; a < s.kd; ++a)
      for (int64_t i = 0; i < s.kh; ++i)
        for (int64_t j = 0; j < s.kw; ++j)
          for (int64_t c0 = 0; c0 < s.c; c0 += 8) {
            const int cb = static_cast<int>(std::min<int64_t>(8, s.c - c0));
            int64_t o0 = 0;
            for (; o0 + 2 * kLanes <= s.o; o0 += 2 * kLanes)
              GradTileAnyC<2>(cb, s, x, g, sum.data(), a, i, j, c0, o0, r0, r1);
            for (; o0 < s.o; o0 += kLanes)
              GradTileAnyC<1>(cb, s, x, g, sum.data(), a, i, j, c0, o0, r0, r1);
          }
  });
  std::fill(dk, dk + size, 0.0f);
  for (const std::vector<float>& sum : partial)
    for (int64_t k = 0; k < static_cast<int64_t>(sum.size()); ++k) dk[k] += sum[k];
}

// ---------------------------------------------------------------------------
// handlers

// Shape from x [N, (D,) H, W, C] and kernel [(KD,) KH, KW, C, O]; "" or an error.
const char* MakeShape(ffi::Span<const int64_t> x, ffi::Span<const int64_t> k, Shape* s) {
  if (x.size() != 4 && x.size() != 5) return "x must be [N, H, W, C] or [N, D, H, W, C]";
  if (k.size() != x.size()) return "kernel rank must match x's";
  const bool two = x.size() == 4;
  *s = Shape{x[0], two ? 1 : x[1], x[x.size() - 3], x[x.size() - 2], x[x.size() - 1],
             k[k.size() - 1], two ? 1 : k[0], k[k.size() - 4], k[k.size() - 3]};
  if (k[k.size() - 2] != s->c) return "kernel input channels must match x's";
  if (s->o % kLanes != 0) return "output channels must be a multiple of 16";
  if (s->kd % 2 == 0 || s->kh % 2 == 0 || s->kw % 2 == 0) return "kernel sizes must be odd";
  if (s->kd * s->kh > 64) return "kernel too large";
  return "";
}

ffi::Error ConvHandler(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                       ffi::Buffer<ffi::F32> k, ffi::ResultBuffer<ffi::F32> y) {
  Shape s;
  const char* error = MakeShape(x.dimensions(), k.dimensions(), &s);
  if (*error) return ffi::Error::InvalidArgument(std::string("medjax conv: ") + error);
  Conv(pool, s, x.typed_data(), k.typed_data(), y->typed_data());
  return ffi::Error::Success();
}

ffi::Error WeightGradHandler(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                             ffi::Buffer<ffi::F32> g, ffi::ResultBuffer<ffi::F32> dk) {
  Shape s;
  const char* error = MakeShape(x.dimensions(), dk->dimensions(), &s);
  const auto xd = x.dimensions(), gd = g.dimensions();
  if (!*error && (gd.size() != xd.size() || gd.back() != s.o ||
                  !std::equal(xd.begin(), xd.end() - 1, gd.begin())))
    error = "g must be [N, (D,) H, W, O] with x's N, D, H, W and dk's O";
  if (*error)
    return ffi::Error::InvalidArgument(std::string("medjax conv weight grad: ") + error);
  WeightGrad(pool, s, x.typed_data(), g.typed_data(), dk->typed_data());
  return ffi::Error::Success();
}

// Both handlers: XLA's thread pool, two float32 arrays in, one out.
auto TwoBuffersToOne() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>();
}

}  // namespace

// The vector width the library was built for (-march=native): the tiles above
// keep their accumulators in registers only with AVX-512's 32 zmm registers.
extern "C" int medjax_vector_bits() {
#ifdef __AVX512F__
  return 512;
#elif defined(__AVX__)
  return 256;
#else
  return 128;
#endif
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(MedjaxConv, ConvHandler, TwoBuffersToOne());
XLA_FFI_DEFINE_HANDLER_SYMBOL(MedjaxConvWeightGrad, WeightGradHandler, TwoBuffersToOne());
