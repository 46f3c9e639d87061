#include "moeopt/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <fmt/format.h>

namespace moeopt {

Status SamplingParams::validate(int64_t vocab_size) const {
  auto bad = [](std::string msg) { return Status(ErrorCode::kInvalidArgument, std::move(msg)); };
  if (!(temperature >= 0.0f && temperature <= 2.0f))
    return bad(fmt::format("temperature must be in [0, 2], got {}", temperature));
  if (!(top_p > 0.0f && top_p <= 1.0f)) return bad(fmt::format("top_p must be in (0, 1], got {}", top_p));
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return bad(fmt::format("min_p must be in [0, 1], got {}", min_p));
  if (!(repetition_penalty > 0.0f && std::isfinite(repetition_penalty)))
    return bad(fmt::format("repetition_penalty must be > 0, got {}", repetition_penalty));
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f))
    return bad(fmt::format("presence_penalty must be in [-2, 2], got {}", presence_penalty));
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
    return bad(fmt::format("frequency_penalty must be in [-2, 2], got {}", frequency_penalty));
  if (max_tokens <= 0) return bad(fmt::format("max_tokens must be > 0, got {}", max_tokens));
  if (logprobs < -1 || logprobs > 20) return bad(fmt::format("logprobs must be in [0, 20], got {}", logprobs));
  for (int32_t id : stop_token_ids)
    if (id < 0 || id >= vocab_size)
      return bad(fmt::format("stop token id {} is outside the vocabulary [0, {})", id, vocab_size));
  for (auto [id, bias] : logit_bias) {
    if (id < 0 || id >= vocab_size)
      return bad(fmt::format("logit_bias token id {} is outside the vocabulary [0, {})", id, vocab_size));
    if (!(bias >= -100.0f && bias <= 100.0f))
      return bad(fmt::format("logit_bias for token {} must be in [-100, 100], got {}", id, bias));
  }
  return {};
}

void TokenHistory::reset(int64_t vocab_size, std::span<const int32_t> prompt) {
  output_counts.clear();
  seen.assign(size_t(vocab_size), 0);
  for (int32_t t : prompt)
    if (t >= 0 && t < vocab_size) seen[size_t(t)] = 1;
}

void TokenHistory::add_output(int32_t token) {
  ++output_counts[token];
  if (token >= 0 && size_t(token) < seen.size()) seen[size_t(token)] = 1;
}

RequestRng::RequestRng(std::optional<uint64_t> seed)
    : gen_(seed ? *seed : std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32)) {}

double RequestRng::uniform() { return double(gen_() >> 11) * 0x1.0p-53; }

void apply_logit_bias(std::span<float> logits, const SamplingParams& p) {
  for (auto [id, bias] : p.logit_bias)
    if (id >= 0 && size_t(id) < logits.size()) logits[size_t(id)] += bias;
}

void apply_penalties(std::span<float> logits, const SamplingParams& p, const TokenHistory& h) {
  if (p.repetition_penalty != 1.0f) {
    for (size_t i = 0; i < logits.size() && i < h.seen.size(); ++i) {
      if (!h.seen[i]) continue;
      logits[i] = logits[i] > 0 ? logits[i] / p.repetition_penalty : logits[i] * p.repetition_penalty;
    }
  }
  if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
    for (auto [tok, count] : h.output_counts) {
      if (tok < 0 || size_t(tok) >= logits.size()) continue;
      logits[size_t(tok)] -= p.presence_penalty + p.frequency_penalty * float(count);
    }
  }
}

namespace {

// log_softmax of a row, in double for the normaliser.
std::vector<float> log_softmax(std::span<const float> x) {
  float mx = -std::numeric_limits<float>::infinity();
  for (float v : x) mx = std::max(mx, v);
  double sum = 0.0;
  for (float v : x) sum += std::exp(double(v) - mx);
  float lse = mx + float(std::log(sum));
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] - lse;
  return out;
}

int32_t argmax(std::span<const float> x) {
  size_t best = 0;
  for (size_t i = 1; i < x.size(); ++i)
    if (x[i] > x[best]) best = i;  // strict: lowest id wins ties
  return int32_t(best);
}

}  // namespace

void fill_logprobs(std::span<const float> raw_logits, int32_t num_top, SampleResult& r) {
  std::vector<float> raw_logprobs = log_softmax(raw_logits);
  r.logprob = raw_logprobs[size_t(r.token)];
  r.top.clear();
  if (num_top <= 0) return;
  std::vector<int32_t> idx(raw_logprobs.size());
  std::iota(idx.begin(), idx.end(), 0);
  size_t k = std::min(size_t(num_top), idx.size());
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
    return raw_logprobs[a] > raw_logprobs[b] || (raw_logprobs[a] == raw_logprobs[b] && a < b);
  });
  for (size_t i = 0; i < k; ++i) r.top.push_back({idx[i], raw_logprobs[size_t(idx[i])]});
}

SampleResult sample_token(std::span<float> logits, const SamplingParams& p,
                          const TokenHistory& history, RequestRng& rng) {
  SampleResult r;
  std::vector<float> raw;  // the unmodified row, for logprobs
  if (p.logprobs >= 0) raw.assign(logits.begin(), logits.end());

  apply_logit_bias(logits, p);
  apply_penalties(logits, p, history);

  if (p.greedy()) {
    r.token = argmax(logits);
  } else {
    const size_t n = logits.size();
    // Softmax at temperature T.
    float mx = -std::numeric_limits<float>::infinity();
    for (float v : logits) mx = std::max(mx, v);
    std::vector<double> prob(n);
    double sum = 0.0;
    for (size_t i = 0; i < n; ++i) {
      prob[i] = std::exp((double(logits[i]) - mx) / p.temperature);
      sum += prob[i];
    }
    for (double& v : prob) v /= sum;
    // Candidates ordered by probability descending, id ascending.
    std::vector<int32_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    size_t keep = n;
    if (p.top_k > 0 && size_t(p.top_k) < n) keep = size_t(p.top_k);
    auto cmp = [&](int32_t a, int32_t b) { return prob[a] > prob[b] || (prob[a] == prob[b] && a < b); };
    if (keep < n) {
      std::partial_sort(order.begin(), order.begin() + keep, order.end(), cmp);
      order.resize(keep);
    } else {
      std::sort(order.begin(), order.end(), cmp);
    }
    if (p.top_p < 1.0f) {
      // Renormalise over the top-k survivors, then keep the smallest prefix reaching top_p.
      double kept = 0.0;
      for (int32_t t : order) kept += prob[t];
      double acc = 0.0;
      size_t cut = order.size();
      for (size_t i = 0; i < order.size(); ++i) {
        acc += prob[order[i]] / kept;
        if (acc >= p.top_p) { cut = i + 1; break; }
      }
      order.resize(cut);
    }
    if (p.min_p > 0.0f) {
      double threshold = p.min_p * prob[order[0]];
      size_t cut = 1;
      while (cut < order.size() && prob[order[cut]] >= threshold) ++cut;
      order.resize(cut);
    }
    double total = 0.0;
    for (int32_t t : order) total += prob[t];
    double u = rng.uniform() * total, acc = 0.0;
    r.token = order.back();
    for (int32_t t : order) {
      acc += prob[t];
      if (u < acc) { r.token = t; break; }
    }
  }

  if (p.logprobs >= 0) fill_logprobs(raw, p.logprobs, r);
  return r;
}

}  // namespace moeopt
