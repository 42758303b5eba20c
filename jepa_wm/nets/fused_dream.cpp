// The dream step's elementwise work in three fused CPU kernels (issue 14): the LSTM cell's
// nonlinearities and state update, the mixture draw, and the CMA-ES population's linear C.
// Eager torch runs these as ~20 separate ops (and a gathered copy of C's weights), each a
// pass over memory: the bf16 step spent most of its time there, not in its two matmuls
// (benchmarks/results/speed.md §3). Here each row is read once.
//
// Built and loaded by jepa_wm/nets/fused.py (g++ against torch's headers, cached per
// source, CPU and torch). Rows are shared out with at::parallel_for on torch's threads.
// The loops are written so that gcc vectorises them (-O3 -ffast-math -march=native, exp
// inlined below); the numbers match the eager step to float rounding (tests/test_dream.py).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <vector>

namespace {

inline float bf16_to_float(uint16_t x) {
  uint32_t bits = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// round to nearest even, as torch's float -> bfloat16 cast (finite inputs)
inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// one row of n values as float: the row itself (float) or a copy into buf (bf16)
inline const float* row_as_float(const void* base, bool low, int64_t r, int64_t n,
                                 float* __restrict buf) {
  if (!low) return static_cast<const float*>(base) + r * n;
  const uint16_t* __restrict src = static_cast<const uint16_t*>(base) + r * n;
  for (int64_t j = 0; j < n; ++j) buf[j] = bf16_to_float(src[j]);
  return buf;
}

// exp(x) for the kernels' vectorised loops, inlined, so that a loop needs no library call
// (glibc's libmvec expf, called per 8 or 16 values, timed alike on the cell): 2^n from
// the exponent bits times Cephes' expf polynomial of the remainder on [-ln2/2, ln2/2].
// Within 5 ulp of exp on [-87, 88] as compiled here (4.5 measured, at the top of the
// range; 1 ulp without -ffast-math). x is clamped to [-87, 88], so the result is finite
// and normal (sigmoid(-100) is 0 to float precision either way).
inline float fast_exp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  const float r = x - n * 0.693145751953125f - n * 1.42860682030941723212e-6f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

void check_rows(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.is_contiguous() && t.device().is_cpu(), name,
              ": a contiguous 2-D CPU tensor is expected");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16, name,
              ": float32 or bfloat16 is expected");
}

// gates (N, 4H) pre-activations in the order i, f, g, o, the g block doubled (so that
// tanh(g) = 2 sigmoid(2g) - 1 comes from the same sigmoid); c (N, H) float.
// -> h (N, H) float, the new c (N, H) float, and h in bf16 when the gates are bf16 (the
// head matmul's input; empty otherwise).
std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_cell(const at::Tensor& gates,
                                                         const at::Tensor& c) {
  check_rows(gates, "gates");
  TORCH_CHECK(c.scalar_type() == at::kFloat && c.dim() == 2 && c.is_contiguous(),
              "c: a contiguous float32 (N, H) tensor is expected");
  const int64_t N = gates.size(0), H = c.size(1);
  TORCH_CHECK(gates.size(1) == 4 * H && c.size(0) == N, "gates: (N, 4H) for c (N, H)");
  const bool low = gates.scalar_type() == at::kBFloat16;
  at::Tensor h = at::empty({N, H}, c.options());
  at::Tensor c_new = at::empty({N, H}, c.options());
  at::Tensor h_low = low ? at::empty({N, H}, gates.options()) : at::empty({0}, c.options());
  const float* cp = c.data_ptr<float>();
  float* hp = h.data_ptr<float>();
  float* cnp = c_new.data_ptr<float>();
  uint16_t* hl = low ? reinterpret_cast<uint16_t*>(h_low.data_ptr<at::BFloat16>()) : nullptr;
  const void* gp = gates.data_ptr();
  at::parallel_for(0, N, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(low ? 4 * H : 0);
    for (int64_t r = r0; r < r1; ++r) {
      const float* __restrict g = row_as_float(gp, low, r, 4 * H, buf.data());
      const float* __restrict cr = cp + r * H;
      float* __restrict hr = hp + r * H;
      float* __restrict cn = cnp + r * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float si = 1.0f / (1.0f + fast_exp(-g[j]));
        const float sf = 1.0f / (1.0f + fast_exp(-g[H + j]));
        const float tg = 2.0f / (1.0f + fast_exp(-g[2 * H + j])) - 1.0f;
        const float so = 1.0f / (1.0f + fast_exp(-g[3 * H + j]));
        const float cv = sf * cr[j] + si * tg;
        cn[j] = cv;
        hr[j] = so * (2.0f / (1.0f + fast_exp(-2.0f * cv)) - 1.0f);
      }
      if (low) {
        uint16_t* __restrict out = hl + r * H;
        for (int64_t j = 0; j < H; ++j) out[j] = float_to_bf16(hr[j]);
      }
    }
  });
  return {h, c_new, h_low};
}

// y (N, L + 2DK + 2): M's head output in component-major order (MDNRNN.dream_step):
// mixture logits (K, D), or (K) when shared, then mu (K, D) and log sigma (K, D).
// uniform (N, D) or (N, 1) picks each component by inverse CDF of softmax(logits / tau);
// normal (N, D) is the Gaussian noise.
// -> z (N, D) = mu_k + exp(clamp(log sigma_k, -7, 5)) sqrt(tau) normal.
// Every loop runs along D (contiguous in each block), so each is a vector loop.
at::Tensor sample_mixture(const at::Tensor& y, int64_t D, int64_t K, bool shared, double tau,
                          const at::Tensor& uniform, const at::Tensor& normal) {
  check_rows(y, "y");
  const int64_t N = y.size(0), L = shared ? K : D * K, W = y.size(1);
  TORCH_CHECK(W >= L + 2 * D * K, "y: too few columns for D and K");
  TORCH_CHECK(uniform.scalar_type() == at::kFloat && uniform.is_contiguous() &&
                  uniform.size(0) == N && uniform.size(1) == (shared ? 1 : D),
              "uniform: a contiguous float32 (N, D) tensor ((N, 1) when shared) is expected");
  TORCH_CHECK(normal.scalar_type() == at::kFloat && normal.is_contiguous() &&
                  normal.size(0) == N && normal.size(1) == D,
              "normal: a contiguous float32 (N, D) tensor is expected");
  at::Tensor z = at::empty({N, D}, normal.options());
  const float* up = uniform.data_ptr<float>();
  const float* np = normal.data_ptr<float>();
  float* zp = z.data_ptr<float>();
  const void* yp = y.data_ptr();
  const bool low = y.scalar_type() == at::kBFloat16;
  const float inv_tau = static_cast<float>(1.0 / tau);
  const float scale = static_cast<float>(std::sqrt(tau));
  const int64_t G = shared ? 1 : D;  // mixtures per row: one per dimension, or one shared
  at::parallel_for(0, N, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(low ? W : 0), scratch(4 * G + L + 2 * D);
    std::vector<int32_t> picks(G);
    float* __restrict top = scratch.data();
    float* __restrict total = top + G;
    float* __restrict cdf = total + G;
    float* __restrict target = cdf + G;
    float* __restrict p = target + G;
    float* __restrict mu = p + L;
    float* __restrict log_sigma = mu + D;
    int32_t* __restrict pick = picks.data();
    for (int64_t r = r0; r < r1; ++r) {
      const float* __restrict logit = row_as_float(yp, low, r, W, buf.data());  // (K, G)
      const float* __restrict mus = logit + L;  // (K, D)
      const float* __restrict lss = logit + L + D * K;  // (K, D)
      const float* __restrict u = up + r * G;
      // softmax(logit / tau) along K, unnormalised: exp(logit / tau - max)
      for (int64_t d = 0; d < G; ++d) top[d] = logit[d];
      for (int64_t k = 1; k < K; ++k)
        for (int64_t d = 0; d < G; ++d)
          top[d] = top[d] > logit[k * G + d] ? top[d] : logit[k * G + d];
      for (int64_t d = 0; d < G; ++d) total[d] = 0.0f;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t d = 0; d < G; ++d) {
          const float q = fast_exp((logit[k * G + d] - top[d]) * inv_tau);
          p[k * G + d] = q;
          total[d] += q;
        }
      // the first k whose CDF reaches u (the last if none does): CDF < u counted over k
      for (int64_t d = 0; d < G; ++d) cdf[d] = 0.0f, pick[d] = 0, target[d] = u[d] * total[d];
      for (int64_t k = 0; k < K - 1; ++k)
        for (int64_t d = 0; d < G; ++d) {
          cdf[d] += p[k * G + d];
          pick[d] += cdf[d] < target[d];
        }
      for (int64_t d = 0; d < D; ++d) mu[d] = mus[d], log_sigma[d] = lss[d];
      for (int64_t k = 1; k < K; ++k)
        for (int64_t d = 0; d < D; ++d) {
          const bool mine = pick[shared ? 0 : d] >= k;
          mu[d] = mine ? mus[k * D + d] : mu[d];
          log_sigma[d] = mine ? lss[k * D + d] : log_sigma[d];
        }
      const float* __restrict e = np + r * D;
      float* __restrict zr = zp + r * D;
      for (int64_t d = 0; d < D; ++d) {
        const float ls = log_sigma[d] < -7.0f ? -7.0f
                         : (log_sigma[d] > 5.0f ? 5.0f : log_sigma[d]);
        zr[d] = mu[d] + fast_exp(ls) * scale * e[d];
      }
    }
  });
  return z;
}

// x (N, I) float, owner (N,) int64 in [0, P), weight (P, O, I) float, bias (P, O) float
// -> y (N, O) = weight[owner] x + bias[owner]: a CMA-ES population acting on its dreams,
// each row with its own candidate's C, without gathering a (N, O, I) copy of the weights
// (ControllerPopulation's eager path; at 1,024 dreams of the paper's C that copy is 7 MB a
// step).
at::Tensor population_linear(const at::Tensor& x, const at::Tensor& owner,
                             const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.is_contiguous(),
              "x: a contiguous float32 (N, I) tensor is expected");
  TORCH_CHECK(owner.scalar_type() == at::kLong && owner.dim() == 1 && owner.is_contiguous() &&
                  owner.size(0) == x.size(0),
              "owner: a contiguous int64 (N,) tensor is expected");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.dim() == 3 &&
                  weight.is_contiguous() && weight.size(2) == x.size(1),
              "weight: a contiguous float32 (P, O, I) tensor is expected");
  const int64_t N = x.size(0), I = x.size(1), P = weight.size(0), O = weight.size(1);
  TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.is_contiguous() && bias.dim() == 2 &&
                  bias.size(0) == P && bias.size(1) == O,
              "bias: a contiguous float32 (P, O) tensor is expected");
  const int64_t* op = owner.data_ptr<int64_t>();
  for (int64_t n = 0; n < N; ++n) TORCH_CHECK(op[n] >= 0 && op[n] < P, "owner: out of range");
  at::Tensor y = at::empty({N, O}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, N, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* __restrict xr = xp + r * I;
      for (int64_t o = 0; o < O; ++o) {
        const float* __restrict w = wp + (op[r] * O + o) * I;
        float acc = 0.0f;
        for (int64_t i = 0; i < I; ++i) acc += w[i] * xr[i];
        yp[r * O + o] = acc + bp[op[r] * O + o];
      }
    }
  });
  return y;
}

}  // namespace

TORCH_LIBRARY(jepa_wm_fused, m) {
  m.def("lstm_cell(Tensor gates, Tensor c) -> (Tensor, Tensor, Tensor)", &lstm_cell);
  m.def("sample_mixture(Tensor y, int D, int K, bool shared, float tau, Tensor uniform, "
        "Tensor normal) -> Tensor",
        &sample_mixture);
  m.def("population_linear(Tensor x, Tensor owner, Tensor weight, Tensor bias) -> Tensor",
        &population_linear);
}
