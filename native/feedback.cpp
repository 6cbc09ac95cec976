// Feedback alignment (Lillicrap et al. 2016) as custom autograd functions: the forward pass is
// the plain convolution or linear layer; the backward pass sends the output gradient to the input
// through a fixed random feedback matrix B (same shape as the weight) instead of the weight, while
// the weight and bias gradients stay exact. B is an input without a gradient of its own.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <vector>

#include "common.h"

namespace loco {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::vector<int64_t> intPair(const Napi::Value& value, const char* what) {
  if (value.IsNumber()) {
    int64_t v = value.As<Napi::Number>().Int64Value();
    return {v, v};
  }
  if (value.IsArray()) {
    auto array = value.As<Napi::Array>();
    if (array.Length() == 2 && array.Get(0u).IsNumber() && array.Get(1u).IsNumber()) {
      return {array.Get(0u).As<Napi::Number>().Int64Value(), array.Get(1u).As<Napi::Number>().Int64Value()};
    }
  }
  throw Napi::TypeError::New(value.Env(), std::string(what) + ": expected a number or [h, w]");
}

void checkFeedback(const at::Tensor& weight, const at::Tensor& feedback, const char* op) {
  TORCH_CHECK(feedback.sizes() == weight.sizes(), op, ": the feedback matrix has shape ", feedback.sizes(),
              " but the weight has shape ", weight.sizes(), " (they must match)");
  TORCH_CHECK(!feedback.requires_grad(), op, ": the feedback matrix must not require a gradient (it is fixed)");
}

struct FeedbackConv2d : public torch::autograd::Function<FeedbackConv2d> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, const at::Tensor& feedback,
                            std::vector<int64_t> stride,
                            std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t groups) {
    ctx->save_for_backward({input, feedback});
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["hasBias"] = bias.has_value();
    return at::conv2d(input, weight, bias, stride, padding, dilation, groups);
  }

  static variable_list backward(AutogradContext* ctx, variable_list gradOutputs) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& feedback = saved[1];
    const bool hasBias = ctx->saved_data["hasBias"].toBool();
    std::array<bool, 3> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                             hasBias && ctx->needs_input_grad(2)};
    // The weight gradient depends only on the input and the output gradient, so passing B in
    // the weight's place changes the input gradient alone.
    auto grads = at::convolution_backward(
        gradOutputs[0].contiguous(input.suggest_memory_format()), input, feedback,
        hasBias ? c10::optional<at::IntArrayRef>(feedback.sizes().slice(0, 1)) : c10::nullopt,
        ctx->saved_data["stride"].toIntVector(), ctx->saved_data["padding"].toIntVector(),
        ctx->saved_data["dilation"].toIntVector(), false, {0, 0}, ctx->saved_data["groups"].toInt(), mask);
    return {std::get<0>(grads), std::get<1>(grads), hasBias ? std::get<2>(grads) : at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct FeedbackLinear : public torch::autograd::Function<FeedbackLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, const at::Tensor& feedback) {
    ctx->save_for_backward({input, feedback});
    ctx->saved_data["hasBias"] = bias.has_value();
    return at::linear(input, weight, bias);
  }

  static variable_list backward(AutogradContext* ctx, variable_list gradOutputs) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& feedback = saved[1];
    const bool hasBias = ctx->saved_data["hasBias"].toBool();
    const at::Tensor& grad = gradOutputs[0];
    at::Tensor gradInput, gradWeight, gradBias;
    if (ctx->needs_input_grad(0)) gradInput = at::matmul(grad, feedback);
    const int64_t out = grad.size(-1);
    const at::Tensor grad2d = grad.reshape({-1, out});
    if (ctx->needs_input_grad(1)) gradWeight = at::mm(grad2d.t(), input.reshape({-1, input.size(-1)}));
    if (hasBias && ctx->needs_input_grad(2)) gradBias = grad2d.sum(0);
    return {gradInput, gradWeight, gradBias, at::Tensor()};
  }
};

// An absent bias is passed as nullopt: custom functions track only defined tensors as inputs
// (needs_input_grad counts those), and the backward returns an undefined gradient in its place.
c10::optional<at::Tensor> optionalTensor(const Napi::Value& value, const char* what) {
  if (value.IsNull() || value.IsUndefined()) return c10::nullopt;
  return unwrapTensor(value, what);
}

// feedbackConv2d(input, weight, bias | null, feedback, stride, padding, dilation, groups)
// Errors (c10's included) are named after the export by addon.cpp's guard.
Napi::Value FeedbackConv2dOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 8) throw Napi::TypeError::New(env, "feedbackConv2d: expected 8 arguments");
  const at::Tensor& input = unwrapTensor(info[0], "feedbackConv2d: input");
  const at::Tensor& weight = unwrapTensor(info[1], "feedbackConv2d: weight");
  c10::optional<at::Tensor> bias = optionalTensor(info[2], "feedbackConv2d: bias");
  const at::Tensor& feedback = unwrapTensor(info[3], "feedbackConv2d: feedback");
  checkFeedback(weight, feedback, "feedbackConv2d");
  auto stride = intPair(info[4], "feedbackConv2d: stride");
  auto padding = intPair(info[5], "feedbackConv2d: padding");
  auto dilation = intPair(info[6], "feedbackConv2d: dilation");
  int64_t groups = info[7].As<Napi::Number>().Int64Value();
  return wrapTensor(env, FeedbackConv2d::apply(input, weight, bias, feedback, stride, padding, dilation, groups));
}

// feedbackLinear(input, weight, bias | null, feedback)
Napi::Value FeedbackLinearOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 4) throw Napi::TypeError::New(env, "feedbackLinear: expected 4 arguments");
  const at::Tensor& input = unwrapTensor(info[0], "feedbackLinear: input");
  const at::Tensor& weight = unwrapTensor(info[1], "feedbackLinear: weight");
  c10::optional<at::Tensor> bias = optionalTensor(info[2], "feedbackLinear: bias");
  const at::Tensor& feedback = unwrapTensor(info[3], "feedbackLinear: feedback");
  checkFeedback(weight, feedback, "feedbackLinear");
  return wrapTensor(env, FeedbackLinear::apply(input, weight, bias, feedback));
}

}  // namespace

std::vector<NativeExport> feedbackExports() {
  return {
      {"feedbackConv2d", FeedbackConv2dOp},
      {"feedbackLinear", FeedbackLinearOp},
  };
}

}  // namespace loco
