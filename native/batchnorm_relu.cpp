// Batch norm followed by ReLU in one autograd node, for training mode (statistics of the batch):
// relu(batch_norm(x)), its running statistics updated as batch_norm updates them.
//
// Why: ATen runs the pair as two operators and three backward kernels. Its forward reads the input
// twice for the statistics, once more to write the normalised output, and ReLU reads and writes
// that output again; its backward runs threshold_backward (reads the gradient and the output,
// writes a masked gradient) and then batch norm's backward (reads the masked gradient and the
// input twice, writes the input's gradient). At a ResNet's activation sizes these kernels stream
// memory and do little arithmetic, so the bytes moved are the time. Here:
//   forward:  one pass for both statistics, one pass writing max(x·a + b, 0);
//   backward: one pass for the two per-channel sums, one pass writing the input's gradient,
//             each recomputing ReLU's mask from x instead of reading the output.
//
// The maths, per channel c over the m = N·H·W values x of the batch:
//   mean = Σx / m, var = Σ(x − mean)² / m (biased, used to normalise), invstd = 1 / √(var + eps);
//   a = weight · invstd, b = bias − mean · a; z = x·a + b; y = max(z, 0).
//   Running statistics: r_mean ← (1 − f)·r_mean + f·mean, r_var ← (1 − f)·r_var + f·var·m/(m − 1).
//   Backward, with dy the gradient of y and g = dy where z > 0 else 0 (ReLU's gradient, PyTorch's
//   threshold_backward: the mask is y > 0, and y > 0 exactly where z > 0):
//   d_bias = Σg, d_weight = invstd · Σg(x − mean),
//   dx = a · (g − Σg/m − (x − mean) · invstd² · Σg(x − mean)/m) = a·g + k1·x + k0,
//   with k1 = −a · invstd² · Σg(x − mean)/m and k0 = −a · Σg/m − k1 · mean.
// The backward uses the very a and b the forward used (saved, not recomputed) and the same
// expression x·a + b, compiled without contraction into fused multiply-adds (binding.gyp:
// -ffp-contract=off), so its mask is bit for bit the mask of the forward's output.
//
// Statistics are sums of x − x₀ (x₀ the channel's first value, which keeps the one-pass variance
// Σd²/m − (Σd/m)² away from cancellation), accumulated in float over blocks of 32 rows (or 1024
// values of a plane) and in double across blocks and threads; the per-thread partial sums are added
// in thread order, so a result depends only on the thread count, as ATen's do.
//
// Layouts: "rows" is channels innermost (NHWC channels-last, or [N, C]); "planes" is [N, C, S]
// (NCHW, or [N, C, L]). Anything else (another dtype or device, other strides, evaluation mode)
// takes ATen's batch_norm and relu_, so this is only ever a faster way to the same values.
// torch.setFusedBatchNormReLU(false), or LOCO_FUSED_BN_RELU=0 at load, always takes ATen's path
// (for A/B measurements, and for comparisons that need ATen's own rounding).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common.h"

namespace loco {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The batch as m rows of C channels, or as N·C planes of S values.
struct Layout {
  bool rows;
  int64_t n, c, s;
  int64_t count() const { return n * s; }  // values per channel
};

constexpr int64_t kRowBlock = 32;      // rows summed in float before adding into double
constexpr int64_t kPlaneBlock = 1024;  // values of a plane summed in float before adding into double

// Per-thread partial sums ([threads][2][C] doubles), added in thread order at the end.
struct ChannelSums {
  explicit ChannelSums(int64_t channels)
      : c(channels), partial(size_t(at::get_num_threads()) * 2 * channels, 0.0) {}
  double* first(int thread) { return &partial[size_t(thread) * 2 * c]; }
  void reduce(double* sum1, double* sum2) const {
    std::fill(sum1, sum1 + c, 0.0);
    std::fill(sum2, sum2 + c, 0.0);
    for (size_t t = 0; t < partial.size() / size_t(2 * c); t++) {
      const double* p = &partial[t * 2 * c];
      for (int64_t k = 0; k < c; k++) {
        sum1[k] += p[k];
        sum2[k] += p[c + k];
      }
    }
  }
  int64_t c;
  std::vector<double> partial;
};

// ---- the kernels, for the baseline instruction set and for AVX2 ----
// The kernels stream memory with little arithmetic per value, but at cache-resident sizes the
// vector width shows (AVX2 made them 20–40% faster than SSE2 in a micro-benchmark at ResNet-50's
// sizes). Element by element the two copies round alike (no contraction into fused multiply-adds,
// -ffp-contract=off); the sums' order follows the vector width, so results differ by rounding.
namespace baseline {
#include "batchnorm_relu_kernels.inc"
}  // namespace baseline

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "batchnorm_relu_kernels.inc"
}  // namespace avx2
#pragma GCC pop_options

struct Kernels {
  decltype(&baseline::shiftedSums) shiftedSums;
  decltype(&baseline::normalizeReLUAny) normalizeReLU;
  decltype(&baseline::gatedGradSumsAny) gatedGradSums;
  decltype(&baseline::gatedGradInputAny) gatedGradInput;
};

// The AVX2 copy where the CPU has AVX2 and FMA, else the baseline one (chosen once);
// LOCO_FUSED_BN_RELU=baseline takes the baseline one anyway (the test that both agree uses it).
const Kernels& kernelsForThisCPU() {
  static const Kernels kernels = [] {
    const char* choice = std::getenv("LOCO_FUSED_BN_RELU");
    const bool baselineAsked = choice != nullptr && std::strcmp(choice, "baseline") == 0;
    if (!baselineAsked && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return Kernels{avx2::shiftedSums, avx2::normalizeReLUAny, avx2::gatedGradSumsAny, avx2::gatedGradInputAny};
    return Kernels{baseline::shiftedSums, baseline::normalizeReLUAny, baseline::gatedGradSumsAny,
                   baseline::gatedGradInputAny};
  }();
  return kernels;
}

// The layout the fused kernels can read `x` in, or none: float32 on the CPU, 2-D to 4-D, dense
// with channels innermost (channels-last, or [N, C]) or as [N, C, S] planes (contiguous).
c10::optional<Layout> fusedLayout(const at::Tensor& x) {
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || x.dim() < 2 || x.dim() > 4) return c10::nullopt;
  const int64_t n = x.size(0), c = x.size(1), s = x.numel() / std::max<int64_t>(1, n * c);
  if (x.numel() == 0) return c10::nullopt;
  if (x.dim() == 2 && x.is_contiguous()) return Layout{true, n, c, 1};
  if (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast)) return Layout{true, n, c, s};
  if (x.is_contiguous()) return Layout{false, n, c, s};
  return c10::nullopt;
}

// The first value of each channel (the shift of the one-pass sums).
at::Tensor firstValues(const at::Tensor& x, const Layout& l) {
  at::Tensor first = at::empty({l.c}, x.options());
  const float* src = x.data_ptr<float>();
  float* dst = first.data_ptr<float>();
  for (int64_t k = 0; k < l.c; k++) dst[k] = l.rows ? src[k] : src[k * l.s];
  return first;
}

// The running statistics, updated in place. Passed to apply() as one value that is not a tensor, so
// that autograd does not take them for inputs of the node (they get no gradient and are not saved).
struct RunningStats {
  at::Tensor mean, var;  // either may be undefined
};

// Per-channel terms of the forward: mean, invstd, and the affine map z = x·a + b.
struct Affine {
  at::Tensor mean, invstd, a, b, unbiasedVar;
};

Affine batchAffine(const at::Tensor& input, const Layout& l, const c10::optional<at::Tensor>& weight,
                   const c10::optional<at::Tensor>& bias, double eps) {
  const int64_t C = l.c, m = l.count();
  const at::Tensor shift = firstValues(input, l);
  std::vector<double> sum(C), sumSq(C);
  kernelsForThisCPU().shiftedSums(input.data_ptr<float>(), l, shift.data_ptr<float>(), sum.data(), sumSq.data());
  const auto perChannel = [&] { return at::empty({C}, input.options()); };
  Affine t{perChannel(), perChannel(), perChannel(), perChannel(), perChannel()};
  const at::Tensor w = weight ? weight->contiguous() : at::Tensor();
  const at::Tensor bi = bias ? bias->contiguous() : at::Tensor();
  const float* wp = w.defined() ? w.data_ptr<float>() : nullptr;
  const float* bp = bi.defined() ? bi.data_ptr<float>() : nullptr;
  const float* x0 = shift.data_ptr<float>();
  float *mean = t.mean.data_ptr<float>(), *invstd = t.invstd.data_ptr<float>();
  float *a = t.a.data_ptr<float>(), *b = t.b.data_ptr<float>(), *uv = t.unbiasedVar.data_ptr<float>();
  for (int64_t k = 0; k < C; k++) {
    const double d = sum[k] / m;
    const double var = std::max(sumSq[k] / m - d * d, 0.0);
    mean[k] = float(x0[k] + d);
    invstd[k] = float(1.0 / std::sqrt(var + eps));
    a[k] = wp ? wp[k] * invstd[k] : invstd[k];
    b[k] = (bp ? bp[k] : 0.f) - mean[k] * a[k];
    uv[k] = float(m > 1 ? var * m / (m - 1) : var);
  }
  return t;
}

// relu(batch_norm(input) + residual), residual optional; the edges of the node are input, then
// residual, weight and bias where given.
struct BatchNormReLU : public torch::autograd::Function<BatchNormReLU> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const c10::optional<at::Tensor>& residual,
                            const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
                            RunningStats running, double momentum, double eps) {
    const Layout l = *fusedLayout(input);
    const Affine t = batchAffine(input, l, weight, bias, eps);
    if (running.mean.defined()) running.mean.mul_(1 - momentum).add_(t.mean, momentum);
    if (running.var.defined()) running.var.mul_(1 - momentum).add_(t.unbiasedVar, momentum);

    at::Tensor output = at::empty_like(input);
    kernelsForThisCPU().normalizeReLU(input.data_ptr<float>(), residual ? residual->data_ptr<float>() : nullptr,
                                      output.data_ptr<float>(), l, t.a.data_ptr<float>(), t.b.data_ptr<float>());
    // With a residual the mask is read from the output (recomputing it would read two arrays).
    if (residual) ctx->save_for_backward({input, output});
    else ctx->save_for_backward({input});
    ctx->saved_data["mean"] = t.mean;
    ctx->saved_data["invstd"] = t.invstd;
    ctx->saved_data["a"] = t.a;
    ctx->saved_data["b"] = t.b;
    ctx->saved_data["hasResidual"] = residual.has_value();
    ctx->saved_data["hasWeight"] = weight.has_value();
    ctx->saved_data["hasBias"] = bias.has_value();
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list gradOutputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const bool hasResidual = ctx->saved_data["hasResidual"].toBool();
    const bool hasWeight = ctx->saved_data["hasWeight"].toBool(), hasBias = ctx->saved_data["hasBias"].toBool();
    const float* y = hasResidual ? saved[1].data_ptr<float>() : nullptr;
    const Layout l = *fusedLayout(input);
    const int64_t C = l.c, m = l.count();
    const at::Tensor dy = gradOutputs[0].contiguous(input.suggest_memory_format());
    const at::Tensor mean = ctx->saved_data["mean"].toTensor(), invstd = ctx->saved_data["invstd"].toTensor();
    const at::Tensor a = ctx->saved_data["a"].toTensor(), b = ctx->saved_data["b"].toTensor();
    const float *ap = a.data_ptr<float>(), *bp = b.data_ptr<float>();
    const float *ip = invstd.data_ptr<float>(), *mp = mean.data_ptr<float>();
    const float* dyp = dy.data_ptr<float>();
    const float* xp = input.data_ptr<float>();
    std::vector<double> sumG(C), sumGX(C);
    kernelsForThisCPU().gatedGradSums(dyp, xp, y, l, ap, bp, mp, sumG.data(), sumGX.data());

    size_t edge = 1;
    const bool residualGrad = hasResidual && ctx->needs_input_grad(edge++);
    const bool weightGrad = hasWeight && ctx->needs_input_grad(edge++);
    const bool biasGrad = hasBias && ctx->needs_input_grad(edge++);
    at::Tensor gradInput, gradResidual, gradWeight, gradBias;
    if (weightGrad) {
      gradWeight = at::empty({C}, input.options());
      for (int64_t k = 0; k < C; k++) gradWeight.data_ptr<float>()[k] = float(sumGX[k] * ip[k]);
    }
    if (biasGrad) {
      gradBias = at::empty({C}, input.options());
      for (int64_t k = 0; k < C; k++) gradBias.data_ptr<float>()[k] = float(sumG[k]);
    }
    if (ctx->needs_input_grad(0) || residualGrad) {
      at::Tensor k1 = at::empty({C}, input.options()), k0 = at::empty({C}, input.options());
      for (int64_t k = 0; k < C; k++) {
        const double slope = -double(ap[k]) * ip[k] * ip[k] * (sumGX[k] / m);
        k1.data_ptr<float>()[k] = float(slope);
        k0.data_ptr<float>()[k] = float(-double(ap[k]) * (sumG[k] / m) - slope * mp[k]);
      }
      gradInput = at::empty_like(input);
      if (residualGrad) gradResidual = at::empty_like(input);
      float* dres = residualGrad ? gradResidual.data_ptr<float>() : nullptr;
      kernelsForThisCPU().gatedGradInput(dyp, xp, y, gradInput.data_ptr<float>(), dres, l, ap, bp,
                                         k1.data_ptr<float>(), k0.data_ptr<float>());
      if (!ctx->needs_input_grad(0)) gradInput = at::Tensor();
    }
    return {gradInput, gradResidual, gradWeight, gradBias, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// On unless LOCO_FUSED_BN_RELU=0 at load; setFusedBatchNormReLU switches it at run time.
std::atomic<bool> fusionEnabled{[] {
  const char* v = std::getenv("LOCO_FUSED_BN_RELU");
  return v == nullptr || std::strcmp(v, "0") != 0;
}()};

c10::optional<at::Tensor> optionalArg(const Napi::Value& value, const char* what) {
  if (value.IsNull() || value.IsUndefined()) return c10::nullopt;
  return unwrapTensor(value, what);
}

// Whether the fused kernels apply: float32 CPU tensors, the input in a layout they read, the
// residual (if any) of its shape in the same layout, per-channel vectors of C floats.
bool fusable(const at::Tensor& input, const c10::optional<at::Tensor>& residual,
             std::initializer_list<const c10::optional<at::Tensor>*> perChannel) {
  const auto layout = fusedLayout(input);
  if (!layout) return false;
  if (residual) {
    const auto r = fusedLayout(*residual);
    if (!r || r->rows != layout->rows || residual->sizes() != input.sizes()) return false;
  }
  for (const auto* t : perChannel) {
    if (*t && ((*t)->scalar_type() != at::kFloat || !(*t)->device().is_cpu() || (*t)->dim() != 1 ||
               (*t)->size(0) != input.size(1)))
      return false;
  }
  return true;
}

// batchNormReLU(input, residual | null, weight | null, bias | null, runningMean | null,
//               runningVar | null, training, momentum, eps): relu(batch_norm(...) + residual),
// with batch_norm's arguments. Errors (c10's included) are named after the export by addon.cpp's
// guard.
Napi::Value BatchNormReLUOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 9) throw Napi::TypeError::New(env, "batchNormReLU: expected 9 arguments");
  const at::Tensor& input = unwrapTensor(info[0], "batchNormReLU: input");
  const auto residual = optionalArg(info[1], "batchNormReLU: residual");
  const auto weight = optionalArg(info[2], "batchNormReLU: weight");
  const auto bias = optionalArg(info[3], "batchNormReLU: bias");
  const auto runningMean = optionalArg(info[4], "batchNormReLU: runningMean");
  const auto runningVar = optionalArg(info[5], "batchNormReLU: runningVar");
  if (!info[6].IsBoolean()) throw Napi::TypeError::New(env, "batchNormReLU: training must be a boolean");
  if (!info[7].IsNumber() || !info[8].IsNumber())
    throw Napi::TypeError::New(env, "batchNormReLU: momentum and eps must be numbers");
  const bool training = info[6].As<Napi::Boolean>().Value();
  const double momentum = info[7].As<Napi::Number>().DoubleValue();
  const double eps = info[8].As<Napi::Number>().DoubleValue();
  if (training && fusionEnabled.load() && fusable(input, residual, {&weight, &bias, &runningMean, &runningVar})) {
    // Named for profilers (torch.profiler, bench/opcount.cpp), as ATen's operators are.
    RECORD_FUNCTION("loco::batch_norm_relu", std::vector<c10::IValue>({input}));
    RunningStats running{runningMean ? *runningMean : at::Tensor(), runningVar ? *runningVar : at::Tensor()};
    return wrapTensor(env, BatchNormReLU::apply(input, residual, weight, bias, running, momentum, eps));
  }
  at::Tensor out = at::batch_norm(input, weight, bias, runningMean, runningVar, training, momentum, eps, true);
  if (residual) out.add_(*residual);
  return wrapTensor(env, at::relu_(out));
}

// setFusedBatchNormReLU(enabled): whether batchNormReLU may take the one-node path.
Napi::Value SetFusedBatchNormReLU(const Napi::CallbackInfo& info) {
  if (info.Length() != 1 || !info[0].IsBoolean())
    throw Napi::TypeError::New(info.Env(), "setFusedBatchNormReLU: expected one boolean");
  fusionEnabled.store(info[0].As<Napi::Boolean>().Value());
  return info.Env().Undefined();
}

Napi::Value FusedBatchNormReLUEnabled(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), fusionEnabled.load());
}

}  // namespace

std::vector<NativeExport> batchNormReLUExports() {
  return {{"batchNormReLU", BatchNormReLUOp},
          {"setFusedBatchNormReLU", SetFusedBatchNormReLU},
          {"fusedBatchNormReLUEnabled", FusedBatchNormReLUEnabled}};
}

}  // namespace loco
